//! Side-by-side comparison, in one run: nftmesh (library on a kept-open connection, and the
//! `nftmesh` CLI as a process when built in `target/release`) against `nft -f` of our rendering,
//! `iptables-restore` (iptables-nft) and `iptables-legacy-restore` of Istio's rules.
//!
//! 1. Apply Istio's capture (case `inbound-ports-wildcard`), replacing in place.
//! 2. The same with outbound capture and N = 10, 100, 1 000, 10 000 excluded CIDRs (iptables:
//!    N rules, as Istio writes them; nftmesh: one set).
//! 3. Connections per second through the outbound redirect at N = 0, 1 000, 10 000.
//! 4. Configuring 1 000 fresh namespaces in a row.
//!
//! Every measurement runs in network namespaces this process creates. `cargo bench --bench
//! compare` prints markdown tables (medians, min–max, ratios) and writes
//! `docs/bench/results.csv` for `scripts/plot_bench.py`. Under `cargo test` it runs each
//! section once at its smallest size, as a smoke test.

use nftmesh_test_support::skip;

mod capture;
mod conns;
mod tools;

use nftmesh::model::{compile, render};
use nftmesh::netlink::netns::run_in_new;
use nftmesh::netlink::Connection;
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};
use tools::{available, cli, measure, median, ms, run, table};

type Rows = Vec<(String, Vec<Duration>)>;

/// Apply timings of every tool for the capture with `n` excluded CIDRs, each tool in a fresh
/// namespace of its own, replacing its own previous state.
fn apply_rows(n: usize, iters: usize) -> Rows {
    let cfg = capture::config(n);
    let ruleset = compile(&cfg);
    let text = render(&ruleset);
    let ipt = capture::iptables(n);
    let mut rows = Rows::new();
    let rs = ruleset.clone();
    let lib = run_in_new(move || {
        let mut conn = Connection::open().expect("netlink socket");
        measure(iters, || {
            conn.apply(&rs).expect("apply");
        })
    })
    .expect("netns");
    rows.push(("nftmesh library, kept-open connection".into(), lib));
    if let Some(cli) = cli() {
        let file =
            std::env::temp_dir().join(format!("nftmesh-bench-{}-{n}.json", std::process::id()));
        std::fs::write(&file, serde_json::to_string(&cfg).expect("json")).expect("config file");
        let f = file.clone();
        let v = run_in_new(move || {
            measure(iters, || {
                let o = Command::new(cli)
                    .args(["apply", "--config"])
                    .arg(&f)
                    .env_clear()
                    .output()
                    .expect("nftmesh");
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            })
        })
        .expect("netns");
        let _ = std::fs::remove_file(file);
        rows.push(("`nftmesh apply` CLI process".into(), v));
    }
    let tool_rows: [(&str, &str, &str); 3] = [
        ("`nft -f` process (our rendering)", "nft", "nft"),
        (
            "`iptables-restore` (nft backend), Istio's rules",
            "iptables-restore",
            "ipt",
        ),
        (
            "`iptables-legacy-restore`, Istio's rules",
            "iptables-legacy-restore",
            "ipt",
        ),
    ];
    for (name, cmd, kind) in tool_rows {
        if !available(cmd) {
            eprintln!("note: row {name:?} left out: {cmd} not available");
            continue;
        }
        let input = if kind == "nft" {
            text.clone()
        } else {
            ipt.clone()
        };
        let args: &'static [&'static str] = if kind == "nft" { &["-f", "-"] } else { &[] };
        let v = run_in_new(move || measure(iters, || run(cmd, args, &input).expect(cmd)))
            .expect("netns");
        rows.push((name.into(), v));
    }
    rows
}

/// Connections per second through the redirect with `n` excluded CIDRs, per installer.
fn conn_rows(n: usize, count: usize, repeats: usize) -> Vec<(String, Vec<f64>)> {
    let ruleset = compile(&capture::config(n));
    let ipt = capture::iptables(n);
    let mut out = Vec::new();
    let installers: [(&str, Option<&str>); 3] = [
        ("nftmesh", None),
        ("iptables-nft", Some("iptables-restore")),
        ("iptables-legacy", Some("iptables-legacy-restore")),
    ];
    for (name, cmd) in installers {
        if cmd.is_some_and(|c| !available(c)) {
            eprintln!("note: connection row {name:?} left out: tool not available");
            continue;
        }
        let (rs, ipt) = (ruleset.clone(), ipt.clone());
        let rates = run_in_new(move || -> Result<Vec<f64>, String> {
            conns::topology()?;
            match cmd {
                None => {
                    Connection::open()
                        .and_then(|mut c| c.apply(&rs).map(|_| ()))
                        .map_err(|e| e.to_string())?;
                }
                Some(c) => run(c, &[], &ipt)?,
            }
            (0..repeats).map(|_| conns::rate(count)).collect()
        })
        .expect("netns");
        match rates {
            Ok(mut r) => {
                r.sort_by(f64::total_cmp);
                out.push((name.to_string(), r));
            }
            Err(e) => eprintln!("note: connection row {name:?} left out: {e}"),
        }
    }
    out
}

/// Configure `count` fresh namespaces in a row with Istio's default capture, per tool; the
/// time of each apply (namespace creation excluded) and the wall time in all.
fn many_rows(count: usize) -> Vec<(String, Vec<Duration>, Duration)> {
    let ruleset = compile(&capture::config(0));
    let text = render(&ruleset);
    let ipt = capture::iptables(0);
    let mut out = Vec::new();
    type Job = Box<dyn Fn() -> Result<(), String> + Send + Sync>;
    let mut jobs: Vec<(&str, Job)> = Vec::new();
    let rs = ruleset.clone();
    jobs.push((
        "nftmesh library (a connection per namespace)",
        Box::new(move || {
            let mut c = Connection::open().map_err(|e| e.to_string())?;
            c.apply(&rs).map(|_| ()).map_err(|e| e.to_string())
        }),
    ));
    if let Some(cli) = cli() {
        jobs.push((
            "`nftmesh apply` CLI process",
            Box::new(move || {
                let o = Command::new(cli)
                    .args([
                        "apply", "-p", "15001", "-z", "15006", "-u", "1337", "-g", "1337",
                    ])
                    .args(["-b", "*", "-i", "*", "--ipv6", "off"])
                    .env_clear()
                    .output()
                    .map_err(|e| e.to_string())?;
                o.status
                    .success()
                    .then_some(())
                    .ok_or_else(|| String::from_utf8_lossy(&o.stderr).into_owned())
            }),
        ));
    }
    if available("nft") {
        jobs.push((
            "`nft -f` process",
            Box::new(move || run("nft", &["-f", "-"], &text)),
        ));
    }
    if available("iptables-restore") {
        jobs.push((
            "`iptables-restore` (nft backend)",
            Box::new(move || run("iptables-restore", &[], &ipt)),
        ));
    }
    for (name, job) in jobs {
        let job = std::sync::Arc::new(job);
        let wall = Instant::now();
        let mut each = Vec::with_capacity(count);
        for _ in 0..count {
            let j = job.clone();
            let d = run_in_new(move || {
                let t = Instant::now();
                j().map(|()| t.elapsed())
            })
            .expect("netns")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            each.push(d);
        }
        each.sort();
        out.push((name.to_string(), each, wall.elapsed()));
    }
    out
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    if let Err(e) = run_in_new(|| ()) {
        skip::skip(&format!("cannot create a network namespace: {e}"));
        return;
    }
    if cli().is_none() {
        eprintln!("note: target/release/nftmesh not built; `cargo build --release -p nftmesh-cli` adds the CLI rows");
    }
    let mut csv = String::from("section,n,row,median,min,max,unit\n");
    // NFTMESH_BENCH_ONLY=apply|conns|namespaces runs one section (nothing is written then).
    let only = std::env::var("NFTMESH_BENCH_ONLY").ok();
    let runs = |s: &str| only.as_deref().is_none_or(|o| o == s);

    // 1 and 2: apply, replacing in place.
    let sizes: &[usize] = match (runs("apply"), bench) {
        (false, _) => &[],
        (true, true) => &[0, 10, 100, 1000, 10000],
        (true, false) => &[10],
    };
    for &n in sizes {
        let iters = if !bench {
            1
        } else if n >= 1000 {
            15
        } else {
            30
        };
        let rows = apply_rows(n, iters);
        let title = format!("apply, {n} excluded CIDRs, {iters} runs each");
        table(&title, &rows);
        for (name, v) in &rows {
            let _ = writeln!(
                csv,
                "apply,{n},{name:?},{:.4},{:.4},{:.4},ms",
                ms(median(v)),
                ms(v[0]),
                ms(v[v.len() - 1])
            );
        }
    }

    // 3: connections per second through the redirect.
    let (ns, count, repeats): (&[usize], usize, usize) = match (runs("conns"), bench) {
        (false, _) => (&[], 0, 0),
        (true, true) => (&[0, 1000, 10000], 3000, 5),
        (true, false) => (&[0], 20, 1),
    };
    // NFTMESH_BENCH_CONNS=COUNT overrides the number of connections (to look closer).
    let count = std::env::var("NFTMESH_BENCH_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(count);
    if !ns.is_empty() {
        // Let the kernel finish tearing down the namespaces of the apply section (their
        // cleanup runs in the background and competes for the two cores).
        if bench {
            std::thread::sleep(Duration::from_secs(10));
        }
        println!("| connections/s through the redirect ({count} connections, {repeats} repeats) | N | median | min–max | × N=0 |");
        println!("|---|---|---|---|---|");
    }
    let mut base: std::collections::HashMap<String, f64> = Default::default();
    for &n in ns {
        for (name, r) in conn_rows(n, count, repeats) {
            let med = r[r.len() / 2];
            let b = *base.entry(name.clone()).or_insert(med);
            println!(
                "| {name} | {n} | {med:.0} | {:.0}–{:.0} | {:.2} |",
                r[0],
                r[r.len() - 1],
                med / b
            );
            let _ = writeln!(
                csv,
                "connrate,{n},{name:?},{med:.1},{:.1},{:.1},conn/s",
                r[0],
                r[r.len() - 1]
            );
        }
    }
    println!();

    // 4: many namespaces in a row.
    let count = match (runs("namespaces"), bench) {
        (false, _) => 0,
        (true, true) => 1000,
        (true, false) => 2,
    };
    if count > 0 {
        println!("| {count} fresh namespaces in a row, Istio's capture in each | apply median ms | min–max ms | wall s in all |");
        println!("|---|---|---|---|");
    }
    for (name, each, wall) in if count > 0 {
        many_rows(count)
    } else {
        Vec::new()
    } {
        println!(
            "| {name} | {:.3} | {:.3}–{:.3} | {:.2} |",
            ms(median(&each)),
            ms(each[0]),
            ms(each[each.len() - 1]),
            wall.as_secs_f64()
        );
        let _ = writeln!(
            csv,
            "namespaces,{count},{name:?},{:.4},{:.4},{:.4},ms",
            ms(median(&each)),
            ms(each[0]),
            ms(each[each.len() - 1])
        );
    }
    if bench && only.is_none() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/bench/results.csv");
        std::fs::write(path, csv).expect("write results.csv");
        eprintln!("wrote {path}");
    }
}
