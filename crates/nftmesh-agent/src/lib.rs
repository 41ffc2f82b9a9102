//! `nftmesh agent`: one process per node that keeps every registered pod's capture intact.
//! Pods are registered over a unix socket ([`protocol`]: JSON lines, versioned; used by
//! `nftmesh agent add|remove|status|list` and the CNI plugin's `agent_socket` mode). Per pod
//! the agent keeps a [`nftmesh::Namespace`] handle and an nf_tables change monitor
//! ([`nftmesh_netlink::monitor`]); when another process changes the pod's nftmesh tables the
//! capture is checked and reinstalled within the same wake-up, a periodic resync catches what
//! notifications cannot (routes, lost events), the registry survives restarts
//! ([`registry`]), and [`metrics`] are served in Prometheus' format. One `poll(2)` loop for
//! all pods ([`server::Agent::run`]), and a few workers that install new pods in parallel.
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
