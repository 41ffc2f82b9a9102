//! Install Istio's sidecar capture in TPROXY mode: the policy routing first (fwmark 1337 →
//! table 133, `local default dev lo` in it), then the rules in one nf_tables transaction.
//!
//! `cargo run --example tproxy [NETNS_PATH]` (as root). It leaves `table inet istio-proxy-nat`
//! (outbound redirect), `table inet istio-proxy-mangle` (inbound `tproxy to :15006`, mark 1337),
//! and `ip rule fwmark 0x539 lookup 133` with `local default dev lo table 133`.
//!
//! Undo: `cargo run --example cleanup [NETNS_PATH]` (tables and routing).

use nftmesh::{Capture, CaptureConfig, CaptureError, InterceptionMode, Namespace};

/// Install the TPROXY capture in `ns`; what was installed, as text.
pub fn run(ns: &Namespace) -> Result<String, CaptureError> {
    let mut cfg = CaptureConfig::sidecar();
    cfg.mode = InterceptionMode::Tproxy;
    let capture = Capture::new(&cfg)?;
    ns.install(&capture)?;
    Ok(format!(
        "# routing: {:?}\n{}",
        ns.routing(&capture)?,
        capture.render()
    ))
}

#[allow(dead_code)] // `tests/kernel_examples.rs` includes this file and calls `run` directly.
fn main() {
    let netns = std::env::args().nth(1).map(std::path::PathBuf::from);
    match Namespace::open_or_current(netns.as_deref()).and_then(|ns| run(&ns)) {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("tproxy: {e}");
            std::process::exit(1);
        }
    }
}
