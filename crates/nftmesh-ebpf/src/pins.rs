//! Where a capture's links and maps live in bpffs: `<bpffs>/nftmesh/<cgroup inode>/`, one
//! directory per attached cgroup, so the capture outlives the process that installed it and
//! another process can find it again.

use crate::error::EbpfError;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

    /// The directory of the capture of `cgroup` (which must exist): named by the cgroup's inode
    /// number, which is its cgroup id and, unlike its path, the same in every cgroup namespace.
    pub(crate) fn dir_of(&self, cgroup: &Path) -> Result<PathBuf, EbpfError> {
        let ino = std::fs::metadata(cgroup)
            .map_err(|source| EbpfError::Cgroup {
                path: cgroup.to_path_buf(),
                source,
            })?
            .ino();
        Ok(self.mount.join(TOP).join(ino.to_string()))
    }

    /// The directory nftmesh's pins are under.
    pub(crate) fn top(&self) -> PathBuf {
        self.mount.join(TOP)
    }
}

/// The mount points of bpf file systems, in `/proc/mounts` order.
fn bpf_mounts() -> Result<Vec<PathBuf>, EbpfError> {
    let path = Path::new("/proc/mounts");
    let text = std::fs::read_to_string(path).map_err(|source| EbpfError::Pin {
        path: path.to_path_buf(),
        action: "read",
        source,
    })?;
    Ok(parse_mounts(&text))
}

fn parse_mounts(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "bpf").then(|| PathBuf::from(unescape(dir)))
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
            parse_mounts(text),
            vec![
                PathBuf::from("/sys/fs/bpf"),
                PathBuf::from("/tmp/with space")
            ]
        );
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }
}
