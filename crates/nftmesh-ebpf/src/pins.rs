//! Where a capture's links and maps live in bpffs: `<bpffs>/nftmesh/<cgroup inode>/`, one
//! directory per attached cgroup, so the capture outlives the process that installed it and
//! another process can find it again. Also what a cgroup must be to get a capture
//! ([`check_cgroup`]: never the root of a cgroup2 mount), the lock that serializes the
//! installers and removers of one cgroup's capture, and finding the pins whose cgroup is gone
//! ([`Bpffs::stale`]).

use crate::error::EbpfError;
use crate::sys;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The directory under the bpffs mount that holds nftmesh's pins.
const TOP: &str = "nftmesh";

/// A mounted BPF file system, where captures are pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bpffs {
    mount: PathBuf,
}

impl Bpffs {
    /// The BPF file system of this mount namespace: `/sys/fs/bpf` if a bpffs is mounted there,
    /// else the first one `/proc/mounts` lists.
    pub fn find() -> Result<Self, EbpfError> {
        let mounts = bpf_mounts()?;
        let sys = Path::new("/sys/fs/bpf");
        let mount = mounts
            .iter()
            .find(|m| m.as_path() == sys)
            .or_else(|| mounts.first())
            .ok_or(EbpfError::NoBpffs)?;
        Ok(Bpffs {
            mount: mount.clone(),
        })
    }

    /// The BPF file system mounted at `mount` (refused unless `/proc/mounts` lists a bpf file
    /// system there).
    pub fn at(mount: &Path) -> Result<Self, EbpfError> {
        if bpf_mounts()?.iter().any(|m| m.as_path() == mount) {
            Ok(Bpffs {
                mount: mount.to_path_buf(),
            })
        } else {
            Err(EbpfError::NotBpffs {
                path: mount.to_path_buf(),
            })
        }
    }

    /// Where it is mounted.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The directory of the capture of `cgroup` (checked, [`check_cgroup`]; it must exist):
    /// named by the cgroup's inode number, which is its cgroup id and, unlike its path, the
    /// same in every cgroup namespace.
    pub(crate) fn dir_of(&self, cgroup: &Path) -> Result<PathBuf, EbpfError> {
        let id = check_cgroup(cgroup)?;
        Ok(self.mount.join(TOP).join(id.to_string()))
    }

    /// The captures pinned here whose cgroup no longer exists: a pin directory is stale when
    /// its cgroup id (its name, and what the kernel reports of each pinned link through
    /// `BPF_OBJ_GET_INFO_BY_FD`) names no directory under any cgroup2 mount of
    /// `/proc/mounts`, and no pinned link is still attached to a cgroup. Directories that
    /// are not nftmesh's (a name that is not a number) are left alone.
    pub fn stale(&self) -> Result<Vec<StalePins>, EbpfError> {
        Ok(self.scan()?.0)
    }

    /// The stale captures, and how many pin directories name a cgroup that is gone while a
    /// link there still reports it (the kernel lets a deleted cgroup's links go shortly
    /// after its `rmdir`: about 20 ms here).
    fn scan(&self) -> Result<(Vec<StalePins>, usize), EbpfError> {
        let top = self.top();
        let entries = match std::fs::read_dir(&top) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(source) => {
                return Err(EbpfError::Pin {
                    path: top,
                    action: "read",
                    source,
                })
            }
        };
        let mut ids: Vec<(PathBuf, u64)> = entries
            .flatten()
            .filter_map(|e| {
                let id = e.file_name().to_str()?.parse::<u64>().ok()?;
                Some((e.path(), id))
            })
            .collect();
        if ids.is_empty() {
            return Ok((Vec::new(), 0));
        }
        ids.sort();
        let live = cgroup_ids()?;
        let (mut out, mut dying) = (Vec::new(), 0);
        for (dir, id) in ids {
            if live.contains(&id) {
                continue;
            }
            let links = crate::attachment::pinned_links(&dir);
            let attached = links
                .iter()
                .any(|l| l.cgroup_id != 0 && live.contains(&l.cgroup_id));
            if attached {
                continue;
            }
            if links.iter().any(|l| l.cgroup_id != 0) {
                dying += 1;
            } else {
                out.push(StalePins {
                    dir,
                    cgroup_id: id,
                    links: links.len(),
                });
            }
        }
        Ok((out, dying))
    }

    /// [`Bpffs::remove_stale`], waiting at most `wait` (in steps of 10 ms) for the links of
    /// cgroups deleted just now to be let go by the kernel, so that their pins go too.
    pub fn remove_stale_within(&self, wait: Duration) -> Result<Vec<StalePins>, EbpfError> {
        let deadline = Instant::now() + wait;
        let mut removed = Vec::new();
        loop {
            let (stale, dying) = self.scan()?;
            for s in stale {
                crate::attachment::remove_pins(self, &s.dir)?;
                removed.push(s);
            }
            if dying == 0 || Instant::now() >= deadline {
                return Ok(removed);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Remove every capture [`Bpffs::stale`] finds (links detached, pins and directory gone):
    /// what was removed. Everything is attempted; the first error is returned.
    pub fn remove_stale(&self) -> Result<Vec<StalePins>, EbpfError> {
        let stale = self.stale()?;
        let mut first = Ok(());
        for s in &stale {
            if let Err(e) = crate::attachment::remove_pins(self, &s.dir) {
                first = first.and(Err(e));
            }
        }
        first.map(|()| stale)
    }

    /// The directory nftmesh's pins are under.
    pub(crate) fn top(&self) -> PathBuf {
        self.mount.join(TOP)
    }
}

/// A capture pinned for a cgroup that no longer exists ([`Bpffs::stale`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StalePins {
    /// Its pin directory (`<bpffs>/nftmesh/<cgroup id>`).
    pub dir: PathBuf,
    /// The id (inode number) of the cgroup it was attached to.
    pub cgroup_id: u64,
    /// How many links were pinned there.
    pub links: usize,
}

/// How long an install or removal waits for another one on the same cgroup.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The lock of one cgroup's capture: an exclusive `flock` on the cgroup directory itself,
/// released when dropped (or when the process exits, however it exits). Each install and
/// removal (of the capture, and of its sk_msg acceleration) takes it for its own duration: a
/// second `flock` by the same process on another descriptor waits like any other, so a step
/// holding it never calls another that takes it. The cgroup directory,
/// not the pin directory: the pin directory is made by the first install and removed by
/// removal (a waiter would hold a lock on a directory no longer there), and bpffs cannot hold
/// a lock file; the cgroup directory is one object for every process, by whatever path or
/// namespace it reaches it, and lives exactly as long as there is something to install on.
#[derive(Debug)]
pub(crate) struct CgroupLock {
    _file: File,
}

impl CgroupLock {
    /// Take the lock of `cgroup`, waiting at most [`LOCK_WAIT`].
    pub(crate) fn take(cgroup: &Path) -> Result<Self, EbpfError> {
        let err = |source| EbpfError::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        };
        let file = File::open(cgroup).map_err(err)?;
        let deadline = Instant::now() + LOCK_WAIT;
        while !sys::try_lock_exclusive(file.as_fd()).map_err(err)? {
            if Instant::now() > deadline {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "another process has been installing or removing this cgroup's capture \
                         for {} s (it holds the flock of the cgroup directory)",
                        LOCK_WAIT.as_secs()
                    ),
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(CgroupLock { _file: file })
    }

    /// [`CgroupLock::take`] for a removal: `None` when the cgroup is already gone (then there
    /// is no installer to wait for).
    pub(crate) fn take_unless_gone(cgroup: &Path) -> Result<Option<Self>, EbpfError> {
        match Self::take(cgroup) {
            Ok(l) => Ok(Some(l)),
            Err(EbpfError::Cgroup { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Check that `dir` can be a pod's cgroup, and return its cgroup id (inode number): an
/// absolute path of an existing directory on a cgroup v2 file system, and neither the root
/// of the cgroup v2 hierarchy nor the root directory of a cgroup2 mount of `/proc/mounts`
/// (programs there would capture every process of the machine, or of the container that
/// mounted it). Anything else is [`EbpfError::Cgroup`] naming the path and why.
pub fn check_cgroup(dir: &Path) -> Result<u64, EbpfError> {
    let refuse = |kind, why: String| EbpfError::Cgroup {
        path: dir.to_path_buf(),
        source: std::io::Error::new(kind, why),
    };
    use std::io::ErrorKind::InvalidInput;
    if !dir.is_absolute() {
        return Err(refuse(InvalidInput, "not an absolute path".into()));
    }
    let file = File::open(dir).map_err(|source| EbpfError::Cgroup {
        path: dir.to_path_buf(),
        source,
    })?;
    let io = |source| EbpfError::Cgroup {
        path: dir.to_path_buf(),
        source,
    };
    let meta = file.metadata().map_err(io)?;
    if !meta.is_dir() {
        return Err(refuse(InvalidInput, "not a directory".into()));
    }
    if sys::fs_type(file.as_fd()).map_err(io)? != sys::CGROUP2_SUPER_MAGIC {
        return Err(refuse(
            InvalidInput,
            "not a directory of a cgroup v2 file system".into(),
        ));
    }
    refuse_root(&file, &cgroup2_mounts()?)
        .map_err(|why| refuse(std::io::ErrorKind::PermissionDenied, why))?;
    Ok(meta.ino())
}

/// Why the cgroup v2 directory `file` is a root that must never get a capture, if it is one:
/// the hierarchy's root (cgroup id 1), or the root directory of one of `mounts`.
pub(crate) fn refuse_root(file: &File, mounts: &[PathBuf]) -> Result<(), String> {
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let root = "capture there would take every process";
    if meta.ino() == 1 {
        return Err(format!(
            "the root of the cgroup v2 hierarchy: {root} of the machine"
        ));
    }
    for m in mounts {
        if let Ok(mm) = std::fs::metadata(m) {
            if (mm.dev(), mm.ino()) == (meta.dev(), meta.ino()) {
                return Err(format!(
                    "the root directory of the cgroup2 mount {}: {root} under it",
                    m.display()
                ));
            }
        }
    }
    Ok(())
}

/// The mount points of cgroup v2 file systems, in `/proc/mounts` order.
pub(crate) fn cgroup2_mounts() -> Result<Vec<PathBuf>, EbpfError> {
    Ok(parse_mounts(&proc_mounts()?, "cgroup2"))
}

/// Every cgroup id (directory inode) under the cgroup2 mounts, at most [`WALK_DEPTH`] deep.
fn cgroup_ids() -> Result<std::collections::HashSet<u64>, EbpfError> {
    let mut ids = std::collections::HashSet::new();
    for m in cgroup2_mounts()? {
        walk(&m, 0, &mut ids);
    }
    Ok(ids)
}

/// How deep [`cgroup_ids`] looks (systemd's and Kubernetes' trees are less than 10 deep).
const WALK_DEPTH: usize = 64;

fn walk(dir: &Path, depth: usize, ids: &mut std::collections::HashSet<u64>) {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() || !ids.insert(meta.ino()) || depth >= WALK_DEPTH {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&e.path(), depth + 1, ids);
        }
    }
}

fn proc_mounts() -> Result<String, EbpfError> {
    let path = Path::new("/proc/mounts");
    std::fs::read_to_string(path).map_err(|source| EbpfError::Pin {
        path: path.to_path_buf(),
        action: "read",
        source,
    })
}

/// The mount points of bpf file systems, in `/proc/mounts` order.
fn bpf_mounts() -> Result<Vec<PathBuf>, EbpfError> {
    Ok(parse_mounts(&proc_mounts()?, "bpf"))
}

fn parse_mounts(text: &str, kind: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == kind).then(|| PathBuf::from(unescape(dir)))
        })
        .collect()
}

/// `/proc/mounts` writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|d| {
            d.iter()
                .all(|c| (b'0'..=b'7').contains(c))
                .then(|| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')))
        });
        match (b[i], octal.and_then(|n| u8::try_from(n).ok())) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Create `dir` and its parents, retrying when a parent vanishes under us (another process
/// removing an empty `nftmesh/` as its last capture goes).
pub(crate) fn create_dir(dir: &Path) -> Result<(), EbpfError> {
    let mut tries = 0;
    loop {
        match std::fs::create_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 10 => tries += 1,
            Err(source) => {
                return Err(EbpfError::Pin {
                    path: dir.to_path_buf(),
                    action: "create",
                    source,
                })
            }
        }
    }
}

/// Remove the file `path` if it exists.
pub(crate) fn unlink(path: &Path) -> Result<(), EbpfError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(EbpfError::Pin {
            path: path.to_path_buf(),
            action: "unpin",
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_mounts_from_proc_mounts() {
        let text = "sysfs /sys sysfs rw 0 0\n\
                    bpf /sys/fs/bpf bpf rw,nosuid,nodev,noexec,relatime,mode=700 0 0\n\
                    none /tmp/with\\040space bpf rw 0 0\n\
                    cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            parse_mounts(text, "cgroup2"),
            vec![PathBuf::from("/sys/fs/cgroup/unified")]
        );
        assert_eq!(
            parse_mounts(text, "bpf"),
            vec![
                PathBuf::from("/sys/fs/bpf"),
                PathBuf::from("/tmp/with space")
            ]
        );
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }
}

#[cfg(test)]
mod cgroup_tests {
    use super::*;

    #[test]
    fn what_is_not_a_cgroup_is_refused_naming_it() {
        for (path, word) in [
            ("relative/dir", "absolute"),
            ("/nonexistent/nftmesh-cgroup", "No such file"),
            ("/proc/self/status", "not a directory"),
            ("/tmp", "cgroup v2"),
        ] {
            let e = check_cgroup(Path::new(path)).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(path) && text.contains(word), "{path}: {text}");
        }
    }

    #[test]
    fn the_root_of_a_cgroup2_mount_is_refused() {
        // The machine's own cgroup2 mounts, only examined (nothing is attached).
        for m in cgroup2_mounts().unwrap() {
            let e = check_cgroup(&m).unwrap_err().to_string();
            assert!(e.contains("every process"), "{}: {e}", m.display());
        }
    }
}
