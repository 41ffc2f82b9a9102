//! The eBPF capture backend (issue 27): a sidecar's **outbound** capture done at `connect()` by
//! BPF programs on the pod's cgroup v2 directory (no NAT, no conntrack entry of its own), its
//! **inbound** capture by nf_tables in the pod's network namespace as with the default backend.
//!
//! ```no_run
//! use nftmesh::ebpf::EbpfBackend;
//! use nftmesh::{CaptureConfig, Namespace};
//!
//! let pod = Namespace::open("/var/run/netns/pod1")?;
//! let backend = EbpfBackend::find("/sys/fs/cgroup/unified/pod1")?; // bpffs from /proc/mounts
//! let cfg = CaptureConfig::sidecar();
//! let installed = backend.install(&pod, &cfg)?; // pinned: outlives this process
//! println!("{installed}");
//! backend.remove(&pod, &cfg)?; // programs, pins and the inbound table gone
//! # Ok::<(), nftmesh::CaptureError>(())
//! ```
//!
//! Inbound has two ways ([`EbpfInbound`]). The default, an nf_tables table (REDIRECT or
//! TPROXY), works with a proxy that is already listening and with TPROXY, but its nat chains
//! make the namespace track every connection: measured (`nftmesh-ebpf`'s `tests/conntrack.rs`),
//! 1 entry per outbound connection (its loopback leg, never NATed) and 2 per inbound one.
//! [`EbpfInbound::SkLookup`] steers inbound with `sk_lookup` to the proxy's listener: no
//! table, 0 entries either way, and 1.18–1.24× the inbound connection rate of REDIRECT
//! (`cargo bench -p nftmesh-ebpf --bench inbound`); install it before the proxy listens.

use crate::{Capture, CaptureError, Namespace, Removed, Report};
use nftmesh_model::config::{CaptureConfig, CidrSelection};
use std::fmt;
use std::path::{Path, PathBuf};

pub use nftmesh_ebpf::{
    Accelerated, Attachment, Bpffs, EbpfError, InboundAttachment, NetnsCookie, Tracked,
};

/// Where the eBPF backend installs: the pod's cgroup v2 directory (its processes' connects are
/// captured) and the BPF file system its programs' links and maps are pinned in.
#[derive(Debug, Clone)]
pub struct EbpfBackend {
    cgroup: PathBuf,
    bpffs: Bpffs,
    sk_msg: bool,
    inbound: EbpfInbound,
}

/// How the eBPF backend captures **inbound** connections ([`EbpfBackend::with_inbound`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EbpfInbound {
    /// An nf_tables table in the pod's namespace (REDIRECT or TPROXY), as the default backend:
    /// works whenever the proxy started listening, TPROXY included; costs a conntrack entry per
    /// connection, outbound ones included (the nat table turns conntrack on in the namespace).
    #[default]
    Nftables,
    /// `sk_lookup` steering to the proxy's inbound listener ([`nftmesh_ebpf::InboundCapture`]):
    /// no table, no NAT, no conntrack entry for any connection. The listener is registered when
    /// it starts listening, so install before the proxy starts (the CNI plugin does): a proxy
    /// already listening is not found, and captured inbound connections are refused (never
    /// handed to the app) until it listens again. TPROXY mode is refused.
    SkLookup,
}

/// What [`EbpfBackend::install`] did: the nf_tables inbound install and the programs attached.
#[derive(Debug, Clone)]
pub struct EbpfInstalled {
    /// The inbound capture's nf_tables install.
    pub inbound: Report,
    /// The programs attached to the cgroup (their names in the BPF source), in attach order.
    pub programs: Vec<&'static str>,
    /// The cgroup they are attached to.
    pub cgroup: PathBuf,
    /// Whether sk_msg acceleration is on ([`EbpfBackend::with_sk_msg`]).
    pub sk_msg: bool,
    /// With [`EbpfInbound::SkLookup`], the inbound programs attached (then [`Self::inbound`]
    /// is empty: no table); empty with [`EbpfInbound::Nftables`].
    pub inbound_programs: Vec<&'static str>,
}

impl fmt::Display for EbpfInstalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "outbound: eBPF programs {} attached to {}{}; inbound: ",
            self.programs.join(", "),
            self.cgroup.display(),
            if self.sk_msg {
                ", sk_msg acceleration on"
            } else {
                ""
            },
        )?;
        if self.inbound_programs.is_empty() {
            write!(f, "{}", self.inbound)
        } else {
            write!(
                f,
                "sk_lookup, eBPF programs {} (no nf_tables table)",
                self.inbound_programs.join(", ")
            )
        }
    }
}

/// What [`EbpfBackend::remove`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EbpfRemoved {
    /// Whether an eBPF capture was attached to the cgroup (and is now detached and unpinned).
    pub programs: bool,
    /// Whether sk_msg acceleration was on (and is now detached and unpinned); `false` from
    /// [`EbpfBackend::remove_even_if_gone`], which removes it with the rest of the stale pins.
    pub sk_msg: bool,
    /// The nf_tables tables deleted.
    pub inbound: Removed,
}

/// What is attached to a cgroup now ([`EbpfBackend::attached`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The programs attached (their names in the BPF source).
    pub programs: Vec<&'static str>,
    /// The connections the maps of original destinations hold.
    pub tracked: Tracked,
    /// With sk_msg acceleration on, how many sockets its map holds; `None` when it is off.
    pub sk_msg: Option<usize>,
    /// With `sk_lookup` inbound ([`EbpfInbound::SkLookup`]), its programs; empty otherwise.
    pub inbound_programs: Vec<&'static str>,
}

impl fmt::Display for Attached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "programs {} ({} connecting, {} established connection(s) tracked)",
            self.programs.join(", "),
            self.tracked.connecting,
            self.tracked.established
        )?;
        if let Some(n) = self.sk_msg {
            write!(f, "; sk_msg acceleration on ({n} socket(s))")?;
        }
        if !self.inbound_programs.is_empty() {
            write!(
                f,
                "; inbound by sk_lookup: {}",
                self.inbound_programs.join(", ")
            )?;
        }
        Ok(())
    }
}

impl EbpfBackend {
    /// The backend for the cgroup v2 directory `cgroup`, pinning in `bpffs`.
    pub fn new(cgroup: impl Into<PathBuf>, bpffs: Bpffs) -> Self {
        EbpfBackend {
            cgroup: cgroup.into(),
            bpffs,
            sk_msg: false,
            inbound: EbpfInbound::Nftables,
        }
    }

    /// How [`EbpfBackend::install`] captures inbound.
    pub fn inbound_mode(&self) -> EbpfInbound {
        self.inbound
    }

    /// How [`EbpfBackend::install`] captures inbound (default [`EbpfInbound::Nftables`]).
    pub fn with_inbound(mut self, inbound: EbpfInbound) -> Self {
        self.inbound = inbound;
        self
    }

    /// Whether [`EbpfBackend::install`] also turns on sk_msg acceleration
    /// ([`nftmesh_ebpf::Acceleration`]: the app's and the proxy's ends of a captured connection
    /// hand their bytes to each other without TCP on loopback). **Off by default**: on the
    /// kernels seen, a blocking `recv()` after `shutdown(SHUT_WR)` on an accelerated socket
    /// returns `EAGAIN` early (the half-close bug; see the crate's README), which breaks apps
    /// that half-close and wait for the answer.
    pub fn with_sk_msg(mut self, on: bool) -> Self {
        self.sk_msg = on;
        self
    }

    /// [`EbpfBackend::new`] with the BPF file system `/proc/mounts` lists (`/sys/fs/bpf`
    /// first).
    pub fn find(cgroup: impl Into<PathBuf>) -> Result<Self, CaptureError> {
        Ok(Self::new(cgroup, Bpffs::find()?))
    }

    /// The pod's cgroup v2 directory.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The BPF file system the capture is pinned in.
    pub fn bpffs(&self) -> &Bpffs {
        &self.bpffs
    }

    /// The nf_tables part of `cfg` under this backend: the inbound capture, compiled from `cfg`
    /// with outbound capture off (no included CIDR or port, so nothing jumps to the outbound
    /// redirect) and DNS capture off (the programs capture DNS). The proxy's own connections
    /// to the pod over `lo` still go to the inbound capture port, as with the nf_tables
    /// backend.
    pub fn inbound(cfg: &CaptureConfig) -> Result<Capture, CaptureError> {
        let mut inbound = cfg.clone();
        inbound.outbound_cidrs_include = CidrSelection::Cidrs(Vec::new());
        inbound.outbound_ports_include.clear();
        inbound.dns.enabled = false;
        inbound.dns.capture_all = false;
        Capture::new(&inbound)
    }

    /// Install `cfg` for the pod: the eBPF programs on the cgroup first (applying to its
    /// sockets in `ns` only, as the nf_tables capture applies in `ns` only; pinned, replacing an
    /// earlier eBPF capture of the cgroup atomically), then the inbound capture in `ns` (one
    /// nf_tables transaction that also replaces an nf_tables capture with outbound: the
    /// programs already capture, so no connect goes uncaptured), or with
    /// [`EbpfInbound::SkLookup`] the steering, then nftmesh's tables deleted. Settings the programs cannot
    /// apply exactly are refused ([`EbpfError::Unsupported`]) before anything changes. If the
    /// nf_tables transaction fails, the programs stay attached and the tables are as they were.
    pub fn install(
        &self,
        ns: &Namespace,
        cfg: &CaptureConfig,
    ) -> Result<EbpfInstalled, CaptureError> {
        let inbound = Self::inbound(cfg)?;
        let netns = match ns.path() {
            Some(path) => NetnsCookie::of(path)?,
            None => NetnsCookie::current()?,
        };
        let mut programs = nftmesh_ebpf::EbpfCapture::in_namespace(cfg, netns)?;
        // Loaded (and its settings checked: TPROXY is refused) before anything is attached.
        let mut steering = match self.inbound {
            EbpfInbound::SkLookup => Some(nftmesh_ebpf::InboundCapture::new(cfg)?),
            EbpfInbound::Nftables => None,
        };
        let attachment = programs.install(&self.bpffs, &self.cgroup)?;
        if self.sk_msg {
            nftmesh_ebpf::Acceleration::for_capture(cfg)?.install(&self.bpffs, &self.cgroup)?;
        } else if let Some(accelerated) = Accelerated::open(&self.bpffs, &self.cgroup)? {
            // An earlier install turned it on; this one does not.
            accelerated.remove()?;
        }
        let (report, inbound_programs) = match steering.as_mut() {
            None => {
                if let Some(steering) = InboundAttachment::open(&self.bpffs, &self.cgroup)? {
                    // The table first, then the steering goes: inbound is never uncaptured.
                    let report = ns.install(&inbound)?;
                    steering.remove()?;
                    (report, Vec::new())
                } else {
                    (ns.install(&inbound)?, Vec::new())
                }
            }
            Some(capture) => {
                let path = ns
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from("/proc/thread-self/ns/net"));
                let steering = capture.install(&self.bpffs, &self.cgroup, &path)?;
                // The proxy's IPv6 passthrough source, as with the table. Steering in place: an
                // nf_tables capture of the namespace (an inbound table, or a whole capture the
                // programs now replace) goes.
                ns.ensure_loopback_v6(&inbound)?;
                ns.remove_tables()?;
                (Report::default(), steering.programs())
            }
        };
        Ok(EbpfInstalled {
            inbound: report,
            programs: attachment.programs(),
            cgroup: self.cgroup.clone(),
            sk_msg: self.sk_msg,
            inbound_programs,
        })
    }

    /// Remove the pod's capture: the programs (detached, their pins gone) and nftmesh's tables
    /// in `ns` with the routing `cfg` names. Absent pieces are fine; both are attempted, and
    /// the first error is returned.
    pub fn remove(&self, ns: &Namespace, cfg: &CaptureConfig) -> Result<EbpfRemoved, CaptureError> {
        let inbound = Self::inbound(cfg)?;
        // The inbound steering and the acceleration live in the capture's directory: first.
        let steering = match InboundAttachment::open(&self.bpffs, &self.cgroup) {
            Ok(Some(a)) => a.remove(),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        let sk_msg = match Accelerated::open(&self.bpffs, &self.cgroup) {
            Ok(Some(a)) => a.remove().map(|()| true),
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        };
        let programs = match Attachment::open(&self.bpffs, &self.cgroup) {
            Ok(Some(a)) => a.remove().map(|()| true),
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        };
        let tables = ns.remove(&inbound)?;
        steering?;
        Ok(EbpfRemoved {
            sk_msg: sk_msg?,
            programs: programs?,
            inbound: tables,
        })
    }

    /// What is attached to the cgroup now; `None` when no eBPF capture is.
    pub fn attached(&self) -> Result<Option<Attached>, CaptureError> {
        let Some(a) = Attachment::open(&self.bpffs, &self.cgroup)? else {
            return Ok(None);
        };
        let sk_msg = match Accelerated::open(&self.bpffs, &self.cgroup)? {
            Some(accelerated) => accelerated.sockets()?,
            None => None,
        };
        let inbound_programs = match InboundAttachment::open(&self.bpffs, &self.cgroup)? {
            Some(steering) => steering.programs(),
            None => Vec::new(),
        };
        Ok(Some(Attached {
            programs: a.programs(),
            tracked: a.tracked()?,
            sk_msg,
            inbound_programs,
        }))
    }
}

pub use nftmesh_ebpf::{check_cgroup, Link, StalePins};

/// What [`EbpfBackend::reattach`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reattached {
    /// The programs that were not attached to the cgroup (no pinned link, or a link detached
    /// by another process), now attached again; empty when the capture was complete and
    /// nothing was done.
    pub missing: Vec<&'static str>,
}

impl EbpfBackend {
    /// The links of the capture pinned for the cgroup as the kernel reports them (their ids,
    /// their programs' ids, the cgroup each runs on); `None` when nothing is pinned.
    pub fn links(&self) -> Result<Option<Vec<Link>>, CaptureError> {
        match Attachment::open(&self.bpffs, &self.cgroup)? {
            Some(a) => Ok(Some(a.links()?)),
            None => Ok(None),
        }
    }

    /// Make the pinned capture complete again without touching it when it is: if a program
    /// `cfg` needs is not attached to the cgroup (its pin removed, or its link detached by
    /// another process), the detached links are unpinned and `cfg` installed again
    /// ([`EbpfBackend::install`]: live links get their program in place, missing ones are
    /// created, the maps of original destinations are kept); the programs that were missing.
    pub fn reattach(
        &self,
        ns: &Namespace,
        cfg: &CaptureConfig,
    ) -> Result<Reattached, CaptureError> {
        let missing = match Attachment::open(&self.bpffs, &self.cgroup)? {
            Some(a) => {
                let missing = a.missing(cfg)?;
                if !missing.is_empty() {
                    a.unpin_detached()?;
                }
                missing
            }
            None => Attachment::needed(cfg)?,
        };
        if !missing.is_empty() {
            self.install(ns, cfg)?;
        }
        Ok(Reattached { missing })
    }

    /// [`EbpfBackend::remove`], also when the cgroup directory is gone (the pod's cgroup
    /// deleted before its capture was removed): then its pins, which can no longer be found
    /// by the directory's inode, are found and removed with every other stale capture of the
    /// BPF file system ([`Bpffs::remove_stale_within`], waiting up to a second for the kernel
    /// to let the links of a cgroup deleted just now go), and the tables in `ns` removed.
    pub fn remove_even_if_gone(
        &self,
        ns: &Namespace,
        cfg: &CaptureConfig,
    ) -> Result<EbpfRemoved, CaptureError> {
        if self.cgroup.exists() {
            return self.remove(ns, cfg);
        }
        let stale = self
            .bpffs
            .remove_stale_within(std::time::Duration::from_secs(1));
        let tables = ns.remove(&Self::inbound(cfg)?)?;
        Ok(EbpfRemoved {
            programs: !stale?.is_empty(),
            // Removed with the rest of the stale pins, if it was there; not told apart.
            sk_msg: false,
            inbound: tables,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftmesh_model::config::PortSelection;

    /// A sidecar capturing every destination and port, both ways.
    fn everything() -> CaptureConfig {
        let mut cfg = CaptureConfig::sidecar();
        cfg.outbound_cidrs_include = CidrSelection::All;
        cfg.outbound_ports_include = vec![8080];
        cfg.inbound_ports = PortSelection::All;
        cfg
    }

    #[test]
    fn inbound_keeps_inbound_and_drops_outbound_capture() {
        let full = Capture::new(&everything()).unwrap();
        let inbound = EbpfBackend::inbound(&everything()).unwrap();
        let text = inbound.render();
        // The outbound redirect chain may exist, but nothing jumps to it.
        assert!(full.render().contains("jump istio-redirect"));
        assert!(!text.contains("jump istio-redirect"), "{text}");
        assert!(!text.contains("tcp dport 8080"), "{text}");
        // Inbound capture (and the proxy's own traffic to the pod) still goes to 15006.
        assert!(text.contains("jump istio-in-redirect"), "{text}");
        assert!(text.contains("redirect to :15006"), "{text}");
    }

    #[test]
    fn inbound_leaves_dns_to_the_programs() {
        let mut cfg = everything();
        cfg.dns.enabled = true;
        cfg.dns.servers = vec!["10.96.0.10".parse().unwrap()];
        assert!(Capture::new(&cfg)
            .unwrap()
            .render()
            .contains("redirect to :15053"));
        let text = EbpfBackend::inbound(&cfg).unwrap().render();
        assert!(
            !text.contains("15053") && !text.contains("dport 53"),
            "{text}"
        );
        assert!(text.contains("redirect to :15006"), "{text}");
    }
}
