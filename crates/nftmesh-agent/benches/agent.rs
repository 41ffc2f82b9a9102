//! The node agent at scale, in a private node (`unshare -n -m`, tmpfs over `/run/netns`):
//!
//! 1. N = 1 000 pod namespaces registered through the agent's socket (four client threads,
//!    one request each per pod, the sidecar capture of every outbound range): wall time.
//! 2. Repair latency: every rule of one pod's `inet istio-proxy-nat` deleted in one
//!    transaction (what `nft flush table` does), timed from the kernel's acknowledgement until
//!    a dump shows the table whole again: median and p99 over 50 flushes.
//! 3. The agent idle with the N pods for 5 s: CPU time it used (from `/proc/self/task`).
//! 4. Memory (RSS) and open descriptors per pod: the process's growth over the N pods.
//!
//! `cargo bench -p nftmesh-agent` prints the numbers; under `cargo test` it runs with N = 20
//! and 3 flushes as a smoke test.

#[path = "../../../tests/support/skip.rs"]
mod skip;

use nftmesh_agent::server::{Agent, Options};
use serde_json::json;
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
    let (n, flushes) = if bench { (1000, 50) } else { (20, 3) };
    let work = std::env::temp_dir().join(format!("nftmesh-agent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let socket = work.join("agent.sock");
    // The pods: `ip netns add` in batches (not timed).
    let names: Vec<String> = (0..n).map(|i| format!("a{i}")).collect();
    let mut batch = String::new();
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

    // 2. Repair latency.
    let pod = Path::new("/run/netns/a0");
    let mut conn = nftmesh_netlink::netns::run_in(pod, nftmesh_netlink::Connection::open)
        .unwrap()
        .unwrap();
    let table = [(nftmesh::model::Family::Inet, "istio-proxy-nat".to_string())];
    let whole = conn.dump_ruleset(&table).unwrap();
    let mut lat = Vec::new();
    // The flush: every rule of the table deleted in one transaction, sent from this thread
    // (not the agent's), timed from the kernel's acknowledgement.
    let mut flushed = whole.clone();
    for c in &mut flushed.tables[0].chains {
        c.rules.clear();
    }
    for _ in 0..flushes {
        conn.apply(&flushed).unwrap();
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(5);
        loop {
            if conn.dump_ruleset(&table).unwrap() == whole {
                break;
            }
            assert!(Instant::now() < end, "repaired within 5 s");
            // Not a busy loop: the agent needs the CPU (resolution 0.1 ms).
            std::thread::sleep(Duration::from_micros(100));
        }
        lat.push(t0.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    lat.sort();

    // 3. Idle CPU, 4. per-pod memory and descriptors.
    let cpu0 = thread_cpu(agent_tid);
    std::thread::sleep(Duration::from_secs(if bench { 5 } else { 1 }));
    let idle = thread_cpu(agent_tid) - cpu0;
    let (rss1, fds1) = (rss_kib(), fds());

    let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    println!("| node agent, {n} pods | result |");
    println!("|---|---|");
    println!(
        "| register {n} pods through the socket (4 clients) | {:.0} ms ({:.2} ms per pod) |",
        ms(registered),
        ms(registered) / n as f64
    );
    println!(
        "| repair after `nft flush table` ({flushes} times) | median {:.2} ms, p99 {:.2} ms |",
        ms(q(0.5)),
        ms(q(0.99))
    );
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
