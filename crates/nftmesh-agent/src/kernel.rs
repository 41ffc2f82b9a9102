//! The real [`PodKernel`]: a pod's [`Namespace`] handle (its commits are the agent's, known by
//! the handle's netlink port id), its capture, and the change monitors the I/O loop polls
//! (nf_tables always; rtnetlink when the capture has policy routing or `::6` on `lo`).

use crate::identity::{self, NetnsId};
use crate::pods::{PodKernel, RepairJob, Repaired};
use crate::protocol::Desired;
use crate::summary::Summary;
use nftmesh::{Capture, Namespace, TableOwner};
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
        })
    }

    /// Install the capture; the install's report and whether the tables are owned.
    pub fn install(&mut self) -> Result<(String, bool), String> {
        self.ns
            .install(&self.capture)
            .map(|r| (r.to_string(), r.table_owner != TableOwner::None))
            .map_err(|e| e.to_string())
    }
}

/// One check and, where it differs, one transaction ([`Namespace::repair`]).
fn repair(ns: &Namespace, capture: &Capture) -> Result<Option<Repaired>, String> {
    match ns.repair(capture) {
        Ok(None) => Ok(None),
        Ok(Some((drift, report))) => Ok(Some(Repaired {
            differences: drift.iter().map(|d| d.to_string()).collect(),
            summary: Summary::of(&drift).to_string(),
            owned: report.table_owner != TableOwner::None,
        })),
        Err(e) => Err(e.to_string()),
    }
}

impl PodKernel for RealPod {
    fn repair(&mut self) -> Result<Option<Repaired>, String> {
        repair(&self.ns, &self.capture)
    }

    fn repair_job(&self) -> RepairJob {
        let (ns, capture) = (self.ns.clone(), self.capture.clone());
        Box::new(move || repair(&ns, &capture))
    }

    fn remove(&mut self) -> Result<usize, String> {
        self.ns
            .remove(&self.capture)
            .map(|r| r.tables)
            .map_err(|e| e.to_string())
    }
}
