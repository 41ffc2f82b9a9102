//! Read nftmesh's tables back from the kernel and compare them with Istio's default sidecar
//! capture: prints the live rules (decoded by nftmesh, not by `nft`) and every difference.
//!
//! `cargo run --example inspect [NETNS_PATH]` (as root). Changes nothing; exits 1 on drift.

use nftmesh::model::render;
use nftmesh::{Capture, CaptureConfig, CaptureError, Namespace};

/// The live tables of `ns` as nft text and the differences from the default sidecar capture.
pub fn run(ns: &Namespace) -> Result<(String, Vec<String>), CaptureError> {
    let capture = Capture::new(&CaptureConfig::sidecar())?;
    let differences = ns.check(&capture)?.iter().map(|d| d.to_string()).collect();
    Ok((render(&ns.live()?), differences))
}

#[allow(dead_code)] // `tests/kernel_examples.rs` includes this file and calls `run` directly.
fn main() {
    let netns = std::env::args().nth(1).map(std::path::PathBuf::from);
    match Namespace::open_or_current(netns.as_deref()).and_then(|ns| run(&ns)) {
        Ok((live, differences)) => {
            print!("{live}");
            for d in &differences {
                println!("drift: {d}");
            }
            if !differences.is_empty() {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("inspect: {e}");
            std::process::exit(2);
        }
    }
}
