//! What a node agent does with the capture API: keep one [`Namespace`] handle per pod, install
//! capture in every pod from worker threads, switch one pod REDIRECT → TPROXY → REDIRECT, check
//! every pod for drift, and remove capture from all of them.
//!
//! `cargo run --example agent_loop NETNS_PATH...` (as root; e.g. `ip netns add pod1 pod2`, then
//! `/var/run/netns/pod1 /var/run/netns/pod2`). Each switch is one nf_tables transaction per
//! pod (the other mode's table is deleted in it), with the TPROXY routing added before the
//! switch to TPROXY and removed after the switch back. It leaves nothing: every pod's capture
//! is removed at the end (`nft list tables` in a pod shows no `istio-proxy-*` table).

use nftmesh::{Capture, CaptureConfig, CaptureError, InterceptionMode, Namespace};
use std::path::PathBuf;

/// One line per step: pod index, step, the tables and TPROXY rules it leaves, and the drift.
pub fn run(pods: &[PathBuf]) -> Result<Vec<String>, CaptureError> {
    let handles = pods
        .iter()
        .map(Namespace::open)
        .collect::<Result<Vec<_>, _>>()?;
    let mut cfg = CaptureConfig::sidecar();
    let redirect = Capture::new(&cfg)?;
    cfg.mode = InterceptionMode::Tproxy;
    let tproxy = Capture::new(&cfg)?;
    let mut log = Vec::new();
    // Handles are Send + Sync: install in every pod at once, one worker thread each.
    std::thread::scope(|s| {
        let workers: Vec<_> = handles
            .iter()
            .map(|ns| s.spawn(|| ns.install(&redirect)))
            .collect();
        for w in workers {
            w.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        }
        Ok::<(), CaptureError>(())
    })?;
    let step =
        |i: usize, what: &str, ns: &Namespace, c: &Capture| -> Result<String, CaptureError> {
            let tables: Vec<String> = ns.live()?.tables.iter().map(|t| t.name.clone()).collect();
            let routing = ns.routing(c)?;
            Ok(format!(
                "pod {i}: {what}: tables {tables:?}, tproxy rules {:?}, drift {}",
                routing.rules,
                ns.check(c)?.len()
            ))
        };
    for (i, ns) in handles.iter().enumerate() {
        log.push(step(i, "installed REDIRECT", ns, &redirect)?);
    }
    if let Some(first) = handles.first() {
        first.install(&tproxy)?;
        log.push(step(0, "switched to TPROXY", first, &tproxy)?);
        first.install(&redirect)?;
        log.push(step(0, "switched back to REDIRECT", first, &redirect)?);
    }
    for (i, ns) in handles.iter().enumerate() {
        let removed = ns.remove(&redirect)?;
        log.push(format!("pod {i}: removed {} table(s)", removed.tables));
    }
    Ok(log)
}

#[allow(dead_code)] // `tests/kernel_capture_api.rs` includes this file and calls `run` directly.
fn main() {
    let pods: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if pods.is_empty() {
        eprintln!("usage: agent_loop NETNS_PATH...");
        std::process::exit(2);
    }
    match run(&pods) {
        Ok(log) => {
            for line in log {
                println!("{line}");
            }
        }
        Err(e) => {
            eprintln!("agent_loop: {e}");
            std::process::exit(1);
        }
    }
}
