//! nftmesh: a service mesh's traffic capture installed natively through nf_tables, as one
//! transaction per namespace, with no `iptables` or `nft` binary.
//!
//! This is the crate a mesh agent embeds. A [`Capture`] is the desired state compiled from a
//! [`CaptureConfig`] (Istio's sidecar settings); a [`Namespace`] is a handle on one network
//! namespace that keeps its netlink sockets open. [`Namespace::install`] makes the namespace
//! hold exactly the capture (routing first, then ONE nf_tables transaction that also deletes
//! the nftmesh tables the capture no longer has), [`Namespace::check`] lists how it differs,
//! [`Namespace::verify`] checks it with real connections and [`Namespace::remove`] takes it
//! away. Handles are `Send + Sync`: one process can keep a handle per pod.
//!
//! ```no_run
//! use nftmesh::{Capture, CaptureConfig, InterceptionMode, Namespace};
//!
//! let pod = Namespace::open("/var/run/netns/pod1")?;
//! let mut cfg = CaptureConfig::sidecar();
//! pod.install(&Capture::new(&cfg)?)?;
//! // Switch to TPROXY: routing first, then one transaction (nat replaced, mangle added).
//! cfg.mode = InterceptionMode::Tproxy;
//! let tproxy = Capture::new(&cfg)?;
//! pod.install(&tproxy)?;
//! assert!(pod.check(&tproxy)?.is_empty());
//! pod.remove(&tproxy)?;
//! # Ok::<(), nftmesh::CaptureError>(())
//! ```
//!
//! The layers below are re-exported for tools that need them: [`model`] (the configuration,
//! the typed ruleset, compiler, renderer and evaluator), [`netlink`] (the kernel I/O) and
//! [`iptables`] (iptables-save text: parser, interpreter, translator).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod ambient_host;
mod capture;
pub mod ebpf;
mod error;
pub mod log;
pub mod migrate;
mod namespace;
pub mod trace;
pub mod verify;

pub use capture::{owned_tables, Capture, Migration};

/// Istio ambient mode: the in-pod configuration (installed with [`Capture::ambient`]) and the
/// node's probe SNAT.
pub mod ambient {
    pub use crate::ambient_host::HostCapture;
    pub use nftmesh_model::ambient::*;
}
pub use error::CaptureError;
pub use namespace::{Drift, Namespace, Removed, Report};
pub use nftmesh_iptables as iptables;
pub use nftmesh_model as model;
pub use nftmesh_model::config::{CaptureConfig, InterceptionMode};
pub use nftmesh_netlink as netlink;
pub use nftmesh_netlink::{LiveTable, TableOwner};
