//! Conntrack entries per captured connection, for both backends: N connections to a peer
//! reached over a veth interface, captured to the proxy stand-in on 15001, in a network
//! namespace and a cgroup of the test's own.
//!
//! Outbound, (a) nf_tables, (b) eBPF alone, (c) eBPF with the nf_tables inbound table that
//! `nftmesh::ebpf::EbpfBackend::inbound` installs beside it: its nat chains register
//! conntrack's hooks in the namespace, so the redirected loopback leg of every captured
//! connection is tracked again (one entry each, toward 127.0.0.1:15001, never NATed).
//!
//! Inbound (`inbound_*`), N connections from a client namespace over a veth to the pod's
//! 10.78.0.1:8080, each accepted by the proxy stand-in on 15006 (uid 1337), which reads the
//! original destination and opens its upstream leg to the app from 127.0.0.6 as Istio's
//! inbound passthrough does, with the eBPF outbound programs on the cgroup in both: (d) the
//! nf_tables inbound table (REDIRECT), (e) the sk_lookup steering of `InboundCapture`.
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

mod inbound_support;
mod support;

use nftmesh_ebpf::{EbpfCapture, InboundCapture};
use nftmesh_model::config::CaptureConfig;
use nftmesh_netlink::probe::original_dst;
use nftmesh_test_support::skip;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
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
    let cgroup = TestCgroup::create("ebpf");
    // nf_tables: no program on the cgroup; the child installs the capture in its namespace.
    let nft = counted("nftables", cgroup.path());
    // eBPF: the programs on the cgroup; the child's namespace has no table.
    let mut capture = EbpfCapture::new(&CaptureConfig::sidecar())
        .unwrap_or_else(|e| panic!("load the capture: {e}"));
    let attached = capture
        .attach(cgroup.path())
        .unwrap_or_else(|e| panic!("attach: {e}"));
    let ebpf = counted("ebpf", cgroup.path());
    // eBPF with the inbound table the eBPF backend installs beside it.
    let eroded = counted("ebpf+inbound-table", cgroup.path());
    attached.remove().expect("detach");
    eprintln!(
        "{N} captured outbound connections to {PEER}: (a) nf_tables {nft}, (b) eBPF {ebpf}, \
         (c) eBPF + nf_tables inbound table {eroded}"
    );
    eprintln!(
        "conntrack entries per outbound connection: (a) {:.2}, (b) {:.2}, (c) {:.2}",
        nft.count as f64 / N as f64,
        ebpf.count as f64 / N as f64,
        eroded.count as f64 / N as f64
    );
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
    // Exactly one per connection: its loopback leg to 127.0.0.1:15001 (the original direction
    // never goes to the peer: connect4 rewrote it before the first packet).
    assert_eq!(
        eroded,
        Counted {
            count: N as u64,
            listed: 0
        },
        "eBPF with the nf_tables inbound table: one entry per connection expected"
    );
}

#[test]
fn inbound_nftables_redirect_tracks_both_legs_sk_lookup_none() {
    if let Some(why) = unavailable() {
        skip(&why);
        return;
    }
    let cgroup = TestCgroup::create("ebpf");
    let mut capture = EbpfCapture::new(&CaptureConfig::sidecar())
        .unwrap_or_else(|e| panic!("load the capture: {e}"));
    let attached = capture
        .attach(cgroup.path())
        .unwrap_or_else(|e| panic!("attach: {e}"));
    let nft = counted("inbound-nftables", cgroup.path());
    let sk_lookup = counted("inbound-sk-lookup", cgroup.path());
    attached.remove().expect("detach");
    eprintln!(
        "{N} inbound connections to 10.78.0.1:8080 (+ the proxy's upstream leg each): \
         (d) nf_tables REDIRECT {nft}, (e) sk_lookup {sk_lookup}"
    );
    eprintln!(
        "conntrack entries per inbound connection: (d) {:.2}, (e) {:.2}",
        nft.count as f64 / N as f64,
        sk_lookup.count as f64 / N as f64
    );
    // Both legs tracked: the client's connection (REDIRECTed) and the upstream leg from
    // 127.0.0.6 (not NATed, tracked because the nat table is there); both go to 10.78.0.1:8080.
    assert_eq!(
        nft,
        Counted {
            count: 2 * N as u64,
            listed: 2 * N
        },
        "nf_tables inbound: two entries per inbound connection expected"
    );
    assert_eq!(
        sk_lookup,
        Counted {
            count: 0,
            listed: 0
        },
        "the sk_lookup inbound capture added conntrack entries"
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
            "+{} in nf_conntrack_count, {} entries toward the destination",
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
    entries_to(PEER)
}

/// Entries of this namespace whose original direction goes to `to`.
fn entries_to(to: SocketAddrV4) -> usize {
    let path = "/proc/net/nf_conntrack";
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (dst, dport) = (format!("dst={} ", to.ip()), format!("dport={} ", to.port()));
    text.lines()
        .filter(|l| {
            // The first dst=/dport= of a line are the original direction's.
            l.find("dst=").is_some_and(|i| l[i..].starts_with(&dst))
                && l.find("dport=").is_some_and(|i| l[i..].starts_with(&dport))
        })
        .count()
}

fn run_phase(phase: &str, cgroup: &Path) {
    if phase.starts_with("inbound-") {
        run_inbound_phase(phase, cgroup);
        return;
    }
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
        "ebpf+inbound-table" => {
            let ns = nftmesh::Namespace::current().expect("this namespace");
            let inbound = nftmesh::ebpf::EbpfBackend::inbound(&CaptureConfig::sidecar())
                .expect("the eBPF backend's inbound table");
            ns.install(&inbound).expect("install the inbound table");
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

/// An inbound phase: the pod (this namespace, its listeners in the cgroup) and a client
/// namespace; `inbound-nftables` installs the eBPF backend's nf_tables inbound table,
/// `inbound-sk-lookup` attaches the sk_lookup steering. Prints the growth of the count and the
/// entries toward the app's port.
fn run_inbound_phase(phase: &str, cgroup: &Path) {
    use inbound_support::{
        accept_within, connect_from, current_cgroup, join, leave, listen_as, pod_network, ClientNs,
        APP_UID, INBOUND_PORT, PASSTHROUGH, POD, PROXY_UID,
    };
    let client = ClientNs::create();
    pod_network(&client);
    let home = current_cgroup();
    let cfg = CaptureConfig::sidecar();
    let mut _steering = None;
    let _ns = match phase {
        "inbound-nftables" => {
            let ns = nftmesh::Namespace::current().expect("this namespace");
            let inbound = nftmesh::ebpf::EbpfBackend::inbound(&cfg).expect("the inbound table");
            ns.install(&inbound).expect("install the inbound table");
            Some(ns)
        }
        "inbound-sk-lookup" => {
            let mut c = InboundCapture::new(&cfg).expect("load the inbound capture");
            let a = c
                .attach(cgroup, Path::new("/proc/self/ns/net"))
                .expect("attach the inbound capture");
            _steering = Some((c, a));
            None
        }
        other => panic!("unknown phase {other}"),
    };
    let app_at = SocketAddrV4::new(POD, 8080);
    join(cgroup);
    let app = listen_as(APP_UID, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8080)));
    let proxy = listen_as(
        PROXY_UID,
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, INBOUND_PORT)),
    );
    // The client's sockets must not be the cgroup's (they would count as the pod's own).
    leave(&home);
    let before = conntrack_count();
    for i in 0..N {
        let mut c = client
            .connect(SocketAddr::V4(app_at))
            .unwrap_or_else(|e| panic!("inbound connection {i}: {e}"));
        let mut seen = accept_within(&proxy, WAIT)
            .unwrap_or_else(|| panic!("inbound connection {i}: the proxy accepted nothing"));
        assert_eq!(
            original_dst(&seen),
            Some(SocketAddr::V4(app_at)),
            "inbound connection {i}: SO_ORIGINAL_DST at the proxy ({phase})"
        );
        // The proxy's upstream leg, as Istio's inbound passthrough: uid 1337, from 127.0.0.6.
        let mut up = std::thread::spawn(move || {
            nftmesh_netlink::probe::become_user(PROXY_UID, PROXY_UID)?;
            connect_from(IpAddr::V4(PASSTHROUGH), SocketAddr::V4(app_at))
        })
        .join()
        .expect("upstream thread")
        .unwrap_or_else(|e| panic!("upstream leg {i}: {e}"));
        let mut at_app = accept_within(&app, WAIT)
            .unwrap_or_else(|| panic!("upstream leg {i}: the app accepted nothing"));
        let mut b = [0u8; 1];
        c.write_all(b"x").expect("write");
        seen.set_read_timeout(Some(WAIT)).expect("timeout");
        seen.read_exact(&mut b).expect("read at the proxy");
        up.write_all(b"y").expect("write upstream");
        at_app.set_read_timeout(Some(WAIT)).expect("timeout");
        at_app.read_exact(&mut b).expect("read at the app");
    }
    println!(
        "{RESULT} {} {}",
        conntrack_count().saturating_sub(before),
        entries_to(app_at)
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
