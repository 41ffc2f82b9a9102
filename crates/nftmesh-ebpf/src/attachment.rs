//! A capture pinned in bpffs for one cgroup: linking (or relinking) the programs, reading the
//! pinned state from any process, and removing it.

use crate::capture::Tracked;
use crate::error::EbpfError;
use crate::maps;
use crate::pins::{self, Bpffs};
use crate::programs::{self, Prog, PROGRAMS};
use crate::sys;
use aya::Ebpf;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
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

impl Attachment {
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
    /// process attached it; `None` when there is none.
    pub fn open(bpffs: &Bpffs, cgroup_dir: &Path) -> Result<Option<Self>, EbpfError> {
        let dir = bpffs.dir_of(cgroup_dir)?;
        Ok(dir
            .exists()
            .then(|| Attachment::pinned(bpffs, cgroup_dir, dir)))
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
    pub fn remove(self) -> Result<(), EbpfError> {
        let mut first = Ok(());
        let mut note = |r: Result<(), EbpfError>| {
            if let Err(e) = r {
                first = std::mem::replace(&mut first, Ok(())).and(Err(e));
            }
        };
        let (bpffs, dir) = match self.kind {
            Kind::Pinned { bpffs, dir } => (bpffs, dir),
            Kind::Held { links, .. } => {
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
        };
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
        first
    }
}

/// Detach the link of `p` pinned in `dir` and remove its pin, if it is pinned.
fn unlink_program(dir: &Path, p: Prog) -> Result<(), EbpfError> {
    let pin = dir.join(p.link_pin());
    let link_err = |action, source| EbpfError::Link {
        program: p.name(),
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
