//! The eBPF capture against the nf_tables capture, side by side in one run, with and without
//! sk_msg acceleration (issue 27): the same app connections to 10.77.0.2:8080 (out of a veth)
//! captured to a proxy stand-in on 15001 (it accepts and closes, echoes, or discards), with the
//! app (client) and the stand-in (server) threads pinned to the same CPU
//! (`sched_setaffinity`; across CPUs these VMs vary ~10×).
//!
//! Three columns per round, each in a fresh network namespace: nf_tables REDIRECT (the sidecar
//! capture installed with `nftmesh::Namespace::install`), the eBPF capture (its programs
//! attached to the bench's cgroup for the round, no table in the namespace), and the eBPF
//! capture with `nftmesh_ebpf::Acceleration` attached too. Per column: connections/s (connect,
//! the stand-in accepts and closes, the app reads EOF), 64-byte RTT median and p99 (one
//! connection, TCP_NODELAY, echo), bulk MiB/s (64 MiB written, then a half-close, the
//! stand-in answers with the count), conntrack entries per connection (growth of the
//! namespace's `nf_conntrack_count`), and how many blocking reads returned `EAGAIN` early (the
//! acceleration's half-close bug: every read here retries an early `EAGAIN` within its timeout
//! and counts it). The table shows each figure's median over the rounds and each eBPF column /
//! nf_tables.
//!
//! It runs in a network namespace of its own (`unshare --net`, this binary again) and a cgroup
//! it creates under the cgroup2 mount and removes. `cargo bench -p nftmesh-ebpf --bench
//! ebpf_vs_nftables` prints the table (`NFTMESH_BENCH_ROUNDS`, default 3); under `cargo test`
//! it runs tiny sizes once as a smoke test. Needs root: otherwise `SKIP: why` (a failure under
//! `CI=true`). Asserted is only what must hold, never a timing: the data arrives, the eBPF
//! columns add no conntrack entry.

mod common;

use common::*;
use nftmesh_ebpf::{Acceleration, EbpfCapture};
use nftmesh_model::config::CaptureConfig;
use nftmesh_test_support::skip;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Set in the child (in its own namespace) to the cgroup directory it joins.
const CHILD: &str = "NFTMESH_EBPF_BENCH_CGROUP";
const PEER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 8080);
const PROXY_PORT: u16 = 15001;
/// Any single wait (accept, read, connect).
const WAIT: Duration = Duration::from_secs(10);

/// How much one round does.
#[derive(Clone, Copy)]
struct Sizes {
    connections: usize,
    pings: usize,
    bulk_mib: usize,
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
            bulk_mib: 64,
            rounds,
        }
    } else {
        Sizes {
            connections: 50,
            pings: 200,
            bulk_mib: 1,
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
        return skip("not root: BPF programs on a cgroup, nf_tables and namespaces need root");
    }
    let Some(mount) = cgroup2_mount() else {
        return skip("no cgroup2 file system is mounted (see /proc/mounts)");
    };
    let cgroup = mount.join(format!("nftmesh-bench-sk-msg-{}", std::process::id()));
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
    let s = TcpStream::connect_timeout(&SocketAddr::V4(PEER), WAIT)
        .unwrap_or_else(|e| panic!("connect to {PEER}: {e}"));
    s.set_read_timeout(Some(WAIT)).expect("read timeout");
    s
}

/// One round's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Round {
    conns_per_s: f64,
    rtt_median_us: f64,
    rtt_p99_us: f64,
    bulk_mib_s: f64,
    entries_per_conn: f64,
    /// Blocking reads that returned `EAGAIN` before their timeout (retried).
    early_eagain: f64,
}

/// `read_exact` that retries a blocking read's `EAGAIN` before `WAIT` is over (the
/// acceleration's half-close bug), counting each in `early`.
fn read_full(c: &mut TcpStream, buf: &mut [u8], early: &mut u64) -> std::io::Result<()> {
    let deadline = Instant::now() + WAIT;
    let mut at = 0;
    while at < buf.len() {
        match c.read(&mut buf[at..]) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => *early += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Read until EOF (retrying early `EAGAIN`s as [`read_full`]); the bytes read before it.
fn read_eof(c: &mut TcpStream, early: &mut u64) -> std::io::Result<usize> {
    let deadline = Instant::now() + WAIT;
    let mut b = [0u8; 64];
    let mut n = 0;
    loop {
        match c.read(&mut b) {
            Ok(0) => return Ok(n),
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => *early += 1,
            Err(e) => return Err(e),
        }
    }
}

fn round(proxy: &TcpListener, cpu: usize, s: Sizes) -> Round {
    let before = conntrack_count();
    let mut r = Round::default();
    std::thread::scope(|scope| {
        // Connections: the stand-in accepts and closes.
        let server = scope.spawn(|| {
            pin(cpu);
            for i in 0..s.connections {
                let (c, _) = proxy.accept().unwrap_or_else(|e| panic!("accept {i}: {e}"));
                drop(c);
            }
        });
        let mut early = 0u64;
        let start = Instant::now();
        for _ in 0..s.connections {
            let mut c = connect();
            assert_eq!(
                read_eof(&mut c, &mut early).expect("EOF from the stand-in"),
                0
            );
        }
        r.conns_per_s = s.connections as f64 / start.elapsed().as_secs_f64();
        server.join().expect("the stand-in");

        // RTT: the stand-in echoes.
        let server = scope.spawn(|| {
            pin(cpu);
            let (mut c, _) = proxy.accept().expect("accept (echo)");
            c.set_nodelay(true).expect("nodelay");
            c.set_read_timeout(Some(WAIT)).expect("read timeout");
            let mut buf = [0u8; 64];
            let mut early = 0u64;
            while read_full(&mut c, &mut buf, &mut early).is_ok() {
                c.write_all(&buf).expect("echo");
            }
            early
        });
        let mut c = connect();
        c.set_nodelay(true).expect("nodelay");
        let (ping, mut pong) = ([7u8; 64], [0u8; 64]);
        let mut rtts: Vec<Duration> = Vec::with_capacity(s.pings);
        for _ in 0..s.pings {
            let t = Instant::now();
            c.write_all(&ping).expect("ping");
            read_full(&mut c, &mut pong, &mut early).expect("pong");
            rtts.push(t.elapsed());
        }
        assert_eq!(pong, ping, "the echo");
        drop(c);
        early += server.join().expect("the echo stand-in");
        rtts.sort();
        let at = |q: f64| rtts[((rtts.len() - 1) as f64 * q).round() as usize];
        r.rtt_median_us = at(0.5).as_secs_f64() * 1e6;
        r.rtt_p99_us = at(0.99).as_secs_f64() * 1e6;

        // Bulk: the stand-in discards, then answers with the count after the half-close.
        let server = scope.spawn(|| {
            pin(cpu);
            let (mut c, _) = proxy.accept().expect("accept (discard)");
            c.set_read_timeout(Some(WAIT)).expect("read timeout");
            let mut buf = vec![0u8; 1 << 16];
            let mut n = 0u64;
            let mut early = 0u64;
            let deadline = Instant::now() + WAIT;
            loop {
                match c.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => n += k as u64,
                    Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                        early += 1
                    }
                    Err(e) => panic!("read bulk: {e}"),
                }
            }
            c.write_all(&n.to_le_bytes()).expect("the count");
            early
        });
        let mut c = connect();
        let chunk = vec![1u8; 1 << 16];
        let total = s.bulk_mib << 20;
        let start = Instant::now();
        for _ in 0..total / chunk.len() {
            c.write_all(&chunk).expect("write bulk");
        }
        c.shutdown(Shutdown::Write).expect("half-close");
        let mut n = [0u8; 8];
        read_full(&mut c, &mut n, &mut early).expect("the count back");
        r.bulk_mib_s = s.bulk_mib as f64 / start.elapsed().as_secs_f64();
        assert_eq!(
            u64::from_le_bytes(n),
            total as u64,
            "bytes the stand-in got"
        );
        early += server.join().expect("the discard stand-in");
        r.early_eagain = early as f64;
    });
    let conns = (s.connections + 2) as f64;
    r.entries_per_conn = conntrack_count().saturating_sub(before) as f64 / conns;
    r
}

/// A line of the table: its name, the figure of a round, the goal.
type Row = (&'static str, fn(&Round) -> f64, &'static str);

/// Bring up `lo` and a veth pair in the calling thread's namespace: 10.77.0.0/24 routes out of
/// `nm0` (this kernel has no dummy interfaces); the proxy stand-in listens there.
fn network() -> TcpListener {
    sh(&["ip", "link", "set", "lo", "up"]);
    sh(&[
        "ip", "link", "add", "nm0", "type", "veth", "peer", "name", "nm1",
    ]);
    sh(&["ip", "addr", "add", "10.77.0.1/24", "dev", "nm0"]);
    sh(&["ip", "link", "set", "nm0", "up"]);
    sh(&["ip", "link", "set", "nm1", "up"]);
    let proxy = TcpListener::bind((Ipv4Addr::UNSPECIFIED, PROXY_PORT)).expect("bind 15001");
    accept_timeout(&proxy, WAIT);
    proxy
}

fn child(cgroup: &Path, s: Sizes) {
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .unwrap_or_else(|e| panic!("join {}: {e}", procs.display()));
    let cpu = a_cpu();
    pin(cpu);
    let cfg = CaptureConfig::sidecar();
    // Every round of every column in a namespace of its own; the
    // client (this thread) moves into it and comes back to the process's own.
    let home = this_netns();
    let tables = nftmesh::Capture::new(&cfg).expect("compile");
    let mut programs = EbpfCapture::new(&cfg).unwrap_or_else(|e| panic!("load: {e}"));
    let mut accel =
        Acceleration::for_capture(&cfg).unwrap_or_else(|e| panic!("load the acceleration: {e}"));
    let (mut nft, mut ebpf, mut msg) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..s.rounds {
        let ns = new_netns();
        enter(&ns);
        let proxy = network();
        let tables_ns = nftmesh::Namespace::current().expect("the round's namespace");
        tables_ns
            .install(&tables)
            .expect("install the nf_tables capture");
        nft.push(round(&proxy, cpu, s));
        drop((tables_ns, proxy));

        let ns = new_netns();
        enter(&ns);
        let proxy = network();
        let attached = programs
            .attach(cgroup)
            .unwrap_or_else(|e| panic!("attach: {e}"));
        ebpf.push(round(&proxy, cpu, s));
        attached.remove().expect("detach");
        drop(proxy);

        let ns = new_netns();
        enter(&ns);
        let proxy = network();
        let attached = programs
            .attach(cgroup)
            .unwrap_or_else(|e| panic!("attach: {e}"));
        let accelerated = accel
            .attach(cgroup)
            .unwrap_or_else(|e| panic!("attach the acceleration: {e}"));
        msg.push(round(&proxy, cpu, s));
        accelerated.remove().expect("detach the acceleration");
        attached.remove().expect("detach");
        enter(&home);
    }
    let col = |v: &[Round], f: fn(&Round) -> f64| median(v.iter().map(f).collect());
    println!(
        "\nnf_tables REDIRECT vs eBPF capture vs eBPF capture + sk_msg, client and stand-in \
         pinned to CPU {cpu}; medians of {} round(s): {} connections, {} pings of 64 bytes, {} \
         MiB bulk",
        s.rounds, s.connections, s.pings, s.bulk_mib
    );
    println!(
        "{:<26} {:>11} {:>11} {:>7} {:>13} {:>7}",
        "", "nf_tables", "eBPF", "ratio", "eBPF+sk_msg", "ratio"
    );
    let rows: [Row; 6] = [
        ("connections/s", |r| r.conns_per_s, ""),
        ("RTT median (us)", |r| r.rtt_median_us, ""),
        ("RTT p99 (us)", |r| r.rtt_p99_us, ""),
        ("bulk (MiB/s)", |r| r.bulk_mib_s, ""),
        ("conntrack entries/conn", |r| r.entries_per_conn, ""),
        ("early EAGAIN reads", |r| r.early_eagain, ""),
    ];
    let ratio = |a: f64, b: f64| {
        if a > 0.0 {
            format!("{:.2}x", b / a)
        } else {
            "-".into()
        }
    };
    for (name, f, _) in rows {
        let (a, b, c) = (col(&nft, f), col(&ebpf, f), col(&msg, f));
        println!(
            "{name:<26} {a:>11.2} {b:>11.2} {:>7} {c:>13.2} {:>7}",
            ratio(a, b),
            ratio(a, c)
        );
    }
    // What must hold, not a timing: the eBPF columns leave conntrack alone.
    for r in ebpf.iter().chain(&msg) {
        assert_eq!(
            r.entries_per_conn, 0.0,
            "an eBPF column added conntrack entries"
        );
    }
}
