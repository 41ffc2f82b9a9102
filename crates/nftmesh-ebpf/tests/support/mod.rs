//! What the kernel tests share: a cgroup v2 directory of their own, and a child process (this
//! test binary run again, for one phase) in a network namespace of its own.
//!
//! A cgroup holds whole processes (threads only in threaded cgroups), so the connections under
//! test come from a child process, never from the test runner: the child starts outside the
//! cgroup, moves itself in (writing its pid to `cgroup.procs`), and exits; the directory is
//! removed afterwards. Every wait is bounded, and the only process ever killed is that child.
#![allow(dead_code)]

pub mod child;

use nftmesh_test_support::child::run_bounded;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The environment variable that tells this test binary it runs as a child, and which phase.
pub const CHILD_ENV: &str = "NFTMESH_EBPF_CHILD";
/// How long a child may run.
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// Why these tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some(
            "not root: attaching BPF programs to a cgroup needs CAP_BPF and CAP_NET_ADMIN".into(),
        );
    }
    if cgroup2_mount().is_none() {
        return Some("no cgroup2 file system is mounted (see /proc/mounts)".into());
    }
    match Command::new("unshare").args(["--net", "true"]).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "unshare --net fails: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run unshare: {e}")),
    }
}

pub use nftmesh_test_support::cgroup::{cgroup2_mount, TestCgroup};

/// Run `phase` of the child (the test binary's `child` test, which reads [`CHILD_ENV`]) in a
/// new network namespace, with `cgroup` as the cgroup it joins; its standard output. Panics
/// with its output unless it succeeds within [`CHILD_LIMIT`].
pub fn run_child(phase: &str, cgroup: &Path) -> String {
    spawn_child(phase, cgroup, Command::new("unshare").args(["--net", "--"]))
}

/// [`run_child`] in the existing network namespace `netns` (entered with `nsenter --net=`)
/// instead of a new one.
pub fn run_child_in(phase: &str, cgroup: &Path, netns: &Path) -> String {
    let enter = format!("--net={}", netns.display());
    spawn_child(
        phase,
        cgroup,
        Command::new("nsenter").args([enter.as_str(), "--"]),
    )
}

/// A named network namespace this test created (`ip netns add`), deleted on drop.
pub struct TestNetns(String);

impl TestNetns {
    /// Create a fresh one.
    pub fn create() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "nftmesh-ebpf-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let o = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip netns add");
        assert!(o.status.success(), "ip netns add {name}: {o:?}");
        TestNetns(name)
    }

    /// Its path under /var/run/netns.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.0)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Run the test binary's `child` test for `phase` under `wrapper` (which enters or makes the
/// child's network namespace); see [`run_child`].
fn spawn_child(phase: &str, cgroup: &Path, wrapper: &mut Command) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    wrapper
        .arg(exe)
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{phase}:{}", cgroup.display()));
    let done = run_bounded(wrapper, CHILD_LIMIT);
    let (out, err) = (done.out, done.err);
    match done.status {
        Some(s) if s.success() => {}
        Some(s) => panic!("child phase {phase} failed ({s}):\n{out}\n{err}"),
        None => panic!("child phase {phase} did not finish within {CHILD_LIMIT:?}:\n{out}\n{err}"),
    }
    out
}
