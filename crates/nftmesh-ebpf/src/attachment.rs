//! A capture pinned in bpffs for one cgroup: linking (or relinking) the programs, reading the
//! pinned state from any process, and removing it.

use crate::capture::Tracked;
use crate::error::EbpfError;
use crate::maps;
use crate::pins::{self, Bpffs, CgroupLock};
use crate::programs::{self, Prog, PROGRAMS};
use crate::settings::{Dns, Settings};
use crate::sys;
use aya::Ebpf;
use nftmesh_model::config::CaptureConfig;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The capture attached to one cgroup: either pinned in bpffs
/// ([`EbpfCapture::install`](crate::EbpfCapture::install), or [`Attachment::open`] from any
/// process), where dropping the handle changes nothing, or held by this handle alone
/// ([`EbpfCapture::attach`](crate::EbpfCapture::attach)), detached when it is dropped.
/// [`Attachment::remove`] detaches (and unpins) everything.
#[derive(Debug)]
pub struct Attachment {
    cgroup: PathBuf,
    kind: Kind,
}

/// One program's link as the kernel reports it (`BPF_OBJ_GET_INFO_BY_FD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The program's name in `bpf/capture.c`.
    pub program: &'static str,
    /// The link's id: a new one for every attach, kept by an in-place replace.
    pub id: u32,
    /// The id of the program the link runs: a new one for every load (a replace changes it).
    pub program_id: u32,
    /// The id (inode number) of the cgroup it is attached to; 0 once it is detached
    /// (`BPF_LINK_DETACH`) or its cgroup is gone.
    pub cgroup_id: u64,
}

#[derive(Debug)]
enum Kind {
    /// Pinned in `dir` of `bpffs`.
    Pinned { bpffs: Bpffs, dir: PathBuf },
    /// The links' file descriptors, in attach order, and the maps of original destinations
    /// ([`maps::STATE_MAPS`] order): closing the links detaches them.
    Held {
        links: Vec<(Prog, OwnedFd)>,
        state: Vec<OwnedFd>,
    },
}

/// Attach every program of `bpf` to `cgroup` (the DNS ones only with `dns`) as a new link held
/// by its file descriptor alone, in [`PROGRAMS`] order; on an error the links made so far
/// close, detached.
pub(crate) fn link_held(
    bpf: &mut Ebpf,
    cgroup: &File,
    dns: bool,
) -> Result<Vec<(Prog, OwnedFd)>, EbpfError> {
    check_cgroup_file(cgroup)?;
    let mut links = Vec::with_capacity(PROGRAMS.len());
    for p in PROGRAMS.into_iter().filter(|p| dns || !p.dns_only()) {
        let program = p.name();
        let fd = programs::hook(bpf, p)?
            .prog_fd()
            .map_err(|source| EbpfError::Program { program, source })?;
        let link = sys::link_create(fd, cgroup.as_fd(), p.attach_type()).map_err(|source| {
            EbpfError::Link {
                program,
                path: None,
                action: "create",
                source,
            }
        })?;
        links.push((p, link));
    }
    Ok(links)
}

/// [`pins::check_cgroup`] of an open directory: on a cgroup v2 file system, and not a root.
fn check_cgroup_file(cgroup: &File) -> Result<(), EbpfError> {
    let path = std::fs::read_link(format!("/proc/self/fd/{}", cgroup.as_raw_fd()))
        .unwrap_or_else(|_| PathBuf::from("(the cgroup directory given)"));
    let refuse = |kind, why: String| EbpfError::Cgroup {
        path: path.clone(),
        source: std::io::Error::new(kind, why),
    };
    let magic = sys::fs_type(cgroup.as_fd()).map_err(|source| EbpfError::Cgroup {
        path: path.clone(),
        source,
    })?;
    if magic != sys::CGROUP2_SUPER_MAGIC {
        return Err(refuse(
            std::io::ErrorKind::InvalidInput,
            "not a directory of a cgroup v2 file system".into(),
        ));
    }
    pins::refuse_root(cgroup, &pins::cgroup2_mounts()?)
        .map_err(|why| refuse(std::io::ErrorKind::PermissionDenied, why))
}

/// Whether `dir` holds a pinned link of any of the programs.
pub(crate) fn linked(dir: &Path) -> bool {
    PROGRAMS.iter().any(|p| dir.join(p.link_pin()).exists())
}

/// Give every program of `bpf` its link on `cgroup`, pinned in `dir`: a pinned link gets the
/// new program in place (`BPF_LINK_UPDATE`), a missing one is created and pinned (the DNS ones
/// only with `dns`). In [`PROGRAMS`] order, so on a first install connect4 comes last.
pub(crate) fn link_all(
    bpf: &mut Ebpf,
    cgroup: &File,
    dir: &Path,
    dns: bool,
) -> Result<(), EbpfError> {
    for p in PROGRAMS {
        let pin = dir.join(p.link_pin());
        if p.dns_only() && !dns && !pin.exists() {
            continue;
        }
        let program = p.name();
        let link_err = |action, source| EbpfError::Link {
            program,
            path: Some(pin.clone()),
            action,
            source,
        };
        let fd = programs::hook(bpf, p)?
            .prog_fd()
            .map_err(|source| EbpfError::Program { program, source })?;
        if pin.exists() {
            let link = sys::obj_get(&pin).map_err(|e| link_err("open", e))?;
            sys::link_update(link.as_fd(), fd).map_err(|e| link_err("update", e))?;
        } else {
            let link = sys::link_create(fd, cgroup.as_fd(), p.attach_type())
                .map_err(|e| link_err("create", e))?;
            // The pin holds the link from here on; our file descriptor closes with `link`.
            sys::obj_pin(link.as_fd(), &pin).map_err(|e| link_err("pin", e))?;
        }
    }
    Ok(())
}

/// The links pinned in `dir`, as the kernel reports them (those that cannot be read are left
/// out).
pub(crate) fn pinned_links(dir: &Path) -> Vec<Link> {
    PROGRAMS
        .iter()
        .filter_map(|p| {
            let link = sys::obj_get(&dir.join(p.link_pin())).ok()?;
            let f = sys::link_info(link.as_fd()).ok()?;
            Some(Link {
                program: p.name(),
                id: f.id,
                program_id: f.prog_id,
                cgroup_id: f.cgroup_id,
            })
        })
        .collect()
}

/// The programs `cfg`'s capture links (DNS ones only with DNS capture in effect), in
/// [`PROGRAMS`] order.
fn wanted(cfg: &CaptureConfig) -> Result<Vec<Prog>, EbpfError> {
    let dns = Settings::from_config(cfg)?.dns != Dns::Off;
    Ok(PROGRAMS
        .into_iter()
        .filter(|p| dns || !p.dns_only())
        .collect())
}

impl Attachment {
    /// The attachment an install into `dir` makes.
    pub(crate) fn pinned(bpffs: &Bpffs, cgroup: &Path, dir: PathBuf) -> Self {
        Attachment {
            cgroup: cgroup.to_path_buf(),
            kind: Kind::Pinned {
                bpffs: bpffs.clone(),
                dir,
            },
        }
    }

    pub(crate) fn held(cgroup: &Path, links: Vec<(Prog, OwnedFd)>, state: Vec<OwnedFd>) -> Self {
        Attachment {
            cgroup: cgroup.to_path_buf(),
            kind: Kind::Held { links, state },
        }
    }

    /// The capture pinned in `bpffs` for the cgroup v2 directory `cgroup_dir`, by whichever
    /// process attached it; `None` when there is none. `cgroup_dir` is checked as
    /// [`check_cgroup`](crate::check_cgroup) does (the root of a cgroup2 mount is refused).
    pub fn open(bpffs: &Bpffs, cgroup_dir: &Path) -> Result<Option<Self>, EbpfError> {
        let dir = bpffs.dir_of(cgroup_dir)?;
        Ok(dir.exists().then(|| Attachment {
            cgroup: cgroup_dir.to_path_buf(),
            kind: Kind::Pinned {
                bpffs: bpffs.clone(),
                dir,
            },
        }))
    }

    /// The programs `cfg`'s capture links on a cgroup (their names in `bpf/capture.c`), in
    /// attach order.
    pub fn needed(cfg: &CaptureConfig) -> Result<Vec<&'static str>, EbpfError> {
        Ok(wanted(cfg)?.into_iter().map(Prog::name).collect())
    }

    /// Every program's link, as the kernel reports it: its id, its program's id and the
    /// cgroup it is attached to (0: detached).
    pub fn links(&self) -> Result<Vec<Link>, EbpfError> {
        match &self.kind {
            Kind::Pinned { dir, .. } => Ok(pinned_links(dir)),
            Kind::Held { links, .. } => links
                .iter()
                .map(|(p, fd)| {
                    let f = sys::link_info(fd.as_fd()).map_err(|source| EbpfError::Link {
                        program: p.name(),
                        path: None,
                        action: "read",
                        source,
                    })?;
                    Ok(Link {
                        program: p.name(),
                        id: f.id,
                        program_id: f.prog_id,
                        cgroup_id: f.cgroup_id,
                    })
                })
                .collect(),
        }
    }

    /// The programs `cfg`'s capture needs that are not attached to this cgroup now: no link
    /// pinned, or one that no longer runs on the cgroup (detached by another process). Empty
    /// when the capture is complete.
    pub fn missing(&self, cfg: &CaptureConfig) -> Result<Vec<&'static str>, EbpfError> {
        let id = pins::check_cgroup(&self.cgroup)?;
        let links = self.links()?;
        Ok(wanted(cfg)?
            .into_iter()
            .filter(|p| {
                !links
                    .iter()
                    .any(|l| l.program == p.name() && l.cgroup_id == id)
            })
            .map(Prog::name)
            .collect())
    }

    /// Unpin the links that no longer run on this cgroup (detached by another process), so
    /// that the next [`EbpfCapture::install`](crate::EbpfCapture::install) links those
    /// programs anew (a detached link cannot be given a program); the programs unpinned.
    /// Live links and the maps stay.
    pub fn unpin_detached(&self) -> Result<Vec<&'static str>, EbpfError> {
        let Kind::Pinned { dir, .. } = &self.kind else {
            return Ok(Vec::new());
        };
        let id = pins::check_cgroup(&self.cgroup)?;
        let mut out = Vec::new();
        for l in pinned_links(dir) {
            if l.cgroup_id != id {
                if let Some(p) = PROGRAMS.iter().find(|p| p.name() == l.program) {
                    pins::unlink(&dir.join(p.link_pin()))?;
                    out.push(l.program);
                }
            }
        }
        Ok(out)
    }

    /// The cgroup directory the programs are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The bpffs directory holding its links and maps (`<bpffs>/nftmesh/<cgroup inode>`), if it
    /// is pinned.
    pub fn pin_dir(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Pinned { dir, .. } => Some(dir),
            Kind::Held { .. } => None,
        }
    }

    /// The programs attached (their names in `bpf/capture.c`), in attach order.
    pub fn programs(&self) -> Vec<&'static str> {
        match &self.kind {
            Kind::Pinned { dir, .. } => PROGRAMS
                .iter()
                .filter(|p| dir.join(p.link_pin()).exists())
                .map(|p| p.name())
                .collect(),
            Kind::Held { links, .. } => links.iter().map(|(p, _)| p.name()).collect(),
        }
    }

    /// How many connections the maps of original destinations hold now.
    pub fn tracked(&self) -> Result<Tracked, EbpfError> {
        match &self.kind {
            Kind::Pinned { dir, .. } => maps::pinned_counts(dir),
            Kind::Held { state, .. } => maps::counts_by_fd(state),
        }
    }

    /// Detach every program, connect4 first (no new redirects), and remove the pins and the
    /// directory (and `nftmesh/` when it is left empty): nothing of the capture is left in
    /// bpffs or on the cgroup. Each link is detached outright (`BPF_LINK_DETACH`), even if
    /// another process still holds it open. Connections redirected before stay with the
    /// proxy. Everything is attempted even if one step fails; the first error is returned.
    ///
    /// A pinned capture is removed holding the cgroup's lock (taken here, waiting at most
    /// [`LOCK_WAIT`](crate::LOCK_WAIT)), so no install or removal of the same cgroup by another
    /// process interleaves with it; a cgroup that is gone has no lock to take.
    pub fn remove(self) -> Result<(), EbpfError> {
        self.remove_as(None)
    }

    /// [`Attachment::remove`]; `locked` when the caller holds the cgroup's lock already.
    pub(crate) fn remove_as(self, locked: Option<&CgroupLock>) -> Result<(), EbpfError> {
        let (bpffs, dir) = match self.kind {
            Kind::Pinned { bpffs, dir } => (bpffs, dir),
            Kind::Held { links, .. } => {
                let mut first = Ok(());
                for (p, link) in links.iter().rev() {
                    if let Err(e) = sys::link_detach(link.as_fd()) {
                        first = first.and(Err(EbpfError::Link {
                            program: p.name(),
                            path: None,
                            action: "detach",
                            source: e,
                        }));
                    }
                }
                return first;
            }
        };
        // A cgroup already gone has no lock to take (and no installer to wait for).
        let _lock = match locked {
            Some(_) => None,
            None => CgroupLock::take_unless_gone(&self.cgroup)?,
        };
        remove_pins(&bpffs, &dir)
    }
}

/// Detach every link pinned in `dir`, connect4 first, and remove the pins, the directory and
/// `nftmesh/` when it is left empty. What others pinned in subdirectories of `dir` (sk_msg
/// acceleration's `accel/`, the inbound capture's `inbound/`) goes first: their links (pins
/// named `link_*`) detached, every pin removed, the subdirectory too. Everything is attempted;
/// the first error is returned.
pub(crate) fn remove_pins(bpffs: &Bpffs, dir: &Path) -> Result<(), EbpfError> {
    let dir = dir.to_path_buf();
    let mut first = Ok(());
    let mut note = |r: Result<(), EbpfError>| {
        if let Err(e) = r {
            first = std::mem::replace(&mut first, Ok(())).and(Err(e));
        }
    };
    for sub in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let sub = sub.path();
        if sub.is_dir() {
            remove_subdir(&sub, &mut note);
        }
    }
    {
        for p in PROGRAMS.iter().rev() {
            note(unlink_program(&dir, *p));
        }
        // The maps, and whatever else is pinned there.
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    note(pins::unlink(&entry.path()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => note(Err(EbpfError::Pin {
                path: dir.clone(),
                action: "read",
                source,
            })),
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => note(Err(EbpfError::Pin {
                path: dir.clone(),
                action: "remove",
                source,
            })),
        }
        // Another capture's directory may be there: then it stays.
        let _ = std::fs::remove_dir(bpffs.top());
    }
    first
}

/// Detach the link of `p` pinned in `dir` and remove its pin, if it is pinned.
fn unlink_program(dir: &Path, p: Prog) -> Result<(), EbpfError> {
    unlink_link(dir.join(p.link_pin()), p.name())
}

/// Detach the link of `program` pinned at `pin` and remove the pin, if it is pinned.
pub(crate) fn unlink_link(pin: PathBuf, program: &'static str) -> Result<(), EbpfError> {
    let link_err = |action, source| EbpfError::Link {
        program,
        path: Some(pin.clone()),
        action,
        source,
    };
    let detached = match sys::obj_get(&pin) {
        Ok(link) => sys::link_detach(link.as_fd()).map_err(|e| link_err("detach", e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(link_err("open", e)),
    };
    // Unpinned, the link goes with the last file descriptor even if the detach failed.
    let unpinned = pins::unlink(&pin);
    detached.and(unpinned)
}

/// Detach the links pinned in `sub` (`link_*`), unpin everything there and remove it.
pub(crate) fn remove_subdir(sub: &Path, note: &mut impl FnMut(Result<(), EbpfError>)) {
    let entries: Vec<PathBuf> = std::fs::read_dir(sub)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    for pin in &entries {
        let is_link = pin
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("link_"));
        if !is_link {
            continue;
        }
        let detached = sys::obj_get(pin).and_then(|link| sys::link_detach(link.as_fd()));
        match detached {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => note(Err(EbpfError::Pin {
                path: pin.clone(),
                action: "detach",
                source,
            })),
        }
    }
    for pin in &entries {
        note(pins::unlink(pin));
    }
    if let Err(source) = std::fs::remove_dir(sub) {
        if source.kind() != std::io::ErrorKind::NotFound {
            note(Err(EbpfError::Pin {
                path: sub.to_path_buf(),
                action: "remove",
                source,
            }));
        }
    }
}
