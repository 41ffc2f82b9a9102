//! The compared capture: Istio's case `inbound-ports-wildcard` with outbound capture of
//! everything (`-i '*'`) and N excluded CIDRs, as our config and as the iptables rules Istio
//! writes for it (one `-d CIDR -j RETURN` rule per excluded CIDR, then the jump to the
//! redirect).

use nftmesh::model::config::{CaptureConfig, IstioSettings};
use std::net::Ipv4Addr;

/// `n` excluded /32s that no aggregation merges (every other address of 172.16.0.0/12) and
/// that never cover the benchmark's destination (10.77.0.2).
pub fn cidrs(n: usize) -> Vec<String> {
    (0..n as u32)
        .map(|i| format!("{}/32", Ipv4Addr::from(0xAC10_0000u32 + 2 * i)))
        .collect()
}

/// Our config with `n` excluded CIDRs.
pub fn config(n: usize) -> CaptureConfig {
    let settings = IstioSettings {
        proxy_gid: "1337".into(),
        inbound_ports: "*".into(),
        outbound_ip_ranges_include: "*".into(),
        outbound_ip_ranges_exclude: cidrs(n).join(","),
        ..IstioSettings::default()
    };
    settings.to_config().expect("config")
}

/// Istio's iptables rules for the same capture.
pub fn iptables(n: usize) -> String {
    let golden = super::tools::golden_v4("inbound-ports-wildcard");
    let mut out = String::new();
    for line in golden.lines() {
        if line == "COMMIT" {
            for c in cidrs(n) {
                out.push_str(&format!("-A ISTIO_OUTPUT -d {c} -j RETURN\n"));
            }
            out.push_str("-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
