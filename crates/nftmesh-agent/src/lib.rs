//! `nftmesh agent`: one process per node that keeps every registered pod's capture intact.
//! Pods are registered over a unix socket ([`protocol`], the typed JSON lines of
//! [`nftmesh_protocol`]; used by `nftmesh agent add|remove|status|list` and the CNI plugin's
//! `agent_socket` mode). A pod is its namespace's identity ([`identity`]); its state lives in
//! [`pods`] over a small kernel interface (the real one in [`kernel`]: a
//! [`nftmesh::Namespace`] handle and the nf_tables and routing change monitors). Where the
//! kernel allows, the agent owns its pods' tables and another process's change is refused;
//! elsewhere a change another process commits is checked and repaired on a worker within
//! milliseconds. A periodic resync catches what notifications cannot, the registry
//! ([`registry`]) is durable and locked, and [`metrics`] are served in Prometheus' format.
//! One `poll(2)` loop that never blocks ([`server::Agent::run`]) and a few workers that do
//! the installs and repairs.
//!
//! ```no_run
//! use nftmesh_agent::server::{Agent, Options};
//! use std::time::Duration;
//!
//! let agent = Agent::start(Options {
//!     socket: "/run/nftmesh/agent.sock".into(),
//!     state_dir: "/var/lib/nftmesh-agent".into(),
//!     metrics_addr: Some("127.0.0.1:15114".parse().unwrap()),
//!     resync: Duration::from_secs(30),
//!     own_tables: true,
//!     bpffs: None, // eBPF pods pinned in the bpffs /proc/mounts lists
//! })?;
//! agent.run()?;
//! # Ok::<(), nftmesh_agent::server::AgentError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
pub mod identity;
pub mod kernel;
pub mod metrics;
pub mod pods;
pub mod protocol;
pub mod registry;
pub mod server;
pub mod summary;
