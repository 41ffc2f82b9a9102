//! Install Istio's sidecar capture in TPROXY mode: the policy routing first (fwmark 1337 →
//! table 133, `local default dev lo` in it), then the rules in one nf_tables transaction.
//!
//! `cargo run --example tproxy [NETNS_PATH]` (as root). It leaves `table inet istio-proxy-nat`
//! (outbound redirect), `table inet istio-proxy-mangle` (inbound `tproxy to :15006`, mark 1337),
//! and `ip rule fwmark 0x539 lookup 133` with `local default dev lo table 133`.
//!
//! Undo: `cargo run --example cleanup [NETNS_PATH]` (tables and routing).

use nftmesh::model::config::{CaptureConfig, InterceptionMode};
use nftmesh::model::{compile, render};
use nftmesh::netlink::routes::{Routing, TproxyRouting};
use nftmesh::netlink::{Connection, NetlinkError};

/// Install the TPROXY capture in the calling thread's namespace; what was installed, as text.
pub fn run() -> Result<String, NetlinkError> {
    let mut cfg = CaptureConfig::sidecar();
    cfg.mode = InterceptionMode::Tproxy;
    let routing = TproxyRouting {
        mark: cfg.tproxy_mark,
        table: cfg.tproxy_route_table,
        ipv6: cfg.ipv6,
    };
    let mut routes = Routing::open()?;
    routes.ensure(&routing)?;
    let ruleset = compile(&cfg);
    Connection::open()?.apply(&ruleset)?;
    Ok(format!(
        "# routing: {:?}\n{}",
        routes.state(&routing)?,
        render(&ruleset)
    ))
}

#[allow(dead_code)] // `tests/examples.rs` includes this file and calls `run` directly.
fn main() {
    let netns = std::env::args().nth(1).map(std::path::PathBuf::from);
    let result = nftmesh::netlink::netns::run_in_or_here(netns.as_deref(), run).and_then(|r| r);
    match result {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("tproxy: {e}");
            std::process::exit(1);
        }
    }
}
