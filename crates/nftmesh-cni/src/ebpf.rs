//! `"backend": "ebpf"`: a sidecar capture installed by [`nftmesh::ebpf::EbpfBackend`], its
//! outbound part as BPF programs on the pod's cgroup (from the runtime's `cgroupPath`,
//! [`crate::cgroup`]), pinned in bpffs (`bpffs`, or the one `/proc/mounts` lists), its inbound
//! part as nf_tables in the pod's namespace. [`NetConf::parse`] refuses what this backend
//! does not do yet (ambient, Linkerd, the node agent, validation).

use crate::config::{Desired, EbpfInboundConf, NetConf, CGROUP_PATH_CAPABILITY};
use crate::log::Log;
use crate::CniError;
use nftmesh::ebpf::{Attachment, Bpffs, EbpfBackend, EbpfInbound};
use nftmesh::{CaptureConfig, CaptureError, Namespace};

/// The sidecar capture of `desired` (the only kind this backend installs).
pub fn sidecar(desired: &Desired) -> Result<&CaptureConfig, CniError> {
    match desired {
        Desired::Capture(cfg) => Ok(cfg),
        other => Err(CniError::InvalidConfig(format!(
            "backend ebpf installs sidecar captures, not a {} capture",
            other.kind()
        ))),
    }
}

/// The backend for this pod: its cgroup resolved from `runtimeConfig.cgroupPath` (missing, or
/// naming no directory: [`CniError::InvalidConfig`] naming it) and the BPF file system.
pub fn backend(conf: &NetConf) -> Result<EbpfBackend, CniError> {
    let path = conf.cgroup_path()?.ok_or_else(|| {
        CniError::InvalidConfig(format!(
            "backend ebpf needs the pod's cgroup, and the runtime passed no \
             runtimeConfig.{CGROUP_PATH_CAPABILITY}: declare \"capabilities\": \
             {{\"{CGROUP_PATH_CAPABILITY}\": true}} in the nftmesh-cni entry of the conflist \
             (containerd's CRI plugin passes the pod's cgroup parent)"
        ))
    })?;
    let cgroup = crate::cgroup::resolve(&path)?;
    let bpffs = match &conf.bpffs {
        Some(dir) => Bpffs::at(dir).map_err(|e| CniError::InvalidConfig(format!("bpffs: {e}")))?,
        None => Bpffs::find().map_err(|e| CniError::from(CaptureError::from(e)))?,
    };
    let inbound = match conf.ebpf_inbound {
        EbpfInboundConf::Nftables => EbpfInbound::Nftables,
        EbpfInboundConf::SkLookup => EbpfInbound::SkLookup,
    };
    Ok(EbpfBackend::new(cgroup, bpffs).with_inbound(inbound))
}

/// ADD: `cfg` installed for the pod; on a failure, what this ADD put in place is removed.
pub fn add(
    backend: &EbpfBackend,
    ns: &Namespace,
    cfg: &CaptureConfig,
    log: &Log,
) -> Result<(), CniError> {
    match backend.install(ns, cfg) {
        Ok(installed) => {
            log.info(&installed.to_string());
            Ok(())
        }
        Err(e) => {
            if let Err(r) = backend.remove(ns, cfg) {
                log.at(
                    nftmesh::log::Level::Error,
                    &format!("removing after the failure: {r}"),
                );
            }
            Err(e.into())
        }
    }
}

/// CHECK: the programs attached to the pod's cgroup and the inbound capture in `ns` as `cfg`
/// says; each difference named.
pub fn check(backend: &EbpfBackend, ns: &Namespace, cfg: &CaptureConfig) -> Result<(), CniError> {
    let mut drift = Vec::new();
    let attached = backend.attached()?;
    if attached.is_none() {
        drift.push(format!(
            "no eBPF program is attached to {}",
            backend.cgroup().display()
        ));
    }
    if backend.inbound_mode() == EbpfInbound::SkLookup {
        if attached.is_some_and(|a| a.inbound_programs.is_empty()) {
            drift.push(format!(
                "no sk_lookup inbound steering is attached for {}",
                backend.cgroup().display()
            ));
        }
    } else {
        let inbound = EbpfBackend::inbound(cfg)?;
        drift.extend(ns.check(&inbound)?.iter().map(|d| d.to_string()));
    }
    if drift.is_empty() {
        Ok(())
    } else {
        Err(CniError::Drift(drift))
    }
}

/// DEL's part on the cgroup: the programs detached and their pins removed (nothing attached
/// is fine). The tables go with the rest of DEL.
pub fn remove_programs(backend: &EbpfBackend) -> Result<bool, CniError> {
    let removed = match Attachment::open(backend.bpffs(), backend.cgroup()) {
        Ok(Some(a)) => a.remove().map(|()| true),
        Ok(None) => Ok(false),
        Err(e) => Err(e),
    };
    removed.map_err(|e| CniError::from(CaptureError::from(e)))
}

/// DEL's part when the pod's cgroup no longer resolves (deleted before DEL came): its pins can
/// no longer be found by the directory's inode, so every capture of the BPF file system whose
/// cgroup is gone is removed ([`Bpffs::remove_stale_within`], waiting up to a second for the
/// kernel to let the links of a cgroup deleted just now go); how many.
pub fn remove_stale(conf: &NetConf) -> Result<usize, CniError> {
    let bpffs = match &conf.bpffs {
        Some(dir) => Bpffs::at(dir).map_err(|e| CniError::InvalidConfig(format!("bpffs: {e}")))?,
        None => Bpffs::find().map_err(|e| CniError::from(CaptureError::from(e)))?,
    };
    bpffs
        .remove_stale_within(std::time::Duration::from_secs(1))
        .map(|s| s.len())
        .map_err(|e| CniError::from(CaptureError::from(e)))
}
