//! Cgroup v2 directories of a test's own, under the machine's cgroup2 mount (never its root
//! directory), removed when dropped.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where cgroup v2 is mounted (`/sys/fs/cgroup/unified` in the hybrid layout, `/sys/fs/cgroup`
/// in the unified one), from `/proc/mounts`.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// A cgroup directory a test created (`<mount>/nftmesh-<tag>-<pid>-<n>`), removed on drop once
/// its processes are gone (the kernel may take a moment to let an emptied cgroup go; bounded).
#[derive(Debug)]
pub struct TestCgroup(pub PathBuf);

impl TestCgroup {
    /// Create a fresh one; why not, if it cannot be.
    pub fn try_create(tag: &str) -> Result<Self, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let mount =
            cgroup2_mount().ok_or("no cgroup2 file system is mounted (see /proc/mounts)")?;
        let path = mount.join(format!(
            "nftmesh-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        Ok(TestCgroup(path))
    }

    /// [`TestCgroup::try_create`], panicking if it cannot be made.
    pub fn create(tag: &str) -> Self {
        Self::try_create(tag).unwrap_or_else(|e| panic!("a test cgroup: {e}"))
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Its cgroup id (the directory's inode number).
    pub fn id(&self) -> u64 {
        std::fs::metadata(&self.0).map(|m| m.ino()).unwrap_or(0)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.0.exists() {
            match std::fs::remove_dir(&self.0) {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    eprintln!("cannot remove {}: {e}", self.0.display());
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}
