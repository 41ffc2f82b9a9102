//! Side-by-side comparison, in one run and one private network namespace: applying the same
//! Istio capture (case `inbound-ports-wildcard`, Istio's golden for iptables and our compiled
//! ruleset for nf_tables) with the library on a kept-open connection, the `nftmesh` CLI as a
//! process (when built in `target/release`), `nft -f` of our rendering, `iptables-restore`
//! (iptables-nft) and `iptables-legacy-restore` of Istio's golden. Every tool replaces what it
//! installed before (in-place replace into an existing namespace).
//!
//! `cargo bench --bench compare` prints a markdown table of medians, min-max and ratios.
//! Under `cargo test` it runs two iterations of each, as a smoke test.

use nftmesh::model::config::{CaptureConfig, IstioSettings};
use nftmesh::model::{compile, render};
use nftmesh::netlink::Connection;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn golden_v4(case: &str) -> String {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/conformance/istio/iptables/"
    );
    std::fs::read_to_string(format!("{p}{case}.golden"))
        .expect("iptables golden")
        .lines()
        .filter(|l| !l.starts_with("iptables") && !l.starts_with("ip6tables"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Run `cmd` with `input` on stdin.
fn run(cmd: &str, args: &[&str], input: &str) -> Result<(), String> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd}: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(input.as_bytes())
        .map_err(|e| e.to_string())?;
    let o = child.wait_with_output().map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd}: {}", String::from_utf8_lossy(&o.stderr)))
    }
}

/// A tool's row, or a printed reason when the tool cannot run here (the row is left out,
/// never invented).
fn tool_row(
    rows: &mut Vec<(String, Vec<Duration>)>,
    name: &str,
    iters: usize,
    f: impl Fn() -> Result<(), String>,
) {
    match f() {
        Ok(()) => rows.push((
            name.to_string(),
            measure(iters, || f().expect("it ran before")),
        )),
        Err(e) => eprintln!("note: row {name:?} left out: {e}"),
    }
}

fn measure(iters: usize, mut f: impl FnMut()) -> Vec<Duration> {
    f(); // warm-up: the first run creates instead of replacing
    let mut v: Vec<Duration> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    v
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let iters = if bench { 50 } else { 2 };
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        eprintln!("SKIP: cannot create a network namespace: {e}");
        return;
    }
    let settings = IstioSettings {
        proxy_gid: "1337".into(),
        inbound_ports: "*".into(),
        ..IstioSettings::default()
    };
    let cfg: CaptureConfig = settings.to_config().expect("config");
    let ruleset = compile(&cfg);
    let text = render(&ruleset);
    let golden = golden_v4("inbound-ports-wildcard");
    let cli = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/nftmesh");

    let mut rows: Vec<(String, Vec<Duration>)> = Vec::new();
    let mut conn = Connection::open().expect("netlink socket");
    rows.push((
        "nftmesh library, kept-open connection".into(),
        measure(iters, || {
            conn.apply(&ruleset).expect("apply");
        }),
    ));
    if std::path::Path::new(cli).exists() {
        rows.push((
            "`nftmesh apply` CLI process".into(),
            measure(iters, || {
                let o = Command::new(cli)
                    .args([
                        "apply", "-p", "15001", "-z", "15006", "-u", "1337", "-g", "1337", "-b",
                        "*", "--ipv6", "off",
                    ])
                    .env_clear()
                    .output()
                    .expect("nftmesh");
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            }),
        ));
    } else {
        eprintln!("note: {cli} not built; run `cargo build --release -p nftmesh-cli` to include the CLI row");
    }
    tool_row(&mut rows, "`nft -f` process (our rendering)", iters, || {
        run("nft", &["-f", "-"], &text)
    });
    tool_row(
        &mut rows,
        "`iptables-restore` (nft backend), Istio golden",
        iters,
        || run("iptables-restore", &[], &golden),
    );
    tool_row(
        &mut rows,
        "`iptables-legacy-restore`, Istio golden",
        iters,
        || run("iptables-legacy-restore", &[], &golden),
    );

    let base = rows[0].1[rows[0].1.len() / 2];
    println!(
        "| apply (replace in place), {} runs each | median ms | min–max ms | × library |",
        iters
    );
    println!("|---|---|---|---|");
    for (name, v) in &rows {
        let med = v[v.len() / 2];
        println!(
            "| {name} | {:.3} | {:.3}–{:.3} | {:.1} |",
            ms(med),
            ms(v[0]),
            ms(v[v.len() - 1]),
            med.as_secs_f64() / base.as_secs_f64()
        );
    }
}
