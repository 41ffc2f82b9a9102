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
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// The capture attached to one cgroup, as pinned in bpffs: a handle any process can get
/// ([`EbpfCapture::attach`](crate::EbpfCapture::attach) or [`Attachment::open`]). Dropping it
/// changes nothing; [`Attachment::remove`] detaches and unpins everything.
#[derive(Debug)]
pub struct Attachment {
    bpffs: Bpffs,
    cgroup: PathBuf,
    dir: PathBuf,
}

/// Whether `dir` holds a pinned link of any of the programs.
pub(crate) fn linked(dir: &Path) -> bool {
    PROGRAMS.iter().any(|p| dir.join(p.link_pin()).exists())
}

/// Give every program of `bpf` its link on `cgroup`, pinned in `dir`: a pinned link gets the
/// new program in place (`BPF_LINK_UPDATE`), a missing one is created and pinned. In
/// [`PROGRAMS`] order, so on a first install connect4 comes last.
pub(crate) fn link_all(bpf: &mut Ebpf, cgroup: &File, dir: &Path) -> Result<(), EbpfError> {
    for p in PROGRAMS {
        let pin = dir.join(p.link_pin());
        let program = p.name();
        let link_err = |action, source| EbpfError::Link {
            program,
            path: pin.clone(),
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
    pub(crate) fn new(bpffs: &Bpffs, cgroup: &Path, dir: PathBuf) -> Self {
        Attachment {
            bpffs: bpffs.clone(),
            cgroup: cgroup.to_path_buf(),
            dir,
        }
    }

    /// The capture pinned in `bpffs` for the cgroup v2 directory `cgroup_dir`, by whichever
    /// process attached it; `None` when there is none.
    pub fn open(bpffs: &Bpffs, cgroup_dir: &Path) -> Result<Option<Self>, EbpfError> {
        let dir = bpffs.dir_of(cgroup_dir)?;
        Ok(dir
            .exists()
            .then(|| Attachment::new(bpffs, cgroup_dir, dir)))
    }

    /// The cgroup directory the programs are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The bpffs directory holding its links and maps (`<bpffs>/nftmesh/<cgroup inode>`).
    pub fn pin_dir(&self) -> &Path {
        &self.dir
    }

    /// The programs attached (their names in `bpf/capture.c`), in attach order.
    pub fn programs(&self) -> Vec<&'static str> {
        PROGRAMS
            .iter()
            .filter(|p| self.dir.join(p.link_pin()).exists())
            .map(|p| p.name())
            .collect()
    }

    /// How many connections the pinned maps of original destinations hold now.
    pub fn tracked(&self) -> Result<Tracked, EbpfError> {
        maps::pinned_counts(&self.dir)
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
        for p in PROGRAMS.iter().rev() {
            note(self.unlink_program(*p));
        }
        // The maps, and whatever else is pinned there.
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    note(pins::unlink(&entry.path()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => note(Err(EbpfError::Pin {
                path: self.dir.clone(),
                action: "read",
                source,
            })),
        }
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => note(Err(EbpfError::Pin {
                path: self.dir.clone(),
                action: "remove",
                source,
            })),
        }
        // Another capture's directory may be there: then it stays.
        let _ = std::fs::remove_dir(self.bpffs.top());
        first
    }

    /// Detach the link of `p` and remove its pin, if it is pinned.
    fn unlink_program(&self, p: Prog) -> Result<(), EbpfError> {
        let pin = self.dir.join(p.link_pin());
        let link_err = |action, source| EbpfError::Link {
            program: p.name(),
            path: pin.clone(),
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
}
