//! Istio's ambient cases (`tests/data/istio/ambient/CASES.md`) as nftmesh settings.

use nftmesh::model::ambient::{AmbientConfig, AmbientHostConfig};

/// The IPv6 probe SNAT address Istio's ambient goldens were generated with (its tests' value;
/// Istio's default, like ours, is `fd16:9254:7127:1337:ffff:ffff:ffff:ffff`).
pub const GOLDEN_PROBE_SNAT_IPV6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(
    0xe9ac, 0x1e77, 0x90ca, 0x399f, 0x4d6d, 0xece2, 0x2f9b, 0x3164,
);

/// The 12 in-pod cases: name (`_ipv6` for the dual-stack twin) and settings.
pub fn inpod() -> Vec<(String, AmbientConfig)> {
    let vifs = || vec!["fake1s0f0".to_string(), "fake1s0f1".to_string()];
    let mut out = Vec::new();
    for ipv6 in [false, true] {
        let suffix = if ipv6 { "_ipv6" } else { "" };
        let base = AmbientConfig {
            ipv6,
            probe_snat_ipv6: GOLDEN_PROBE_SNAT_IPV6,
            ..AmbientConfig::default()
        };
        let dns = AmbientConfig {
            dns_capture: true,
            ..base.clone()
        };
        let bypass = AmbientConfig {
            bypass_inbound_capture: true,
            ..base.clone()
        };
        let rerouted = |c: &AmbientConfig| AmbientConfig {
            reroute_virtual_interfaces: vifs(),
            ..c.clone()
        };
        for (name, cfg) in [
            ("default", dns.clone()),
            ("dns_pod_enabled_and_off_globally", dns),
            ("dns_pod_disabled_and_on_globally", base.clone()),
            ("ingress", bypass.clone()),
            ("virtual_interfaces", rerouted(&base)),
            ("ingress_and_virtual_interfaces", rerouted(&bypass)),
        ] {
            out.push((format!("{name}{suffix}"), cfg));
        }
    }
    out
}

/// The 2 host cases (`hostprobe`, `hostprobe_ipv6`), with the kubelet uid 1000 of Istio's tests.
pub fn host() -> Vec<(String, AmbientHostConfig)> {
    [false, true]
        .into_iter()
        .map(|ipv6| {
            let name = if ipv6 { "hostprobe_ipv6" } else { "hostprobe" };
            let cfg = AmbientHostConfig {
                ipv6,
                probe_snat_ipv6: GOLDEN_PROBE_SNAT_IPV6,
                ..AmbientHostConfig::new(1000)
            };
            (name.to_string(), cfg)
        })
        .collect()
}
