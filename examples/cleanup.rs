//! Remove what the other examples (and `nftmesh apply`) install: nftmesh's tables of both
//! capture modes, in one transaction, and the TPROXY policy routing and `::6`. Every other
//! table, rule and route is left alone.
//!
//! `cargo run --example cleanup [NETNS_PATH]` (as root). Afterwards `nft list tables` shows no
//! `istio-proxy-*` table and `ip rule` no `fwmark 0x539 lookup 133`. Nothing to undo.

use nftmesh::{Capture, CaptureConfig, CaptureError, Namespace};

/// Remove nftmesh's tables and routing from `ns`; how many tables went.
pub fn run(ns: &Namespace) -> Result<usize, CaptureError> {
    // The default settings name the routing (mark 1337, table 133) to remove.
    let removed = ns.remove(&Capture::new(&CaptureConfig::sidecar())?)?;
    Ok(removed.tables)
}

#[allow(dead_code)] // `tests/kernel_examples.rs` includes this file and calls `run` directly.
fn main() {
    let netns = std::env::args().nth(1).map(std::path::PathBuf::from);
    match Namespace::open_or_current(netns.as_deref()).and_then(|ns| run(&ns)) {
        Ok(n) => println!("removed {n} table(s) and the TPROXY routing"),
        Err(e) => {
            eprintln!("cleanup: {e}");
            std::process::exit(1);
        }
    }
}
