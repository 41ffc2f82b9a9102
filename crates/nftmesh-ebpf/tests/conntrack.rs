//! Conntrack entries per captured connection, for both backends: N connections to a peer
//! reached over a veth interface, captured to the proxy stand-in on 15001, in a network
//! namespace and a cgroup of the test's own.
//!
//! - nf_tables: `nftmesh::Capture::new(&sidecar)` installed in the namespace with
//!   `Namespace::current().install()`; REDIRECT needs conntrack, so every connection leaves an
//!   entry (it outlives the close: TIME_WAIT / CLOSE timeouts).
//! - eBPF: the programs attached to the cgroup, no nf_tables table in the namespace: nothing
//!   registers conntrack's hooks there, so no entry at all.
//!
//! Counted two ways, inside the namespace: `/proc/sys/net/netfilter/nf_conntrack_count` (the
//! namespace's own count) and the lines of `/proc/net/nf_conntrack` (the namespace's entries)
//! whose original direction goes to the peer's port. Each run is a child process (this test
//! binary again, [`CHILD_ENV`] naming the phase) started by `unshare --net`, which joins the
//! cgroup (a cgroup holds whole processes, so the test runner stays out of it). Needs root;
//! otherwise `SKIP: why` (a failure under `CI=true`).

use nftmesh_ebpf::EbpfCapture;
use nftmesh_model::config::CaptureConfig;
use nftmesh_netlink::probe::original_dst;
use nftmesh_test_support::skip;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Tells this binary it runs as a child, and which phase: `ebpf:<cgroup>` or
/// `nftables:<cgroup>`.
const CHILD_ENV: &str = "NFTMESH_EBPF_CONNTRACK_CHILD";
/// Connections per backend.
const N: usize = 20;
/// The peer the app connects to: out of `nm0` (a veth), so nf_tables sees it leave
/// over a non-`lo` interface, as a remote peer's connection does.
const PEER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 8080);
const PROXY_PORT: u16 = 15001;
/// How long a connect, accept or read may take; how long a child may run.
const WAIT: Duration = Duration::from_secs(3);
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// Not a test of its own: the children's entry point.
#[test]
fn child() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (phase, cgroup) = spec.split_once(':').expect("phase:cgroup");
        run_phase(phase, Path::new(cgroup));
    }
}

#[test]
fn ebpf_adds_no_conntrack_entry_nftables_one_per_connection() {
    if let Some(why) = unavailable() {
        skip(&why);
        return;
    }
    let cgroup = TestCgroup::create();
    // nf_tables: no program on the cgroup; the child installs the capture in its namespace.
    let nft = run_child("nftables", cgroup.path());
    // eBPF: the programs on the cgroup; the child's namespace has no table.
    let mut capture = EbpfCapture::new(&CaptureConfig::sidecar())
        .unwrap_or_else(|e| panic!("load the capture: {e}"));
    let attached = capture
        .attach(cgroup.path())
        .unwrap_or_else(|e| panic!("attach: {e}"));
    let ebpf = run_child("ebpf", cgroup.path());
    attached.remove().expect("detach");
    eprintln!("{N} captured connections: nf_tables {nft}, eBPF {ebpf}");
    assert_eq!(
        ebpf,
        Counted {
            count: 0,
            listed: 0
        },
        "the eBPF capture added conntrack entries"
    );
    assert!(
        nft.count >= N as u64 && nft.listed == N,
        "nf_tables REDIRECT: one entry per connection expected, {nft}"
    );
}

/// What a child counted: the growth of `nf_conntrack_count`, and the entries toward the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counted {
    count: u64,
    listed: usize,
}

impl std::fmt::Display for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "+{} in nf_conntrack_count, {} entries to {PEER}",
            self.count, self.listed
        )
    }
}

/// The line a child prints its count on, for the parent to read.
const RESULT: &str = "conntrack-result";

// ---- The child's side ----

fn sh(args: &[&str]) {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn conntrack_count() -> u64 {
    let path = "/proc/sys/net/netfilter/nf_conntrack_count";
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.trim().parse().expect("a count")
}

/// Entries of this namespace whose original direction goes to the peer.
fn entries_to_peer() -> usize {
    let path = "/proc/net/nf_conntrack";
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (dst, dport) = (
        format!("dst={} ", PEER.ip()),
        format!("dport={} ", PEER.port()),
    );
    text.lines()
        .filter(|l| {
            // The first dst=/dport= of a line are the original direction's.
            l.find("dst=").is_some_and(|i| l[i..].starts_with(&dst))
                && l.find("dport=").is_some_and(|i| l[i..].starts_with(&dport))
        })
        .count()
}

fn run_phase(phase: &str, cgroup: &Path) {
    sh(&["ip", "link", "set", "lo", "up"]);
    // A veth pair (this kernel has no dummy interfaces): 10.77.0.0/24 routes out of nm0.
    sh(&[
        "ip", "link", "add", "nm0", "type", "veth", "peer", "name", "nm1",
    ]);
    sh(&["ip", "addr", "add", "10.77.0.1/24", "dev", "nm0"]);
    sh(&["ip", "link", "set", "nm0", "up"]);
    sh(&["ip", "link", "set", "nm1", "up"]);
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .unwrap_or_else(|e| panic!("join {}: {e}", procs.display()));
    // The proxy stand-in, in the cgroup (its accepted sockets are the cgroup's).
    let proxy = TcpListener::bind((Ipv4Addr::UNSPECIFIED, PROXY_PORT)).expect("bind 15001");
    let _installed = match phase {
        "nftables" => {
            let ns = nftmesh::Namespace::current().expect("this namespace");
            let capture = nftmesh::Capture::new(&CaptureConfig::sidecar()).expect("compile");
            ns.install(&capture).expect("install the nf_tables capture");
            Some(ns)
        }
        "ebpf" => {
            let o = Command::new("nft")
                .args(["list", "tables"])
                .output()
                .expect("nft");
            assert!(
                o.status.success() && o.stdout.is_empty(),
                "a table in the eBPF namespace: {}",
                String::from_utf8_lossy(&o.stdout)
            );
            None
        }
        other => panic!("unknown phase {other}"),
    };
    let before = conntrack_count();
    proxy.set_nonblocking(true).expect("non-blocking");
    for i in 0..N {
        let mut app = TcpStream::connect_timeout(&SocketAddr::V4(PEER), WAIT)
            .unwrap_or_else(|e| panic!("connection {i} to {PEER}: {e}"));
        let deadline = Instant::now() + WAIT;
        let mut seen = loop {
            match proxy.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => panic!("connection {i}: the proxy accepted nothing: {e}"),
            }
        };
        seen.set_nonblocking(false).expect("blocking");
        assert_eq!(
            original_dst(&seen),
            Some(SocketAddr::V4(PEER)),
            "connection {i}: SO_ORIGINAL_DST at the proxy ({phase})"
        );
        app.write_all(b"x").expect("write");
        let mut b = [0u8; 1];
        seen.set_read_timeout(Some(WAIT)).expect("timeout");
        seen.read_exact(&mut b).expect("read at the proxy");
    }
    println!(
        "{RESULT} {} {}",
        conntrack_count().saturating_sub(before),
        entries_to_peer()
    );
}

// ---- The parent's side ----

/// Why this test cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: BPF programs on a cgroup and nf_tables need root".into());
    }
    if cgroup2_mount().is_none() {
        return Some("no cgroup2 file system is mounted (see /proc/mounts)".into());
    }
    if !Path::new("/proc/sys/net/netfilter/nf_conntrack_count").exists() {
        return Some("nf_conntrack is not loaded (no nf_conntrack_count)".into());
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

fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// `<cgroup2 mount>/nftmesh-conntrack-<pid>`, removed on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn create() -> Self {
        let mount = cgroup2_mount().expect("checked by unavailable()");
        let path = mount.join(format!("nftmesh-conntrack-{}", std::process::id()));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TestCgroup(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The children have exited; the kernel may take a moment to let the cgroup go.
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

/// Run `phase` in a new network namespace, joining `cgroup`; what it counted. Panics with its
/// output unless it succeeds within [`CHILD_LIMIT`] (killing only that child).
fn run_child(phase: &str, cgroup: &Path) -> Counted {
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Command::new("unshare")
        .args(["--net", "--"])
        .arg(exe)
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{phase}:{}", cgroup.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + CHILD_LIMIT;
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(s) => break Some(s),
            None if Instant::now() > deadline => {
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
        Some(s) => panic!("child {phase} failed ({s}):\n{out}\n{err}"),
        None => panic!("child {phase} did not finish within {CHILD_LIMIT:?}:\n{out}\n{err}"),
    }
    let line = out
        .lines()
        // libtest prints `test child ... ` on the same line first.
        .find_map(|l| l.find(RESULT).map(|i| &l[i + RESULT.len()..]))
        .unwrap_or_else(|| panic!("child {phase} printed no result:\n{out}\n{err}"));
    let mut f = line
        .split_whitespace()
        .map(|v| v.parse::<u64>().expect("a number"));
    Counted {
        count: f.next().expect("count"),
        listed: f.next().expect("listed") as usize,
    }
}
