//! nftmesh: Istio's sidecar traffic capture installed natively through nf_tables.
//!
//! This facade re-exports the workspace crates. See `nftmesh_model` for the configuration,
//! compiler, renderer and evaluator, and `nftmesh_netlink` for applying rulesets to the kernel.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use nftmesh_iptables as iptables;
pub use nftmesh_model as model;
pub use nftmesh_netlink as netlink;
