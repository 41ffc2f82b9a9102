//! [`CaptureError`]: everything installing, checking, verifying or removing a capture can
//! refuse or fail with.

use nftmesh_model::ConfigError;
use nftmesh_netlink::NetlinkError;

/// Why a capture operation failed. Nothing of a failed install is left half-applied: the
/// nf_tables part is one transaction, and routing is only added, never changed, before it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// The configuration is invalid or contradictory.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The kernel refused, or could not be reached (the netlink error names the object).
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// Migration from iptables was asked for, but iptables-legacy tables exist in the
    /// namespace: their rules cannot change in the nf_tables transaction.
    #[error(
        "iptables-legacy tables exist in this namespace ({}); their rules cannot change in the \
         nf_tables transaction, so both captures would be active. Remove them first \
         (iptables-legacy-save shows them), or allow them to stay",
        .0.join(", ")
    )]
    LegacyTables(Vec<String>),
    /// A trace filter that no packet can pass, or that cannot be written as a rule.
    #[error("trace filter: {0}")]
    TraceFilter(&'static str),
    /// A verification connection did not behave as the capture says it must.
    #[error("verification failed: {0}")]
    Verify(String),
    /// The eBPF backend ([`crate::ebpf`]) refused the settings or failed to load, attach, pin
    /// or remove its programs (the error names the setting, program, map, pin or cgroup).
    #[error(transparent)]
    Ebpf(#[from] nftmesh_ebpf::EbpfError),
}
