//! Three-way equivalence on Istio's ambient in-pod cases, packet by packet: the xtables
//! interpreter on Istio's ambient iptables golden ≡ the model's evaluator on its translation ≡
//! the evaluator on `compile_inpod` of the same case. On the two host cases (`-m owner
//! --socket-exists -m set --match-set ... -j SNAT`), the interpreter with the probe ipsets ≡ the
//! translation with those sets' elements, and `compile_host` agrees with both except exactly
//! where Istio's iptables and nftables generators differ: iptables SNATs a probe-set
//! connection from any local socket, nftables (and nftmesh) only the kubelet's.

use nftmesh_test_support as support;

use nftmesh::iptables::{interpret, interpret_with_sets, parse_trace, translate_all, IpSets};
use nftmesh::model::ambient::{
    compile_host, compile_inpod, AmbientHostConfig, PROBE_SET_V4, PROBE_SET_V6,
};
use nftmesh::model::expr::IpVersion;
use nftmesh::model::ruleset::{Ruleset, SetElement};

use nftmesh::model::{eval, Hook};
use support::corpus::{dims, every_packet};

#[test]
fn ambient_goldens_interpreter_translation_and_compiler_agree() {
    let mut checked = 0;
    let mut differences = Vec::new();
    for (name, cfg) in support::ambient_cases::inpod() {
        let parts = golden_parts(&name);
        let translated = translate_all(&parts).unwrap_or_else(|e| panic!("{name}: {e}"));
        let compiled = compile_inpod(&cfg);
        let d = dims(&parts, &[0, 1000, 1337]);
        let mut n = 0usize;
        for (hook, mut p) in every_packet(&d, 0xa3b) {
            n += 1;
            // ztunnel's and the probes' marks and sources among the corpus.
            if n.is_multiple_of(7) {
                p.mark = 0x539;
            }
            if n.is_multiple_of(11) {
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

/// The parsed IPv4 and IPv6 parts of Istio's ambient iptables golden `name`.
fn golden_parts(name: &str) -> Vec<nftmesh::iptables::IptRuleset> {
    let path = format!(
        "{}/tests/data/istio/ambient/iptables/{name}.golden",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse_trace(&text)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .parts()
}

/// Fill every set named `name` in `rs` with `nets`.
fn fill(rs: &mut Ruleset, name: &str, nets: &[ipnet::IpNet]) {
    for t in &mut rs.tables {
        for set in t.sets.iter_mut().filter(|s| s.name == name) {
            set.elements = nets.iter().map(|n| SetElement::Prefix(*n)).collect();
        }
    }
}

#[test]
fn host_probe_goldens_interpreter_translation_and_compiler_agree_but_for_istios_own_difference() {
    const KUBELET: u32 = 1000;
    let pod4: ipnet::IpNet = "10.244.0.7/32".parse().unwrap();
    let pod6: ipnet::IpNet = "fd00:10:244::7/128".parse().unwrap();
    for ipv6 in [false, true] {
        let name = if ipv6 { "hostprobe_ipv6" } else { "hostprobe" };
        let parts = golden_parts(name);
        let mut sets = IpSets::new();
        sets.insert(PROBE_SET_V4.into(), vec![pod4]);
        sets.insert(PROBE_SET_V6.into(), vec![pod6]);
        let mut translated = translate_all(&parts).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Istio's iptables host golden SNATs to its default IPv6 address (ours too), unlike
        // its nftables host golden.
        let mut host = compile_host(&AmbientHostConfig {
            ipv6,
            ..AmbientHostConfig::new(KUBELET)
        });
        for rs in [&mut translated, &mut host] {
            fill(rs, PROBE_SET_V4, &[pod4]);
            fill(rs, PROBE_SET_V6, &[pod6]);
        }
        let d = dims(&parts, &[0, KUBELET, 1337]);
        let (mut n, mut snatted, mut istio_only) = (0usize, 0usize, 0usize);
        for (hook, mut p) in every_packet(&d, 0x5a7) {
            n += 1;
            let version = p.version();
            // Half the packets go to a pod in the probe set.
            if n.is_multiple_of(2) {
                p.daddr = if version == IpVersion::V4 {
                    pod4.addr()
                } else {
                    pod6.addr()
                };
            }
            let a = interpret_with_sets(&parts, &p, hook, &sets).unwrap();
            let b = eval(&translated, &p, hook).unwrap();
            assert_eq!(
                a, b,
                "{name}: interpreter vs translation at {hook:?} for {p:?}"
            );
            snatted += usize::from(a.snat.is_some());
            let c = eval(&host, &p, hook).unwrap();
            if a != c {
                // The one difference: a local socket other than the kubelet's.
                let other_socket = p.skuid.is_some_and(|u| u != KUBELET);
                assert!(
                    other_socket && c.snat.is_none() && a.snat.is_some(),
                    "{name}: {hook:?} {p:?}\n  iptables: {a:?}\n  compiled: {c:?}"
                );
                istio_only += 1;
            }
        }
        assert!(n > 5_000, "{name}: corpus of {n} packets");
        assert!(snatted > 0, "{name}: no packet was SNATed");
        assert!(istio_only > 0, "{name}: the uid difference never showed");
        // Without the sets' contents the interpreter refuses, as iptables does.
        let probe = nftmesh::model::Packet::local_tcp(
            KUBELET,
            KUBELET,
            "10.0.0.5".parse().unwrap(),
            pod4.addr(),
            8080,
            "eth0",
        );
        let e = interpret(&parts, &probe, Hook::Postrouting).unwrap_err();
        assert!(e.to_string().contains(PROBE_SET_V4), "{e}");
    }
}
