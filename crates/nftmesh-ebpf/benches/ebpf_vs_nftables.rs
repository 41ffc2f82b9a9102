//! The eBPF capture against the nf_tables capture, side by side in one run: the same app
//! connections to 10.77.0.2:8080 (out of a veth) captured to a proxy stand-in on 15001 (it
//! accepts and closes, echoes, or discards), with the app (client) and the stand-in (server)
//! threads pinned to the same CPU (`sched_setaffinity`; across CPUs these VMs vary ~10×).
//!
//! Per backend and round: connections/s (connect, the stand-in accepts and closes, the app
//! reads EOF), 64-byte RTT median and p99 (one connection, TCP_NODELAY, echo), bulk MiB/s (64
//! MiB written, then a half-close, the stand-in answers with the count), and conntrack entries
//! per connection (growth of the namespace's `nf_conntrack_count`). Rounds alternate nf_tables
//! (the sidecar capture installed with `nftmesh::Namespace::install`) and eBPF (the programs
//! attached to the bench's cgroup for the round, no table in the namespace), each round in a
//! fresh network namespace; the table shows each figure's median over the rounds and
//! eBPF / nf_tables.
//!
//! It runs in a network namespace of its own (`unshare --net`, this binary again) and a cgroup
//! it creates under the cgroup2 mount and removes. `cargo bench -p nftmesh-ebpf` prints the
//! numbers (`NFTMESH_BENCH_ROUNDS`, default 3); under `cargo test` it runs tiny sizes once as a
//! smoke test. Needs root: otherwise `SKIP: why` (a failure under `CI=true`). Asserted (in
//! both modes) is only what must hold, never a timing: the eBPF rounds add no conntrack entry.

use nftmesh_ebpf::EbpfCapture;
use nftmesh_model::config::CaptureConfig;
use nftmesh_test_support::skip;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
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
    let cgroup = mount.join(format!("nftmesh-bench-{}", std::process::id()));
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

fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

// ---- Inside ----

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

/// The first CPU this process may run on.
fn a_cpu() -> usize {
    // SAFETY: cpu_set_t is plain data (all zeroes is the empty set); sched_getaffinity writes
    // at most size_of::<cpu_set_t>() bytes into it, the size passed.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let r = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        assert_eq!(r, 0, "sched_getaffinity");
        (0..libc::CPU_SETSIZE as usize)
            .find(|c| libc::CPU_ISSET(*c, &set))
            .expect("a CPU")
    }
}

/// Pin the calling thread (only it) to `cpu`.
fn pin(cpu: usize) {
    // SAFETY: as in a_cpu; CPU_SET stays within the set for cpu < CPU_SETSIZE, which a_cpu
    // guarantees; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let r = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(r, 0, "sched_setaffinity to CPU {cpu}");
    }
}

/// A timeout on `accept()` of a listening socket (SO_RCVTIMEO applies to it on Linux), so the
/// stand-in never waits forever for a client that failed.
fn accept_timeout(l: &TcpListener, wait: Duration) {
    let tv = libc::timeval {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: the fd is the listener's, open for the call; tv is a valid timeval and its size
    // is passed.
    let r = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_RCVTIMEO on the listener");
}

fn conntrack_count() -> u64 {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

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

        // Bulk: the stand-in discards, then answers with the count after the half-close.
        let server = scope.spawn(|| {
            pin(cpu);
            let (mut c, _) = proxy.accept().expect("accept (discard)");
            c.set_read_timeout(Some(WAIT)).expect("read timeout");
            let mut buf = vec![0u8; 1 << 16];
            let mut n = 0u64;
            loop {
                match c.read(&mut buf).expect("read bulk") {
                    0 => break,
                    k => n += k as u64,
                }
            }
            c.write_all(&n.to_le_bytes()).expect("the count");
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
        c.read_exact(&mut n).expect("the count back");
        r.bulk_mib_s = s.bulk_mib as f64 / start.elapsed().as_secs_f64();
        assert_eq!(
            u64::from_le_bytes(n),
            total as u64,
            "bytes the stand-in got"
        );
        server.join().expect("the discard stand-in");
    });
    let conns = (s.connections + 2) as f64;
    r.entries_per_conn = conntrack_count().saturating_sub(before) as f64 / conns;
    r
}

/// A line of the table: its name, the figure of a round, the goal.
type Row = (&'static str, fn(&Round) -> f64, &'static str);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

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

/// The calling thread's network namespace, held open.
fn this_netns() -> File {
    File::open("/proc/thread-self/ns/net").expect("/proc/thread-self/ns/net")
}

/// A new network namespace (made on a helper thread, which leaves it), held open.
fn new_netns() -> File {
    std::thread::spawn(|| {
        // SAFETY: unshare takes a flag word and changes only the calling (helper) thread.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare(CLONE_NEWNET)");
        this_netns()
    })
    .join()
    .expect("the helper thread")
}

/// Move the calling thread (only it) into the namespace `ns`: the sockets it creates from
/// then on, and the processes it starts, are there.
fn enter(ns: &File) {
    // SAFETY: the fd is an open network namespace file; setns changes only this thread.
    let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns");
}

fn child(cgroup: &Path, s: Sizes) {
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .unwrap_or_else(|e| panic!("join {}: {e}", procs.display()));
    let cpu = a_cpu();
    pin(cpu);
    let cfg = CaptureConfig::sidecar();
    // Every round in a namespace of its own, made for it and gone after it: the eBPF one never
    // held a table (deleting nf_tables' NAT chains does not turn conntrack off in a namespace
    // at once), and no round counts the expiry of an earlier round's entries. The client (this
    // thread) moves into it; the process's own namespace is where it comes back to.
    let home = this_netns();
    let tables = nftmesh::Capture::new(&cfg).expect("compile");
    let mut programs = EbpfCapture::new(&cfg).unwrap_or_else(|e| panic!("load: {e}"));
    let (mut nft, mut ebpf) = (Vec::new(), Vec::new());
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
        enter(&home);
    }
    let col = |v: &[Round], f: fn(&Round) -> f64| median(v.iter().map(f).collect());
    println!(
        "\neBPF vs nf_tables capture, client and stand-in pinned to CPU {cpu}; medians of {} \
         round(s): {} connections, {} pings of 64 bytes, {} MiB bulk",
        s.rounds, s.connections, s.pings, s.bulk_mib
    );
    println!(
        "{:<24} {:>12} {:>12} {:>8}  goal",
        "", "nf_tables", "eBPF", "ratio"
    );
    let rows: [Row; 5] = [
        ("connections/s", |r| r.conns_per_s, ">= 1.15x"),
        ("RTT median (us)", |r| r.rtt_median_us, "<= 0.85x"),
        ("RTT p99 (us)", |r| r.rtt_p99_us, ""),
        ("bulk (MiB/s)", |r| r.bulk_mib_s, ">= 1.5x"),
        ("conntrack entries/conn", |r| r.entries_per_conn, "0 (eBPF)"),
    ];
    for (name, f, goal) in rows {
        let (a, b) = (col(&nft, f), col(&ebpf, f));
        let ratio = if a > 0.0 {
            format!("{:.2}x", b / a)
        } else {
            "-".into()
        };
        println!("{name:<24} {a:>12.2} {b:>12.2} {ratio:>8}  {goal}");
    }
    // What must hold, not a timing: the eBPF capture leaves conntrack alone.
    for r in &ebpf {
        assert_eq!(
            r.entries_per_conn, 0.0,
            "the eBPF capture added conntrack entries"
        );
    }
}
