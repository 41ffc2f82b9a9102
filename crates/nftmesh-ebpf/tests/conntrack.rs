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

mod support;

use nftmesh_ebpf::EbpfCapture;
use nftmesh_model::config::CaptureConfig;
use nftmesh_netlink::probe::original_dst;
use nftmesh_test_support::skip;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{run_child, TestCgroup, CHILD_ENV};

/// Connections per backend.
const N: usize = 20;
/// The peer the app connects to: out of `nm0` (a veth), so nf_tables sees it leave
/// over a non-`lo` interface, as a remote peer's connection does.
const PEER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 8080);
const PROXY_PORT: u16 = 15001;
/// How long a connect, accept or read may take.
const WAIT: Duration = Duration::from_secs(3);

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
    let nft = counted("nftables", cgroup.path());
    // eBPF: the programs on the cgroup; the child's namespace has no table.
    let mut capture = EbpfCapture::new(&CaptureConfig::sidecar())
        .unwrap_or_else(|e| panic!("load the capture: {e}"));
    let attached = capture
        .attach(cgroup.path())
        .unwrap_or_else(|e| panic!("attach: {e}"));
    let ebpf = counted("ebpf", cgroup.path());
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

/// Why this test cannot run here, if it cannot: the kernel tests' reasons, or no conntrack.
fn unavailable() -> Option<String> {
    support::unavailable().or_else(|| {
        (!Path::new("/proc/sys/net/netfilter/nf_conntrack_count").exists())
            .then(|| "nf_conntrack is not loaded (no nf_conntrack_count)".to_string())
    })
}

/// Run `phase` in a new network namespace, joining `cgroup` (see `support::run_child`); what
/// it counted.
fn counted(phase: &str, cgroup: &Path) -> Counted {
    let out = run_child(phase, cgroup);
    let line = out
        .lines()
        // libtest prints `test child ... ` on the same line first.
        .find_map(|l| l.find(RESULT).map(|i| &l[i + RESULT.len()..]))
        .unwrap_or_else(|| panic!("child {phase} printed no result:\n{out}"));
    let mut f = line
        .split_whitespace()
        .map(|v| v.parse::<u64>().expect("a number"));
    Counted {
        count: f.next().expect("count"),
        listed: f.next().expect("listed") as usize,
    }
}
