//! The node agent at scale, in a private node (`unshare -n -m`, tmpfs over `/run/netns`):
//!
//! 1. N = 1 000 pod namespaces registered through the agent's socket (four client threads,
//!    one request each per pod, the sidecar capture of every outbound range): wall time.
//! 2. Tamper-to-repair latency of one pod as an outside observer sees it (a change monitor of
//!    the bench's own in the pod): from the tampering commit's notification to the repair
//!    commit's, for four kinds of tampering by `nft` (a chain flushed, a table deleted, a rule
//!    added, a table flushed), 50 times each: median and p99; then the same with a client
//!    that never reads its replies and 256 that never speak. Beside it, the floor any repairer
//!    meets on this kernel: in a pod the agent does not hold, the bench itself re-applies the
//!    same capture (one dump + one transaction, as the agent's repair) the moment it sees the
//!    tampering commit. A deletion's commit leaves work the kernel finishes under the
//!    namespace's commit lock when the tampering process closes its socket (an RCU grace
//!    period), and every commit, the repair's included, waits for it.
//! 3. The agent idle with the N pods for 5 s: CPU time it used (from `/proc/self/task`).
//! 4. Memory (RSS) and open descriptors per pod: the process's growth over the N pods.
//!
//! `cargo bench -p nftmesh-agent` prints the numbers (`NFTMESH_BENCH_PODS` sets N); under
//! `cargo test` it runs with N = 20 and 3 flushes as a smoke test.

use nftmesh_test_support::skip;

use nftmesh_agent::server::{Agent, Options};
use nftmesh_netlink::monitor::{Monitor, Own};
use serde_json::json;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD: &str = "NFTMESH_AGENT_BENCH_IN_NODE";

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    if std::env::var_os(CHILD).is_none() {
        let exe = std::env::current_exe().expect("bench binary");
        let status = Command::new("unshare")
            .args(["--net", "--mount", "--propagation", "private"])
            .arg(exe)
            .args(std::env::args().skip(1))
            .env(CHILD, "1")
            .status();
        match status {
            Ok(s) => assert!(s.success(), "the benchmark in its private node failed"),
            Err(e) => skip::skip(&format!("cannot run unshare: {e}")),
        }
        return;
    }
    std::fs::create_dir_all("/run/netns").unwrap();
    let o = Command::new("mount")
        .args(["-t", "tmpfs", "nftmesh-bench", "/run/netns"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pods = std::env::var("NFTMESH_BENCH_PODS").ok();
    let n = pods.and_then(|v| v.parse().ok()).unwrap_or(1000);
    let (n, flushes) = if bench { (n, 50) } else { (20, 3) };
    let work = std::env::temp_dir().join(format!("nftmesh-agent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let socket = work.join("agent.sock");
    // The pods: `ip netns add` in batches (not timed).
    let names: Vec<String> = (0..n).map(|i| format!("a{i}")).collect();
    let mut batch = String::from("netns add floor\n");
    for name in &names {
        batch.push_str(&format!("netns add {name}\n"));
    }
    let o = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(batch.as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(o.success());

    let (rss0, fds0) = (rss_kib(), fds());
    let opts = Options {
        socket: socket.clone(),
        state_dir: work.join("state"),
        metrics_addr: None,
        resync: Duration::from_secs(3600),
        own_tables: false,
        bpffs: None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let agent = Agent::start(opts).expect("agent");
        let tid = nix::unistd::gettid().as_raw();
        tx.send(tid).unwrap();
        let _ = agent.run();
    });
    let agent_tid = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("agent starts");

    // 1. Registration.
    let start = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let socket = socket.clone();
            let mine: Vec<String> = names.iter().skip(t).step_by(4).cloned().collect();
            std::thread::spawn(move || {
                for name in mine {
                    let req = json!({
                        "command": "add",
                        "network_namespace": format!("/run/netns/{name}"),
                        "capture": {"outbound_cidrs_include": "all"},
                    });
                    let v = nftmesh_agent::client::call(&socket, req, Duration::from_secs(60))
                        .expect("agent reply");
                    assert_eq!(v["ok"], true, "{v}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let registered = start.elapsed();

    // 2. Tamper-to-repair latency, as an outside observer sees it: a change monitor of the
    //    bench's own in the pod; from the arrival of the tampering commit's notification to
    //    the arrival of the next commit's (the agent's repair). Each kind `flushes` times;
    //    then again with a client that sends requests and never reads the replies, and 256
    //    clients that connect and say nothing.
    let pod = Path::new("/run/netns/a0");
    let mut monitor = Some(
        nftmesh_netlink::netns::run_in(pod, Monitor::open)
            .unwrap()
            .unwrap(),
    );
    let kinds: [(&str, &[&str]); 4] = [
        (
            "flush chain",
            &[
                "flush",
                "chain",
                "inet",
                "istio-proxy-nat",
                "istio-redirect",
            ],
        ),
        (
            "delete table",
            &["delete", "table", "inet", "istio-proxy-nat"],
        ),
        (
            "add rule",
            &[
                "add",
                "rule",
                "inet",
                "istio-proxy-nat",
                "istio-output",
                "accept",
            ],
        ),
        (
            "flush table",
            &["flush", "table", "inet", "istio-proxy-nat"],
        ),
    ];
    let mut rows = Vec::new();
    // The floor: the bench's own repairer in pod `floor`, which the agent does not hold.
    let floor = Path::new("/run/netns/floor");
    let capture: nftmesh_model::CaptureConfig =
        serde_json::from_value(json!({"outbound_cidrs_include": "all"})).unwrap();
    let ruleset = nftmesh::Capture::new(&capture).unwrap().ruleset().clone();
    let mut conn = nftmesh_netlink::netns::run_in(floor, nftmesh_netlink::Connection::open)
        .unwrap()
        .unwrap();
    conn.apply(&ruleset).unwrap();
    let mut floor_monitor = Some(
        nftmesh_netlink::netns::run_in(floor, Monitor::open)
            .unwrap()
            .unwrap(),
    );
    let mut repairer = Some((conn, ruleset));
    for (kind, args) in &kinds {
        let mut lat = Vec::new();
        for _ in 0..flushes {
            let (m, r, t) = tamper_to_repair(
                floor_monitor.take().expect("the monitor"),
                "floor",
                args,
                repairer.take(),
            );
            floor_monitor = Some(m);
            repairer = r;
            lat.push(t);
            std::thread::sleep(Duration::from_millis(10));
        }
        lat.sort();
        let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
        rows.push((*kind, "floor", q(0.5), q(0.99)));
    }
    for stalled in [false, true] {
        let _abuse = stalled.then(|| abuse(&socket));
        for (kind, args) in &kinds {
            let mut lat = Vec::new();
            for _ in 0..flushes {
                let (m, _, t) =
                    tamper_to_repair(monitor.take().expect("the monitor"), "a0", args, None);
                monitor = Some(m);
                lat.push(t);
                std::thread::sleep(Duration::from_millis(10));
            }
            lat.sort();
            let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
            rows.push((
                *kind,
                if stalled { "stalled" } else { "agent" },
                q(0.5),
                q(0.99),
            ));
        }
    }

    // 3. Idle CPU, 4. per-pod memory and descriptors.
    let cpu0 = thread_cpu(agent_tid);
    std::thread::sleep(Duration::from_secs(if bench { 5 } else { 1 }));
    let idle = thread_cpu(agent_tid) - cpu0;
    let (rss1, fds1) = (rss_kib(), fds());

    println!("| node agent, {n} pods | result |");
    println!("|---|---|");
    println!(
        "| register {n} pods through the socket (4 clients) | {:.0} ms ({:.2} ms per pod) |",
        ms(registered),
        ms(registered) / n as f64
    );
    for (kind, who, med, p99) in rows {
        let with = match who {
            "floor" => ", the bench's own re-apply in a pod the agent does not hold (floor)",
            "stalled" => ", with a stalled and 256 silent clients",
            _ => "",
        };
        println!(
            "| tamper-to-repair, `nft {kind}`{with} ({flushes} times) | median {:.2} ms, p99 {:.2} ms |",
            ms(med),
            ms(p99)
        );
    }
    println!(
        "| idle CPU of the agent's thread with {n} pods | {:.2} ms over {} s |",
        idle * 1e3,
        if bench { 5 } else { 1 }
    );
    println!(
        "| per pod | {:.1} KiB RSS, {:.2} descriptors |",
        (rss1 as f64 - rss0 as f64) / n as f64,
        (fds1 as f64 - fds0 as f64) / n as f64
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// What the bench's own repairer re-applies: a connection in the pod and the capture.
type Repairer = (nftmesh_netlink::Connection, nftmesh_model::ruleset::Ruleset);

/// Tamper with pod `pod` by `nft ARGS` (another process) and time, on `monitor`, from the
/// arrival of that commit's notification to the arrival of the next commit's (the repair: the
/// agent's, or `repairer`'s re-apply made as soon as the tampering is seen).
/// The monitor is read on a thread of its own, blocked in `poll` from before the tampering,
/// so each arrival is seen when it happens.
fn tamper_to_repair(
    mut monitor: Monitor,
    pod: &str,
    args: &[&str],
    mut repairer: Option<Repairer>,
) -> (Monitor, Option<Repairer>, Duration) {
    let _ = monitor.drain(Own::Ports(&[]));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let watcher = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(5);
        let (mut seen, mut tampered) = (0, None);
        let _ = ready_tx.send(());
        loop {
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "repaired within 5 s");
            let mut fds = [nix::poll::PollFd::new(
                monitor.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let timeout = nix::poll::PollTimeout::try_from(left.as_millis().min(5000) as i32)
                .unwrap_or(nix::poll::PollTimeout::MAX);
            let _ = nix::poll::poll(&mut fds, timeout);
            let now = Instant::now();
            seen += monitor.drain(Own::Ports(&[])).unwrap().foreign_commits;
            if seen >= 1 && tampered.is_none() {
                tampered = Some(now);
                if let Some((conn, ruleset)) = repairer.as_mut() {
                    conn.forget_commit();
                    conn.apply(ruleset).expect("the bench's re-apply");
                }
            }
            if seen >= 2 {
                return (monitor, repairer, now - tampered.unwrap_or(now));
            }
        }
    });
    let _ = ready_rx.recv();
    let o = Command::new("ip")
        .args(["netns", "exec", pod, "nft"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    watcher.join().unwrap()
}

/// A client that sends 3 000 status requests and never reads, and 256 that connect and say
/// nothing; they hang on while the value lives.
fn abuse(socket: &Path) -> Vec<std::os::unix::net::UnixStream> {
    use std::io::Write;
    let mut out = Vec::new();
    let mut stalled = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stalled.set_nonblocking(true).unwrap();
    let req = "{\"version\":1,\"command\":\"status\"}\n".repeat(3000);
    let (mut sent, end) = (0, Instant::now() + Duration::from_secs(5));
    while sent < req.len() && Instant::now() < end {
        match stalled.write(&req.as_bytes()[sent..]) {
            Ok(n) => sent += n,
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    out.push(stalled);
    for _ in 0..256 {
        out.push(std::os::unix::net::UnixStream::connect(socket).unwrap());
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// CPU seconds (user + system) the thread `tid` of this process has used.
fn thread_cpu(tid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime 13th,
    // in USER_HZ ticks (100 per second on Linux, whatever the kernel's HZ).
    let rest = stat.rsplit(") ").next().unwrap_or_default();
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
