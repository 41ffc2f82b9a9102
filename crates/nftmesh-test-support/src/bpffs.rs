//! A BPF file system of a test's own, for the eBPF backend's pins: mounted at a fresh temp
//! directory, unmounted (dropping whatever is still pinned there) when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A bpffs instance mounted at a temp directory; unmounted and removed on drop.
pub struct TestBpffs(pub PathBuf);

impl TestBpffs {
    /// Mount one at `<tmp>/nftmesh-<tag>-bpffs-<pid>-<n>`; why not, if it cannot.
    pub fn mount(tag: &str) -> Result<Self, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nftmesh-{tag}-bpffs-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let o = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !o.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!(
                "mount -t bpf: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(TestBpffs(dir))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Whether anything of nftmesh is pinned here.
    pub fn has_pins(&self) -> bool {
        self.0.join("nftmesh").exists()
    }
}

impl Drop for TestBpffs {
    fn drop(&mut self) {
        if Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success())
        {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
}
