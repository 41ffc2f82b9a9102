//! Three-way equivalence on Istio's ambient in-pod cases, packet by packet: the xtables
//! interpreter on Istio's ambient iptables golden ≡ the model's evaluator on its translation ≡
//! the evaluator on `compile_inpod` of the same case. The two host cases use ipsets and SNAT,
//! which the iptables reader does not take (they are proven with real traffic instead, see
//! `tests/ambient_host.rs`).

mod support;

use nftmesh::iptables::{interpret, parse_trace, translate_all};
use nftmesh::model::ambient::{compile_inpod, AmbientConfig};
use nftmesh::model::expr::IpVersion;
use nftmesh::model::{eval, Hook};
use support::corpus::{dims, random, systematic};

/// The IPv6 probe SNAT address Istio's ambient goldens were generated with (its tests' value;
/// Istio's default, like ours, is `fd16:9254:7127:1337:ffff:ffff:ffff:ffff`).
const GOLDEN_PROBE_SNAT_IPV6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(
    0xe9ac, 0x1e77, 0x90ca, 0x399f, 0x4d6d, 0xece2, 0x2f9b, 0x3164,
);

fn cases() -> Vec<(String, AmbientConfig)> {
    let vifs = || vec!["fake1s0f0".to_string(), "fake1s0f1".to_string()];
    let mut out = Vec::new();
    for ipv6 in [false, true] {
        let suffix = if ipv6 { "_ipv6" } else { "" };
        let base = AmbientConfig {
            ipv6,
            probe_snat_ipv6: GOLDEN_PROBE_SNAT_IPV6,
            ..AmbientConfig::default()
        };
        for (name, cfg) in [
            (
                "default",
                AmbientConfig {
                    dns_capture: true,
                    ..base.clone()
                },
            ),
            (
                "dns_pod_enabled_and_off_globally",
                AmbientConfig {
                    dns_capture: true,
                    ..base.clone()
                },
            ),
            ("dns_pod_disabled_and_on_globally", base.clone()),
            (
                "ingress",
                AmbientConfig {
                    bypass_inbound_capture: true,
                    ..base.clone()
                },
            ),
            (
                "virtual_interfaces",
                AmbientConfig {
                    reroute_virtual_interfaces: vifs(),
                    ..base.clone()
                },
            ),
            (
                "ingress_and_virtual_interfaces",
                AmbientConfig {
                    bypass_inbound_capture: true,
                    reroute_virtual_interfaces: vifs(),
                    ..base.clone()
                },
            ),
        ] {
            out.push((format!("{name}{suffix}"), cfg));
        }
    }
    out
}

#[test]
fn ambient_goldens_interpreter_translation_and_compiler_agree() {
    let mut checked = 0;
    let mut differences = Vec::new();
    for (name, cfg) in cases() {
        let path = format!(
            "{}/tests/data/istio/ambient/iptables/{name}.golden",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let trace = parse_trace(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let parts = trace.parts();
        let translated = translate_all(&parts).unwrap_or_else(|e| panic!("{name}: {e}"));
        let compiled = compile_inpod(&cfg);
        let d = dims(&parts, &[0, 1000, 1337]);
        let mut n = 0usize;
        for version in [IpVersion::V4, IpVersion::V6] {
            for hook in Hook::ALL {
                let mut pkts = systematic(&d, version, hook);
                pkts.extend(random(&d, version, hook, 1000, 0xa3b ^ (n as u64)));
                for mut p in pkts {
                    n += 1;
                    // ztunnel's and the probes' marks and sources among the corpus.
                    if n % 7 == 0 {
                        p.mark = 0x539;
                    }
                    if n % 11 == 0 {
                        p.ct_mark = 0x111;
                    }
                    let a = interpret(&parts, &p, hook).unwrap();
                    let b = eval(&translated, &p, hook).unwrap();
                    assert_eq!(
                        a, b,
                        "{name}: interpreter vs translation at {hook:?} for {p:?}"
                    );
                    let c = eval(&compiled, &p, hook).unwrap();
                    // Istio's iptables generator writes no ip6tables rules without IPv6; the
                    // inet tables of its nftables generator (and ours) capture IPv6 anyway.
                    let ipv6_off = !cfg.ipv6 && p.version() == IpVersion::V6;
                    if a != c && !ipv6_off {
                        differences.push(format!(
                            "{name}: {hook:?} {p:?}\n  iptables: {a:?}\n  compiled: {c:?}"
                        ));
                    }
                }
            }
        }
        assert!(n > 10_000, "{name}: corpus of {n} packets");
        checked += 1;
    }
    assert_eq!(checked, 12, "12 in-pod iptables goldens");
    assert!(
        differences.is_empty(),
        "{} packets differ; first:\n{}",
        differences.len(),
        differences
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
