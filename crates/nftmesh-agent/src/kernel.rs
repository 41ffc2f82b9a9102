//! The real [`PodKernel`]: a pod's [`Namespace`] handle (its commits are the agent's, known by
//! the handle's netlink port id), its capture, and the change monitors the I/O loop polls
//! (nf_tables always; rtnetlink when the capture has policy routing or `::6` on `lo`). A pod of
//! the eBPF backend ([`EbpfPod`]) also has BPF programs on its cgroup: installed, checked,
//! re-attached and removed with its inbound nf_tables capture, through
//! [`nftmesh::ebpf::EbpfBackend`].

use crate::identity::{self, NetnsId};
use crate::pods::{PodKernel, RepairJob, Repaired};
use crate::protocol::Desired;
use crate::registry::{EbpfPlace, Record};
use crate::summary::Summary;
use nftmesh::ebpf::{Bpffs, EbpfBackend};
use nftmesh::{Capture, CaptureConfig, Namespace, TableOwner};
use nftmesh_netlink::monitor::Monitor;
use nftmesh_netlink::route_monitor::RouteMonitor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The capture of `desired`, owned by the installing handle when `own` (and the kernel has
/// `owner` + `persist`).
pub fn capture_of(desired: &Desired, own: bool) -> Result<Capture, nftmesh::CaptureError> {
    let c = desired.capture()?;
    Ok(if own {
        c.with_owner(TableOwner::OwnerPersist)
    } else {
        c
    })
}

/// A pod's eBPF backend: where its programs are and the sidecar capture they apply.
#[derive(Debug, Clone)]
pub struct EbpfPod {
    /// The pod's cgroup and the bpffs the programs are pinned in.
    pub backend: EbpfBackend,
    /// The sidecar capture.
    pub cfg: CaptureConfig,
}

impl EbpfPod {
    /// The eBPF backend of `record` (`None`: an nf_tables pod): its bpffs must be mounted,
    /// and its capture a sidecar's.
    pub fn of(record: &Record) -> Result<Option<Self>, String> {
        let Some(place) = &record.ebpf else {
            return Ok(None);
        };
        let Desired::Capture(cfg) = &record.desired else {
            return Err(format!(
                "the eBPF backend installs sidecar captures, not {}",
                record.desired.kind()
            ));
        };
        let bpffs = Bpffs::at(&place.bpffs).map_err(|e| format!("bpffs: {e}"))?;
        Ok(Some(EbpfPod {
            backend: EbpfBackend::new(place.cgroup.clone(), bpffs),
            cfg: (**cfg).clone(),
        }))
    }

    /// Check, before anything changes, that `desired` can be installed on `cgroup` by the
    /// eBPF backend: a sidecar capture whose settings the programs apply, and a cgroup v2
    /// directory that is not a mount's root ([`nftmesh::ebpf::check_cgroup`]); the place to
    /// record, with the bpffs `bpffs`.
    pub fn check(desired: &Desired, cgroup: &Path, bpffs: &Bpffs) -> Result<EbpfPlace, String> {
        let Desired::Capture(cfg) = desired else {
            return Err(format!(
                "cgroup: the eBPF backend installs sidecar captures, not {}",
                desired.kind()
            ));
        };
        nftmesh::ebpf::check_cgroup(cgroup).map_err(|e| e.to_string())?;
        nftmesh::ebpf::Attachment::needed(cfg).map_err(|e| e.to_string())?;
        EbpfBackend::inbound(cfg).map_err(|e| e.to_string())?;
        Ok(EbpfPlace {
            cgroup: cgroup.to_path_buf(),
            bpffs: bpffs.mount().to_path_buf(),
        })
    }

    /// The programs not attached to the cgroup now, each as a difference (`agent check`).
    pub fn missing(&self) -> Result<Vec<String>, nftmesh::CaptureError> {
        let cgroup = self.backend.cgroup();
        let missing = match nftmesh::ebpf::Attachment::open(self.backend.bpffs(), cgroup)? {
            Some(a) => a.missing(&self.cfg)?,
            None => nftmesh::ebpf::Attachment::needed(&self.cfg)?,
        };
        Ok(missing
            .into_iter()
            .map(|p| format!("eBPF program {p} is not attached to {}", cgroup.display()))
            .collect())
    }

    /// What `status` shows: the cgroup, the bpffs, and each link attached (its id, its
    /// program's id, the cgroup id it runs on: 0 when detached), or why they cannot be read.
    pub fn status(&self) -> serde_json::Value {
        let links = match self.backend.links() {
            Ok(Some(links)) => serde_json::json!(links
                .iter()
                .map(|l| serde_json::json!({
                    "program": l.program,
                    "link_id": l.id,
                    "program_id": l.program_id,
                    "cgroup_id": l.cgroup_id,
                }))
                .collect::<Vec<_>>()),
            Ok(None) => serde_json::json!([]),
            Err(e) => serde_json::json!(e.to_string()),
        };
        serde_json::json!({
            "cgroup": self.backend.cgroup(),
            "bpffs": self.backend.bpffs().mount(),
            "links": links,
        })
    }
}

/// The nf_tables capture the agent keeps for `record`: the whole capture, owned by the
/// installing handle when `own` (and the kernel has `owner` + `persist`); for an eBPF pod its
/// inbound part, never owned (the backend writes it as a plain table, and a table's owner flag
/// cannot change in place).
pub fn capture_of_record(record: &Record, own: bool) -> Result<Capture, String> {
    match (&record.ebpf, &record.desired) {
        (Some(_), Desired::Capture(cfg)) => EbpfBackend::inbound(cfg).map_err(|e| e.to_string()),
        (Some(_), other) => Err(format!(
            "the eBPF backend installs sidecar captures, not {}",
            other.kind()
        )),
        (None, desired) => capture_of(desired, own).map_err(|e| e.to_string()),
    }
}

/// One pod's namespace, opened.
pub struct RealPod {
    /// The path it was opened by.
    pub path: PathBuf,
    /// The handle every commit of the agent's to it goes through (shared with the worker
    /// running its repair; its operations run one at a time).
    pub ns: Arc<Namespace>,
    /// The netlink port id of `ns`'s netfilter socket.
    pub port: u32,
    /// The capture kept.
    pub capture: Capture,
    /// nf_tables change notifications.
    pub monitor: Monitor,
    /// Routing notifications, when the capture has routing to keep.
    pub routes: Option<RouteMonitor>,
    /// The eBPF backend's part, for an eBPF pod.
    pub ebpf: Option<Arc<EbpfPod>>,
}

impl std::fmt::Debug for RealPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealPod")
            .field("path", &self.path)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Whether a capture has routing to keep (TPROXY or ambient routing, or `::6` on `lo`).
pub fn watches_routes(c: &Capture) -> bool {
    c.tproxy_routing().is_some() || c.loopback_v6()
}

impl RealPod {
    /// Open the pod's handle and monitors in one namespace switch (before anything is
    /// installed, so no commit after it is missed), checking there that the namespace
    /// entered is `id` (the path may have been replaced since it was examined).
    pub fn open(path: &Path, id: NetnsId, capture: Capture) -> Result<Self, String> {
        let watch = watches_routes(&capture);
        let (ns, (entered, monitor, routes)) = Namespace::open_with(path, move || {
            (
                identity::of(Path::new("/proc/thread-self/ns/net")),
                Monitor::open(),
                watch.then(RouteMonitor::open),
            )
        })
        .map_err(|e| e.to_string())?;
        match entered {
            Ok(e) if e == id => {}
            Ok(e) => {
                return Err(format!(
                    "{}: the namespace there changed ({e}, not {id})",
                    path.display()
                ))
            }
            Err(e) => return Err(e.to_string()),
        }
        Ok(RealPod {
            path: path.to_path_buf(),
            port: ns.netlink_port_id(),
            ns: Arc::new(ns),
            capture,
            monitor: monitor.map_err(|e| e.to_string())?,
            routes: routes.transpose().map_err(|e| e.to_string())?,
            ebpf: None,
        })
    }

    /// Install the capture (an eBPF pod's programs first, then its inbound table); the
    /// install's report and whether the tables are owned.
    pub fn install(&mut self) -> Result<(String, bool), String> {
        if let Some(e) = &self.ebpf {
            return e
                .backend
                .install(&self.ns, &e.cfg)
                .map(|r| (r.to_string(), false))
                .map_err(|e| e.to_string());
        }
        self.ns
            .install(&self.capture)
            .map(|r| (r.to_string(), r.table_owner != TableOwner::None))
            .map_err(|e| e.to_string())
    }
}

/// One check and, where it differs, one transaction ([`Namespace::repair`]); for an eBPF pod,
/// its programs first: re-attached when one is not attached to the cgroup
/// ([`EbpfBackend::reattach`], which leaves a complete capture untouched).
fn repair(
    ns: &Namespace,
    capture: &Capture,
    ebpf: Option<&EbpfPod>,
) -> Result<Option<Repaired>, String> {
    let mut programs = Vec::new();
    if let Some(e) = ebpf {
        let r = e.backend.reattach(ns, &e.cfg).map_err(|e| e.to_string())?;
        programs = r
            .missing
            .iter()
            .map(|p| {
                format!(
                    "eBPF program {p} was not attached to {}",
                    e.backend.cgroup().display()
                )
            })
            .collect();
    }
    match ns.repair(capture) {
        Ok(None) if programs.is_empty() => Ok(None),
        Ok(None) => Ok(Some(Repaired {
            summary: format!("{} eBPF program(s) re-attached", programs.len()),
            differences: programs,
            owned: false,
        })),
        Ok(Some((drift, report))) => {
            let mut summary = Summary::of(&drift).to_string();
            if !programs.is_empty() {
                summary = format!("{summary}; {} eBPF program(s) re-attached", programs.len());
            }
            programs.extend(drift.iter().map(|d| d.to_string()));
            Ok(Some(Repaired {
                differences: programs,
                summary,
                owned: report.table_owner != TableOwner::None,
            }))
        }
        Err(e) => Err(e.to_string()),
    }
}

impl PodKernel for RealPod {
    fn repair(&mut self) -> Result<Option<Repaired>, String> {
        repair(&self.ns, &self.capture, self.ebpf.as_deref())
    }

    fn repair_job(&self) -> RepairJob {
        let (ns, capture, ebpf) = (self.ns.clone(), self.capture.clone(), self.ebpf.clone());
        Box::new(move || repair(&ns, &capture, ebpf.as_deref()))
    }

    /// The capture removed: an eBPF pod's programs and pins too (found among the stale ones
    /// when its cgroup is gone).
    fn remove(&mut self) -> Result<usize, String> {
        if let Some(e) = &self.ebpf {
            return e
                .backend
                .remove_even_if_gone(&self.ns, &e.cfg)
                .map(|r| r.inbound.tables)
                .map_err(|e| e.to_string());
        }
        self.ns
            .remove(&self.capture)
            .map(|r| r.tables)
            .map_err(|e| e.to_string())
    }

    fn backend(&self) -> Option<serde_json::Value> {
        self.ebpf.as_ref().map(|e| e.status())
    }
}
