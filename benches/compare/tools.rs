//! Running the compared tools and timing them.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Istio's iptables golden, IPv4 part, split as `nftmesh_iptables::trace` reads it.
pub fn golden_v4(case: &str) -> String {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/istio/sidecar/iptables/"
    );
    let text = std::fs::read_to_string(format!("{p}{case}.golden")).expect("iptables golden");
    nftmesh::iptables::trace::split_trace_text(&text)
        .into_iter()
        .next()
        .map(|(_, part)| part)
        .unwrap_or_default()
}

/// Run `cmd` with `input` on stdin (in the calling thread's network namespace).
pub fn run(cmd: &str, args: &[&str], input: &str) -> Result<(), String> {
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

/// Whether a tool runs here at all (rows of tools that do not are left out, never invented).
pub fn available(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The release CLI, if built.
pub fn cli() -> Option<&'static str> {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/nftmesh");
    std::path::Path::new(p).exists().then_some(p)
}

/// Sorted durations of `iters` runs after one warm-up run.
pub fn measure(iters: usize, mut f: impl FnMut()) -> Vec<Duration> {
    f();
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

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median of sorted durations.
pub fn median(v: &[Duration]) -> Duration {
    v[v.len() / 2]
}

/// A markdown table of rows (name, sorted durations), with ratios to the first row.
pub fn table(title: &str, rows: &[(String, Vec<Duration>)]) {
    let Some(base) = rows.first().map(|r| median(&r.1)) else {
        return;
    };
    println!("| {title} | median ms | min–max ms | × first row |");
    println!("|---|---|---|---|");
    for (name, v) in rows {
        println!(
            "| {name} | {:.3} | {:.3}–{:.3} | {:.1} |",
            ms(median(v)),
            ms(v[0]),
            ms(v[v.len() - 1]),
            median(v).as_secs_f64() / base.as_secs_f64()
        );
    }
    println!();
}
