//! Three-way equivalence on Linkerd's capture, packet by packet, for every flag set of
//! `tests/data/linkerd/cases/`: the xtables interpreter on the iptables rules linkerd2-proxy-init
//! itself produces for it (`tests/data/linkerd/goldens/`, see that folder's README for how they
//! were made) ≡ the model's evaluator on their translation ≡ the evaluator on
//! `compile_linkerd` of the same flags. No difference is expected on these cases: the
//! deliberate differences (an invalid port or a subnet of the other family is an error here)
//! are outside what proxy-init accepts.

use nftmesh_test_support as support;

use nftmesh_iptables::{interpret, parse_trace, translate_all};
use nftmesh_model::eval;
use nftmesh_model::expr::PortRange;
use nftmesh_model::linkerd::{compile_linkerd, LinkerdConfig};
use serde_json::Value;
use support::corpus::{dims, every_packet};

/// The flag set of a case as proxy-init reads it (`proxy-init/cmd/root.go`): ids below 1 are
/// no bypass, ports as `N` or `A-B`, `--ipv6` true unless given.
fn config(flags: &Value) -> LinkerdConfig {
    let ports = |key: &str| -> Vec<PortRange> {
        flags[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        let p = p.as_str().expect("a port string");
                        let (a, b) = p.split_once('-').unwrap_or((p, p));
                        PortRange {
                            first: a.parse().unwrap(),
                            last: b.parse().unwrap(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let id = |key: &str| flags[key].as_i64().filter(|v| *v > 0).map(|v| v as u32);
    LinkerdConfig {
        incoming_proxy_port: flags["incoming-proxy-port"].as_u64().unwrap() as u16,
        outgoing_proxy_port: flags["outgoing-proxy-port"].as_u64().unwrap() as u16,
        proxy_uid: id("proxy-uid"),
        proxy_gid: id("proxy-gid"),
        ports_to_redirect: flags["ports-to-redirect"]
            .as_array()
            .map(|a| a.iter().map(|p| p.as_u64().unwrap() as u16).collect())
            .unwrap_or_default(),
        inbound_ports_to_ignore: ports("inbound-ports-to-ignore"),
        outbound_ports_to_ignore: ports("outbound-ports-to-ignore"),
        subnets_to_ignore: flags["subnets-to-ignore"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap().parse().unwrap())
                    .collect()
            })
            .unwrap_or_default(),
        ipv6: flags["ipv6"].as_bool().unwrap_or(true),
    }
}

#[test]
fn linkerds_own_rules_interpreter_translation_and_compiler_agree() {
    let data = support::workspace_root().join("tests/data/linkerd");
    let mut names: Vec<String> = std::fs::read_dir(data.join("cases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .collect();
    names.sort();
    assert_eq!(names.len(), 7, "{names:?}");
    for name in &names {
        let flags: Value = serde_json::from_str(
            &std::fs::read_to_string(data.join(format!("cases/{name}.json"))).unwrap(),
        )
        .unwrap();
        let golden = std::fs::read_to_string(data.join(format!("goldens/{name}.golden"))).unwrap();
        let trace = parse_trace(&golden).unwrap_or_else(|e| panic!("{name}: {e}"));
        let parts = trace.parts();
        let translated = translate_all(&parts).unwrap_or_else(|e| panic!("{name}: {e}"));
        let cfg = config(&flags);
        cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(trace.v6.is_some(), cfg.ipv6, "{name}: one run per family");
        let compiled = compile_linkerd(&cfg);
        let d = dims(&parts, &[0, 1000, 2102, 2103]);
        let mut n = 0usize;
        for (hook, p) in &every_packet(&d, 0x11fe) {
            let hook = *hook;
            n += 1;
            let a = interpret(&parts, p, hook).unwrap();
            let b = eval(&translated, p, hook).unwrap();
            assert_eq!(
                a, b,
                "{name}: interpreter vs translation at {hook:?} for {p:?}"
            );
            let c = eval(&compiled, p, hook).unwrap();
            assert_eq!(
                a, c,
                "{name}: proxy-init's rules vs compiled at {hook:?} for {p:?}"
            );
        }
        assert!(n > 5_000, "{name}: corpus of {n} packets");
    }
}
