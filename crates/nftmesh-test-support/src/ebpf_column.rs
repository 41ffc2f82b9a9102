//! The eBPF column of the traffic tables: the same rows, with the capture installed by
//! `nftmesh::ebpf::EbpfBackend` (outbound by BPF programs on a cgroup, inbound by nf_tables).
//!
//! A cgroup holds whole processes, so the rows cannot come from the test runner's threads: the
//! test runs again as a child process (this test binary, `--exact` the same test) that moves
//! itself into a cgroup the parent created, runs the rows with [`Setup::Ebpf`] and prints them;
//! the parent reads them back, checks that nothing is left pinned and removes the cgroup. The
//! programs apply in the pod's network namespace only, so the child's connections from the
//! peer's namespace (same cgroup) are not captured. Every wait is bounded and the only process
//! killed is that child.
//!
//! [`Setup::Ebpf`]: crate::pods::Setup::Ebpf

use crate::bpffs::TestBpffs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where the child installs: the cgroup it joined and the BPF file system to pin in.
#[derive(Debug, Clone)]
pub struct Target {
    /// The cgroup v2 directory (the child's own).
    pub cgroup: PathBuf,
    /// The test's BPF file system.
    pub bpffs: PathBuf,
    /// How inbound is captured.
    pub inbound: nftmesh::ebpf::EbpfInbound,
}

/// Tells a test binary it runs as an eBPF-column child: `cgroup|bpffs|inbound`.
const ENV: &str = "NFTMESH_TRAFFIC_EBPF_CHILD";
/// Marks a row on the child's standard output.
const MARK: &str = "nftmesh-ebpf-row\t";
/// How long the child may run.
const LIMIT: Duration = Duration::from_secs(120);

/// In a child: join its cgroup and say where to install; `None` in the parent.
pub fn child() -> Option<Target> {
    let spec = std::env::var(ENV).ok()?;
    let mut parts = spec.split('|');
    let (cgroup, bpffs, inbound) = (
        parts.next().expect("cgroup"),
        parts.next().expect("bpffs"),
        parts.next().expect("inbound"),
    );
    let inbound = match inbound {
        "sk-lookup" => nftmesh::ebpf::EbpfInbound::SkLookup,
        _ => nftmesh::ebpf::EbpfInbound::Nftables,
    };
    let procs = Path::new(cgroup).join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .unwrap_or_else(|e| panic!("join {}: {e}", procs.display()));
    Some(Target {
        cgroup: cgroup.into(),
        bpffs: bpffs.into(),
        inbound,
    })
}

/// In a child: hand the rows to the parent.
pub fn print_rows(rows: &[(&str, String)]) {
    for (row, seen) in rows {
        println!("{MARK}{}\t{}", one_line(row), one_line(seen));
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\t', '\n'], " ")
}

/// Why the eBPF column cannot run here, if it cannot (no cgroup2 mount, no bpffs).
pub fn unavailable() -> Option<String> {
    if cgroup2_mount().is_none() {
        return Some("no cgroup2 file system is mounted (see /proc/mounts)".into());
    }
    TestBpffs::mount("probe").err()
}

/// In the parent: run `test` (this binary's test of that exact name) as a child in a cgroup
/// of its own; the rows it printed. Panics with the child's output if it fails, runs over
/// time, leaves anything pinned, or prints no row.
pub fn column(test: &str) -> Vec<(String, String)> {
    column_with(test, nftmesh::ebpf::EbpfInbound::Nftables)
}

/// [`column`], with inbound captured as `inbound` says.
pub fn column_with(test: &str, inbound: nftmesh::ebpf::EbpfInbound) -> Vec<(String, String)> {
    let bpffs = TestBpffs::mount("traffic").unwrap_or_else(|e| panic!("bpffs: {e}"));
    let cgroup = TestCgroup::create();
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(
            ENV,
            format!(
                "{}|{}|{}",
                cgroup.0.display(),
                bpffs.path().display(),
                match inbound {
                    nftmesh::ebpf::EbpfInbound::SkLookup => "sk-lookup",
                    _ => "nftables",
                }
            ),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        match child.try_wait().expect("wait for the child") {
            Some(status) => break Some(status),
            None if Instant::now() > deadline => {
                // Our own child, by its handle.
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("the eBPF column of {test} failed ({s}):\n{out}\n{err}"),
        None => panic!("the eBPF column of {test} ran over {LIMIT:?}:\n{out}\n{err}"),
    }
    assert!(
        !bpffs.has_pins(),
        "the eBPF column of {test} left pins in {}",
        bpffs.path().display()
    );
    let rows: Vec<(String, String)> = out
        .lines()
        // libtest's `test NAME ... ` may start the first row's line.
        .filter_map(|l| l.find(MARK).map(|at| &l[at + MARK.len()..]))
        .map(|l| {
            let (row, seen) = l.split_once('\t').unwrap_or((l, ""));
            (row.to_string(), seen.to_string())
        })
        .collect();
    assert!(
        !rows.is_empty(),
        "{test}'s child printed no row:\n{out}\n{err}"
    );
    rows
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup/unified` in the hybrid layout).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// A cgroup v2 directory a test created (`<mount>/nftmesh-traffic-<pid>-<n>`), removed on drop
/// (once its processes are gone; bounded).
pub struct TestCgroup(pub PathBuf);

impl TestCgroup {
    /// Create a fresh one.
    pub fn create() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let mount = cgroup2_mount().expect("a cgroup2 mount");
        let path = mount.join(format!(
            "nftmesh-traffic-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TestCgroup(path)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = std::fs::remove_dir(&self.0) {
            if Instant::now() > deadline {
                eprintln!("cannot remove {}: {e}", self.0.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
