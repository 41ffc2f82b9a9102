//! Remove what the other examples (and `nftmesh apply`) install: nftmesh's tables of both
//! capture modes, in one transaction, and the TPROXY policy routing. Every other table, rule
//! and route is left alone.
//!
//! `cargo run --example cleanup [NETNS_PATH]` (as root). Afterwards `nft list tables` shows no
//! `istio-proxy-*` table and `ip rule` no `fwmark 0x539 lookup 133`. Nothing to undo.

use nftmesh::model::compile;
use nftmesh::model::config::{CaptureConfig, InterceptionMode};
use nftmesh::netlink::routes::{Routing, TproxyRouting};
use nftmesh::netlink::{Connection, NetlinkError};

/// Remove nftmesh's tables and routing in the calling thread's namespace; how many tables went.
pub fn run() -> Result<usize, NetlinkError> {
    let mut tables = Vec::new();
    let mut cfg = CaptureConfig::sidecar();
    for mode in [InterceptionMode::Redirect, InterceptionMode::Tproxy] {
        cfg.mode = mode;
        for t in compile(&cfg).tables {
            if !tables.contains(&(t.family, t.name.clone())) {
                tables.push((t.family, t.name));
            }
        }
    }
    let n = Connection::open()?.delete_tables(&tables)?;
    Routing::open()?.remove(&TproxyRouting {
        mark: cfg.tproxy_mark,
        table: cfg.tproxy_route_table,
        ipv6: true,
    })?;
    Ok(n)
}

#[allow(dead_code)] // `tests/examples.rs` includes this file and calls `run` directly.
fn main() {
    let netns = std::env::args().nth(1).map(std::path::PathBuf::from);
    let result = nftmesh::netlink::netns::run_in_or_here(netns.as_deref(), run).and_then(|r| r);
    match result {
        Ok(n) => println!("removed {n} table(s) and the TPROXY routing"),
        Err(e) => {
            eprintln!("cleanup: {e}");
            std::process::exit(1);
        }
    }
}
