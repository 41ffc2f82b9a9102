//! Inbound capture without NAT or conntrack (issue 27 item 4): `bpf/inbound.c`'s `sk_lookup`
//! program on the pod's network namespace steers the TCP connections nf_tables' `istio-inbound`
//! chain would REDIRECT to the proxy's inbound listener (15006), found in a SOCKMAP that
//! programs on the pod's cgroup fill when a proxy uid or gid listens on that port; the
//! accepted socket's local address is the original destination, and `SO_ORIGINAL_DST`
//! (`IP6T_SO_ORIGINAL_DST`) answers it too. No listener: the connection is refused, never
//! handed to the app.
//!
//! [`InboundCapture::attach`] holds the links for the life of the returned handle (tests,
//! benchmarks); [`InboundCapture::install`] pins them in bpffs under the capture's directory,
//! `nftmesh/<cgroup inode>/inbound/`, so the steering outlives the process; from any process
//! [`InboundAttachment::open`] finds it and [`InboundAttachment::remove`] removes it. Remove it
//! before the outbound capture of the same cgroup, or with it ([`crate::Attachment::remove`]
//! detaches and unpins what its subdirectories hold).

mod settings;

use crate::error::EbpfError;
use crate::netns::NetnsCookie;
use crate::pins::{self, Bpffs, CgroupLock};
use crate::sys;
use aya::programs::{CgroupSock, CgroupSockopt, Program, SkLookup, SockOps};
use aya::{Ebpf, EbpfLoader};
use nftmesh_model::config::CaptureConfig;
use settings::{InboundSettings, STATE_MAPS};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The object `build.rs` compiled from `bpf/inbound.c`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/inbound.bpf.o"));

/// The subdirectory of a capture's bpffs directory the inbound steering is pinned in.
const SUBDIR: &str = "inbound";

/// One program of `bpf/inbound.c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InProg {
    PostBind4,
    PostBind6,
    SockOps,
    GetSockopt,
    SkLookup,
}

/// Attach order: what registers the listener and answers for steered sockets first, the
/// steering itself last (and detached first).
const PROGRAMS: [InProg; 5] = [
    InProg::PostBind4,
    InProg::PostBind6,
    InProg::SockOps,
    InProg::GetSockopt,
    InProg::SkLookup,
];

impl InProg {
    /// Its function name in `bpf/inbound.c`.
    fn name(self) -> &'static str {
        match self {
            InProg::PostBind4 => "nftmesh_in_post_bind4",
            InProg::PostBind6 => "nftmesh_in_post_bind6",
            InProg::SockOps => "nftmesh_in_sockops",
            InProg::GetSockopt => "nftmesh_in_getsockopt",
            InProg::SkLookup => "nftmesh_in_sk_lookup",
        }
    }

    /// The file its link is pinned as.
    fn link_pin(self) -> &'static str {
        match self {
            InProg::PostBind4 => "link_post_bind4",
            InProg::PostBind6 => "link_post_bind6",
            InProg::SockOps => "link_sockops",
            InProg::GetSockopt => "link_getsockopt",
            InProg::SkLookup => "link_sk_lookup",
        }
    }

    /// Its `enum bpf_attach_type` (`linux/bpf.h`).
    fn attach_type(self) -> u32 {
        match self {
            InProg::SockOps => 3,     // BPF_CGROUP_SOCK_OPS
            InProg::PostBind4 => 12,  // BPF_CGROUP_INET4_POST_BIND
            InProg::PostBind6 => 13,  // BPF_CGROUP_INET6_POST_BIND
            InProg::GetSockopt => 21, // BPF_CGROUP_GETSOCKOPT
            InProg::SkLookup => 36,   // BPF_SK_LOOKUP
        }
    }

    /// Whether it attaches to the network namespace (else to the cgroup).
    fn on_netns(self) -> bool {
        self == InProg::SkLookup
    }
}

/// The inbound steering loaded into the kernel, not attached yet: the programs of
/// `bpf/inbound.c`, verified, with one [`CaptureConfig`]'s inbound settings in their maps.
#[derive(Debug)]
pub struct InboundCapture {
    settings: InboundSettings,
    bpf: Ebpf,
}

impl InboundCapture {
    /// Check `cfg`, load the programs (the verifier runs here) and write its inbound settings
    /// (ports, inbound capture port, proxy uids and gids) into their maps. IPv6 is steered
    /// whatever `cfg.ipv6` says, as nf_tables' `inet` inbound chain redirects it. Settings
    /// sk_lookup cannot apply as nf_tables' inbound chain does (TPROXY mode, excluded or
    /// rerouted interfaces, drop-invalid) are [`EbpfError::Unsupported`]; outbound and DNS
    /// settings are not this capture's.
    pub fn new(cfg: &CaptureConfig) -> Result<Self, EbpfError> {
        let settings = InboundSettings::from_config(cfg)?;
        let bpf = load(&settings, None)?;
        Ok(InboundCapture { settings, bpf })
    }

    /// Whether TCP to `port` is steered to the inbound listener (as nf_tables' `istio-inbound`
    /// decides for a connection from outside the pod).
    pub fn steers(&self, port: u16) -> bool {
        self.settings.steers(port)
    }

    /// Attach to the cgroup v2 directory `cgroup_dir` (the proxy's listener is registered from
    /// there, and its accepted sockets answer `SO_ORIGINAL_DST`) and the network namespace
    /// `netns` (a path such as `/proc/PID/ns/net` or `/var/run/netns/NAME`: its connections
    /// are steered) for as long as the returned handle lives; nothing is pinned.
    pub fn attach(
        &mut self,
        cgroup_dir: &Path,
        netns: &Path,
    ) -> Result<InboundAttachment, EbpfError> {
        let cgroup = open(cgroup_dir, true)?;
        let ns = open(netns, false)?;
        self.settings.netns_cookie = NetnsCookie::of(netns)?.get();
        settings::write(&mut self.bpf, &self.settings)?;
        let mut links = Vec::with_capacity(PROGRAMS.len());
        for p in PROGRAMS {
            let target = if p.on_netns() {
                ns.as_fd()
            } else {
                cgroup.as_fd()
            };
            let link = sys::link_create(prog_fd(&self.bpf, p)?, target, p.attach_type()).map_err(
                |source| EbpfError::Link {
                    program: p.name(),
                    path: None,
                    action: "create",
                    source,
                },
            )?;
            links.push((p, link));
        }
        Ok(InboundAttachment {
            cgroup: cgroup_dir.to_path_buf(),
            kind: Kind::Held { links },
        })
    }

    /// Install on the cgroup v2 directory `cgroup_dir` and the network namespace `netns`,
    /// pinned in `bpffs` under `nftmesh/<cgroup inode>/inbound/`: steering goes on until
    /// [`InboundAttachment::remove`], whatever happens to this process. An installed steering
    /// is **replaced** in place (each pinned link gets its new program, `BPF_LINK_UPDATE`; the
    /// listener map is kept, so a listening proxy stays registered); its sk_lookup link stays
    /// on the namespace it was attached to.
    ///
    /// Install before the proxy listens: a listener is registered when it starts listening.
    pub fn install(
        &mut self,
        bpffs: &Bpffs,
        cgroup_dir: &Path,
        netns: &Path,
    ) -> Result<InboundAttachment, EbpfError> {
        let dir = bpffs.dir_of(cgroup_dir)?.join(SUBDIR);
        // Held to the end: no install or removal of this cgroup's capture interleaves.
        let _lock = CgroupLock::take(cgroup_dir)?;
        let cgroup = open(cgroup_dir, true)?;
        let ns = open(netns, false)?;
        self.settings.netns_cookie = NetnsCookie::of(netns)?.get();
        pins::create_dir(&dir)?;
        let fresh = !PROGRAMS.iter().any(|p| dir.join(p.link_pin()).exists());
        let attached = InboundAttachment::pinned(bpffs, cgroup_dir, dir.clone());
        match self.install_in(&cgroup, &ns, &dir) {
            Ok(()) => Ok(attached),
            Err(e) => {
                if fresh {
                    let _ = attached.remove_pins();
                }
                Err(e)
            }
        }
    }

    fn install_in(&mut self, cgroup: &File, ns: &File, dir: &Path) -> Result<(), EbpfError> {
        let bpf = load(&self.settings, Some(dir))?;
        for p in PROGRAMS {
            let pin = dir.join(p.link_pin());
            let err = |action, source| EbpfError::Link {
                program: p.name(),
                path: Some(pin.clone()),
                action,
                source,
            };
            let fd = prog_fd(&bpf, p)?;
            if pin.exists() {
                let link = sys::obj_get(&pin).map_err(|e| err("open", e))?;
                sys::link_update(link.as_fd(), fd).map_err(|e| err("update", e))?;
            } else {
                let target = if p.on_netns() {
                    ns.as_fd()
                } else {
                    cgroup.as_fd()
                };
                let link =
                    sys::link_create(fd, target, p.attach_type()).map_err(|e| err("create", e))?;
                sys::obj_pin(link.as_fd(), &pin).map_err(|e| err("pin", e))?;
            }
        }
        self.bpf = bpf;
        Ok(())
    }
}

/// The inbound steering attached to one cgroup and network namespace: pinned
/// ([`InboundCapture::install`], [`InboundAttachment::open`]; dropping the handle changes
/// nothing) or held by this handle alone ([`InboundCapture::attach`]; detached on drop).
#[derive(Debug)]
pub struct InboundAttachment {
    cgroup: PathBuf,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Pinned { bpffs: Bpffs, dir: PathBuf },
    Held { links: Vec<(InProg, OwnedFd)> },
}

impl InboundAttachment {
    fn pinned(bpffs: &Bpffs, cgroup: &Path, dir: PathBuf) -> Self {
        InboundAttachment {
            cgroup: cgroup.to_path_buf(),
            kind: Kind::Pinned {
                bpffs: bpffs.clone(),
                dir,
            },
        }
    }

    /// The steering pinned in `bpffs` for the cgroup v2 directory `cgroup_dir`, whoever
    /// installed it; `None` when there is none.
    pub fn open(bpffs: &Bpffs, cgroup_dir: &Path) -> Result<Option<Self>, EbpfError> {
        let dir = bpffs.dir_of(cgroup_dir)?.join(SUBDIR);
        Ok(dir
            .exists()
            .then(|| InboundAttachment::pinned(bpffs, cgroup_dir, dir)))
    }

    /// The cgroup directory its cgroup programs are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The bpffs directory of its links and maps, if it is pinned.
    pub fn pin_dir(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Pinned { dir, .. } => Some(dir),
            Kind::Held { .. } => None,
        }
    }

    /// The programs attached (their names in `bpf/inbound.c`), in attach order.
    pub fn programs(&self) -> Vec<&'static str> {
        match &self.kind {
            Kind::Pinned { dir, .. } => PROGRAMS
                .iter()
                .filter(|p| dir.join(p.link_pin()).exists())
                .map(|p| p.name())
                .collect(),
            Kind::Held { links } => links.iter().map(|(p, _)| p.name()).collect(),
        }
    }

    /// Detach every program, sk_lookup first (no more steering: connections reach the app
    /// as addressed), and remove the pins, the `inbound/` directory, and the capture's
    /// directory and `nftmesh/` if that leaves them empty. Each link is detached outright
    /// (`BPF_LINK_DETACH`), even if another process holds it. Everything is attempted; the
    /// first error is returned.
    pub fn remove(self) -> Result<(), EbpfError> {
        // A cgroup already gone has no lock to take (and no installer to wait for).
        let _lock = CgroupLock::take_unless_gone(&self.cgroup)?;
        self.remove_pins()
    }

    /// [`InboundAttachment::remove`] without the cgroup's lock (the caller holds it).
    fn remove_pins(self) -> Result<(), EbpfError> {
        let mut first = Ok(());
        let mut note = |r: Result<(), EbpfError>| {
            if let Err(e) = r {
                first = std::mem::replace(&mut first, Ok(())).and(Err(e));
            }
        };
        let (bpffs, dir) = match self.kind {
            Kind::Held { links } => {
                for (p, link) in links.iter().rev() {
                    note(
                        sys::link_detach(link.as_fd()).map_err(|source| EbpfError::Link {
                            program: p.name(),
                            path: None,
                            action: "detach",
                            source,
                        }),
                    );
                }
                return first;
            }
            Kind::Pinned { bpffs, dir } => (bpffs, dir),
        };
        // The links in order (the steering first), then the maps and the directory.
        for p in PROGRAMS.iter().rev() {
            note(unlink_program(&dir, *p));
        }
        crate::attachment::remove_subdir(&dir, &mut note);
        // The outbound capture may still be pinned beside it: then these stay.
        if let Some(capture_dir) = dir.parent() {
            let _ = std::fs::remove_dir(capture_dir);
        }
        let _ = std::fs::remove_dir(bpffs.top());
        first
    }
}

/// Detach the link of `p` pinned in `dir` and remove its pin, if it is pinned.
fn unlink_program(dir: &Path, p: InProg) -> Result<(), EbpfError> {
    crate::attachment::unlink_link(dir.join(p.link_pin()), p.name())
}

/// Open a cgroup directory or a network namespace file.
fn open(path: &Path, cgroup: bool) -> Result<File, EbpfError> {
    File::open(path).map_err(|source| {
        if cgroup {
            EbpfError::Cgroup {
                path: path.to_path_buf(),
                source,
            }
        } else {
            EbpfError::Netns {
                path: Some(path.to_path_buf()),
                source,
            }
        }
    })
}

/// The file descriptor of the loaded program `p`.
fn prog_fd(bpf: &Ebpf, p: InProg) -> Result<BorrowedFd<'_>, EbpfError> {
    let name = p.name();
    let program = bpf.program(name).ok_or(EbpfError::Missing {
        kind: "program",
        name,
    })?;
    Ok(program
        .fd()
        .map_err(|source| EbpfError::Program {
            program: name,
            source,
        })?
        .as_fd())
}

/// Verify and load the program `p` of `bpf`.
fn load_program(bpf: &mut Ebpf, p: InProg) -> Result<(), EbpfError> {
    let name = p.name();
    let program: &mut Program = bpf.program_mut(name).ok_or(EbpfError::Missing {
        kind: "program",
        name,
    })?;
    let err = |source| EbpfError::Program {
        program: name,
        source,
    };
    match p {
        InProg::PostBind4 | InProg::PostBind6 => {
            <&mut CgroupSock>::try_from(program).map_err(err)?.load()
        }
        InProg::SockOps => <&mut SockOps>::try_from(program).map_err(err)?.load(),
        InProg::GetSockopt => <&mut CgroupSockopt>::try_from(program).map_err(err)?.load(),
        InProg::SkLookup => <&mut SkLookup>::try_from(program).map_err(err)?.load(),
    }
    .map_err(err)
}

/// Load the object with `settings` in its maps and its programs verified; with `pins`, the
/// state maps are the ones pinned there (created and pinned if absent).
fn load(settings: &InboundSettings, pins: Option<&Path>) -> Result<Ebpf, EbpfError> {
    let mut loader = EbpfLoader::new();
    if let Some(dir) = pins {
        for name in STATE_MAPS {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut bpf = loader.load(OBJECT).map_err(EbpfError::Object)?;
    settings::write(&mut bpf, settings)?;
    for p in PROGRAMS {
        load_program(&mut bpf, p)?;
    }
    Ok(bpf)
}
