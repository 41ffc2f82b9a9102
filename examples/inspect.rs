//! Read nftmesh's tables back from the kernel and compare them with Istio's default sidecar
//! capture: prints the live rules (decoded by nftmesh, not by `nft`) and every difference.
//!
//! `cargo run --example inspect [NETNS_PATH]` (as root). Changes nothing; exits 1 on drift.

use nftmesh::model::{compile, render, CaptureConfig};
use nftmesh::netlink::diff::diff;
use nftmesh::netlink::{Connection, NetlinkError};

/// The live tables as nft text and the differences from the default sidecar capture.
pub fn run() -> Result<(String, Vec<String>), NetlinkError> {
    let desired = compile(&CaptureConfig::sidecar());
    let ids: Vec<_> = desired
        .tables
        .iter()
        .map(|t| (t.family, t.name.clone()))
        .collect();
    let live = Connection::open()?.dump_ruleset(&ids)?;
    let differences = diff(&desired, &live)
        .iter()
        .map(|d| d.to_string())
        .collect();
    Ok((render(&live), differences))
}

#[allow(dead_code)] // `tests/examples.rs` includes this file and calls `run` directly.
fn main() {
    let netns = std::env::args().nth(1).map(std::path::PathBuf::from);
    let result = nftmesh::netlink::netns::run_in_or_here(netns.as_deref(), run).and_then(|r| r);
    match result {
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
