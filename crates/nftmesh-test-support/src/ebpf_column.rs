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
use crate::cgroup::{cgroup2_mount, TestCgroup};
use crate::child::{run_bounded, Finished};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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

/// [`column()`], with inbound captured as `inbound` says.
pub fn column_with(test: &str, inbound: nftmesh::ebpf::EbpfInbound) -> Vec<(String, String)> {
    let bpffs = TestBpffs::mount("traffic").unwrap_or_else(|e| panic!("bpffs: {e}"));
    let cgroup = TestCgroup::create("traffic");
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
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
        );
    let Finished { status, out, err } = run_bounded(&mut cmd, LIMIT);
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
