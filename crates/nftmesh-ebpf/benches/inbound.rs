//! Inbound capture, nf_tables REDIRECT against sk_lookup steering, side by side in one run:
//! the same client connections from a client namespace over a veth to the pod's 10.78.0.1:8080,
//! captured to a proxy stand-in listening on 15006 (uid 1337, in the bench's cgroup), with the
//! client and the stand-in threads pinned to the same CPU (`sched_setaffinity`; across CPUs
//! these VMs vary ~10×).
//!
//! Per backend and round: connections/s (connect, the stand-in accepts and closes, the client
//! reads EOF), 64-byte RTT median and p99 (one connection, TCP_NODELAY, echo), and conntrack
//! entries per connection (growth of the pod namespace's `nf_conntrack_count`). Rounds
//! alternate nf_tables (the table `nftmesh::ebpf::EbpfBackend::inbound` installs for the eBPF
//! backend today, i.e. the sidecar's inbound chain) and sk_lookup (`InboundCapture` attached to
//! the cgroup and the pod's namespace, no table), each round in fresh pod and client
//! namespaces; the table shows each figure's median over the rounds and sk_lookup / nf_tables.
//!
//! It runs in a network namespace of its own (`unshare --net`, this binary again) and a cgroup
//! it creates under the cgroup2 mount and removes. `cargo bench -p nftmesh-ebpf --bench
//! inbound` prints the numbers (`NFTMESH_BENCH_ROUNDS`, default 3); under `cargo test` it runs
//! tiny sizes once as a smoke test. Needs root: otherwise `SKIP: why` (a failure under
//! `CI=true`). Asserted is only what must hold, never a timing: the stand-in reads the original
//! destination, and the sk_lookup rounds add no conntrack entry.

mod common;

use common::*;
use nftmesh_ebpf::InboundCapture;
use nftmesh_model::config::CaptureConfig;
use nftmesh_netlink::probe::{become_user, original_dst};
use nftmesh_test_support::skip;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Set in the child (in its own namespace) to the cgroup directory the stand-in joins.
const CHILD: &str = "NFTMESH_EBPF_INBOUND_BENCH_CGROUP";
const POD: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 78, 0, 1), 8080);
const INBOUND_PORT: u16 = 15006;
const PROXY_UID: u32 = 1337;
/// Any single wait (accept, read, connect).
const WAIT: Duration = Duration::from_secs(10);

/// How much one round does.
#[derive(Clone, Copy)]
struct Sizes {
    connections: usize,
    pings: usize,
    rounds: usize,
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes = if bench {
        let rounds = std::env::var("NFTMESH_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        Sizes {
            connections: 5000,
            pings: 20_000,
            rounds,
        }
    } else {
        Sizes {
            connections: 50,
            pings: 200,
            rounds: 1,
        }
    };
    match std::env::var_os(CHILD) {
        Some(cgroup) => child(Path::new(&cgroup), sizes),
        None => parent(bench),
    }
}

// ---- Outside: the namespace and the cgroup ----

fn parent(bench: bool) {
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return skip("not root: BPF programs, nf_tables and namespaces need root");
    }
    let Some(mount) = cgroup2_mount() else {
        return skip("no cgroup2 file system is mounted (see /proc/mounts)");
    };
    let cgroup = mount.join(format!("nftmesh-inbound-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&cgroup) {
        panic!("mkdir {}: {e}", cgroup.display());
    }
    let exe = std::env::current_exe().expect("the bench binary");
    let spawned = Command::new("unshare")
        .args(["--net", "--"])
        .arg(exe)
        .args(std::env::args().skip(1))
        .env(CHILD, &cgroup)
        .spawn();
    let status = match spawned {
        Ok(mut c) => {
            let limit = Duration::from_secs(if bench { 1200 } else { 120 });
            let deadline = Instant::now() + limit;
            loop {
                match c.try_wait().expect("wait for the bench") {
                    Some(s) => break Some(s),
                    None if Instant::now() > deadline => {
                        // Our own child, by its handle.
                        let _ = c.kill();
                        let _ = c.wait();
                        break None;
                    }
                    None => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        Err(e) => {
            let _ = std::fs::remove_dir(&cgroup);
            return skip(&format!("cannot run unshare: {e}"));
        }
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = std::fs::remove_dir(&cgroup) {
        if Instant::now() > deadline {
            eprintln!("cannot remove {}: {e}", cgroup.display());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match status {
        Some(s) => assert!(s.success(), "the bench in its namespace failed: {s}"),
        None => panic!("the bench did not finish in time"),
    }
}

// ---- Inside ----

fn connect() -> TcpStream {
    let s = TcpStream::connect_timeout(&SocketAddr::V4(POD), WAIT)
        .unwrap_or_else(|e| panic!("connect to {POD}: {e}"));
    s.set_read_timeout(Some(WAIT)).expect("read timeout");
    s
}

/// One round's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Round {
    conns_per_s: f64,
    rtt_median_us: f64,
    rtt_p99_us: f64,
    entries_per_conn: f64,
}

/// The client side runs on the calling thread (in the client namespace), the stand-in on a
/// thread pinned to the same CPU.
fn round(proxy: &TcpListener, cpu: usize, s: Sizes) -> Round {
    let mut r = Round::default();
    std::thread::scope(|scope| {
        // Connections: the stand-in accepts (the first one checks the original destination)
        // and closes.
        let server = scope.spawn(|| {
            pin(cpu);
            for i in 0..s.connections {
                let (c, _) = proxy.accept().unwrap_or_else(|e| panic!("accept {i}: {e}"));
                if i == 0 {
                    assert_eq!(
                        original_dst(&c),
                        Some(SocketAddr::V4(POD)),
                        "the original destination at the stand-in"
                    );
                }
                drop(c);
            }
        });
        let start = Instant::now();
        for _ in 0..s.connections {
            let mut c = connect();
            let mut b = [0u8; 1];
            assert_eq!(c.read(&mut b).expect("EOF from the stand-in"), 0);
        }
        r.conns_per_s = s.connections as f64 / start.elapsed().as_secs_f64();
        server.join().expect("the stand-in");

        // RTT: the stand-in echoes.
        let server = scope.spawn(|| {
            pin(cpu);
            let (mut c, _) = proxy.accept().expect("accept (echo)");
            c.set_nodelay(true).expect("nodelay");
            let mut buf = [0u8; 64];
            while c.read_exact(&mut buf).is_ok() {
                c.write_all(&buf).expect("echo");
            }
        });
        let mut c = connect();
        c.set_nodelay(true).expect("nodelay");
        let (ping, mut pong) = ([7u8; 64], [0u8; 64]);
        let mut rtts: Vec<Duration> = Vec::with_capacity(s.pings);
        for _ in 0..s.pings {
            let t = Instant::now();
            c.write_all(&ping).expect("ping");
            c.read_exact(&mut pong).expect("pong");
            rtts.push(t.elapsed());
        }
        drop(c);
        server.join().expect("the echo stand-in");
        rtts.sort();
        let at = |q: f64| rtts[((rtts.len() - 1) as f64 * q).round() as usize];
        r.rtt_median_us = at(0.5).as_secs_f64() * 1e6;
        r.rtt_p99_us = at(0.99).as_secs_f64() * 1e6;
    });
    r
}

/// A line of the table: its name and the figure of a round.
type Row = (&'static str, fn(&Round) -> f64);

/// Wire `pod` (10.78.0.1 on `nm0`) to `client` (10.78.0.2 on `nm1`); the calling thread ends
/// in `pod`.
fn network(pod: &File, client: &File) {
    enter(pod);
    sh(&["ip", "link", "set", "lo", "up"]);
    sh(&[
        "ip", "link", "add", "nm0", "type", "veth", "peer", "name", "nm1",
    ]);
    let client_path = format!("/proc/{}/fd/{}", std::process::id(), client.as_raw_fd());
    sh(&["ip", "link", "set", "nm1", "netns", &client_path]);
    sh(&["ip", "addr", "add", "10.78.0.1/24", "dev", "nm0"]);
    sh(&["ip", "link", "set", "nm0", "up"]);
    enter(client);
    sh(&["ip", "link", "set", "lo", "up"]);
    sh(&["ip", "addr", "add", "10.78.0.2/24", "dev", "nm1"]);
    sh(&["ip", "link", "set", "nm1", "up"]);
    enter(pod);
}

/// The cgroup v2 directory this process is in.
fn current_cgroup() -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line");
    cgroup2_mount()
        .expect("a cgroup2 mount")
        .join(rel.trim_start_matches('/'))
}

fn move_to(cgroup: &Path) {
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .unwrap_or_else(|e| panic!("move to {}: {e}", procs.display()));
}

/// The stand-in's listener on 0.0.0.0:15006, made by uid 1337 in `cgroup` (so the sk_lookup
/// capture registers it); the process leaves `cgroup` again (the client's sockets must not be
/// the pod's).
fn stand_in(cgroup: &Path, home: &Path) -> TcpListener {
    move_to(cgroup);
    let l = std::thread::spawn(|| {
        become_user(PROXY_UID, PROXY_UID)?;
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, INBOUND_PORT))
    })
    .join()
    .expect("the listener thread")
    .expect("listen on 15006 as uid 1337");
    move_to(home);
    accept_timeout(&l, WAIT);
    l
}

fn child(cgroup: &Path, s: Sizes) {
    let cpu = a_cpu();
    pin(cpu);
    let home = current_cgroup();
    let cfg = CaptureConfig::sidecar();
    let table = nftmesh::ebpf::EbpfBackend::inbound(&cfg).expect("the inbound table");
    let mut steering = InboundCapture::new(&cfg).unwrap_or_else(|e| panic!("load: {e}"));
    let back = this_netns();
    let (mut nft, mut sk) = (Vec::new(), Vec::new());
    let measure = |pod: &File, client: &File, proxy: &TcpListener| {
        enter(pod);
        let before = conntrack_count();
        enter(client);
        let mut r = round(proxy, cpu, s);
        enter(pod);
        r.entries_per_conn =
            conntrack_count().saturating_sub(before) as f64 / (s.connections + 1) as f64;
        r
    };
    for _ in 0..s.rounds {
        // Every round in namespaces of its own, made for it and gone after it.
        let (pod, client) = (new_netns(), new_netns());
        network(&pod, &client);
        let ns = nftmesh::Namespace::current().expect("the round's pod namespace");
        ns.install(&table).expect("install the inbound table");
        let proxy = stand_in(cgroup, &home);
        nft.push(measure(&pod, &client, &proxy));
        drop((ns, proxy));

        let (pod, client) = (new_netns(), new_netns());
        network(&pod, &client);
        let attached = steering
            .attach(cgroup, Path::new("/proc/thread-self/ns/net"))
            .unwrap_or_else(|e| panic!("attach: {e}"));
        let proxy = stand_in(cgroup, &home);
        sk.push(measure(&pod, &client, &proxy));
        attached.remove().expect("detach");
        enter(&back);
    }
    let col = |v: &[Round], f: fn(&Round) -> f64| median(v.iter().map(f).collect());
    println!(
        "\ninbound: sk_lookup vs nf_tables REDIRECT, client and stand-in pinned to CPU {cpu}; \
         medians of {} round(s): {} connections, {} pings of 64 bytes",
        s.rounds, s.connections, s.pings
    );
    println!(
        "{:<24} {:>12} {:>12} {:>8}",
        "", "nf_tables", "sk_lookup", "ratio"
    );
    let rows: [Row; 4] = [
        ("connections/s", |r| r.conns_per_s),
        ("RTT median (us)", |r| r.rtt_median_us),
        ("RTT p99 (us)", |r| r.rtt_p99_us),
        ("conntrack entries/conn", |r| r.entries_per_conn),
    ];
    for (name, f) in rows {
        let (a, b) = (col(&nft, f), col(&sk, f));
        let ratio = if a > 0.0 {
            format!("{:.2}x", b / a)
        } else {
            "-".into()
        };
        println!("{name:<24} {a:>12.2} {b:>12.2} {ratio:>8}");
    }
    // What must hold, not a timing: sk_lookup leaves conntrack alone.
    for r in &sk {
        assert_eq!(
            r.entries_per_conn, 0.0,
            "the sk_lookup capture added conntrack entries"
        );
    }
}
