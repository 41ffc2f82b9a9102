//! Install Istio's default sidecar capture (REDIRECT mode) in one nf_tables transaction and
//! print what the kernel now holds, read back over netlink.
//!
//! `cargo run --example sidecar_redirect [NETNS_PATH]` (as root; in the given network namespace,
//! e.g. `/var/run/netns/pod1`, or in ours). It leaves `table inet istio-proxy-nat`: outbound TCP
//! to :15001, inbound TCP to :15006, the proxy's uid/gid 1337 left alone, 127.0.0.6 passthrough:
//!
//! ```text
//! table inet istio-proxy-nat {
//!     chain prerouting { type nat hook prerouting priority dstnat; ... jump istio-inbound }
//!     chain output { type nat hook output priority dstnat; ... jump istio-output }
//!     ...
//! }
//! ```
//!
//! Undo: `cargo run --example cleanup [NETNS_PATH]`.

use nftmesh::model::render;
use nftmesh::{Capture, CaptureConfig, CaptureError, Namespace};

/// Install the default sidecar capture in `ns`; the live tables as nft text.
pub fn run(ns: &Namespace) -> Result<String, CaptureError> {
    let report = ns.install(&Capture::new(&CaptureConfig::sidecar())?)?;
    Ok(format!(
        "# one transaction: {} messages, {} bytes\n{}",
        report.messages,
        report.bytes,
        render(&ns.live()?)
    ))
}

#[allow(dead_code)] // `tests/kernel_examples.rs` includes this file and calls `run` directly.
fn main() {
    let netns = std::env::args().nth(1).map(std::path::PathBuf::from);
    match Namespace::open_or_current(netns.as_deref()).and_then(|ns| run(&ns)) {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("sidecar_redirect: {e}");
            std::process::exit(1);
        }
    }
}
