//! Translate an iptables-save file (or an Istio golden trace with `--istio-trace`) to nf_tables
//! and print it as an `nft -f` script. Touches no kernel state.
//!
//! `cargo run --example translate_file -- FILE [-6] [--istio-trace]`. Load the output with
//! `nft -f` or apply it natively with `nftmesh restore FILE`.

use nftmesh::iptables::{parse, parse_trace, translate_all};
use nftmesh::model::expr::IpVersion;
use nftmesh::model::render;

/// The nft text for `text` (IPv6 when `ipv6`; an Istio trace when `trace`), or the error
/// naming line, column and token.
pub fn run(text: &str, ipv6: bool, trace: bool) -> Result<String, String> {
    let parts = if trace {
        parse_trace(text).map_err(|e| e.to_string())?.parts()
    } else {
        let family = if ipv6 { IpVersion::V6 } else { IpVersion::V4 };
        vec![parse(text, family).map_err(|e| e.to_string())?]
    };
    Ok(render(&translate_all(&parts).map_err(|e| e.to_string())?))
}

#[allow(dead_code)] // `tests/kernel_examples.rs` includes this file and calls `run` directly.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(file) = args.iter().find(|a| !a.starts_with('-')) else {
        eprintln!("usage: translate_file FILE [-6] [--istio-trace]");
        std::process::exit(2);
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("translate_file: {file}: {e}");
            std::process::exit(2);
        }
    };
    let ipv6 = args.iter().any(|a| a == "-6");
    let trace = args.iter().any(|a| a == "--istio-trace");
    match run(&text, ipv6, trace) {
        Ok(nft) => print!("{nft}"),
        Err(e) => {
            eprintln!("translate_file: {file}: {e}");
            std::process::exit(1);
        }
    }
}
