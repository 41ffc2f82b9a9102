//! Conformance with Istio's ambient generator: for each of the 14 nftables cases of
//! `tests/data/istio/ambient/CASES.md` (12 in-pod, 2 host), our compiled ruleset and Istio's
//! golden, each loaded with the real `nft -f` into a fresh network namespace, list the same
//! `nft list ruleset`, except for the differences `docs/istio-differences.md` lists under
//! `ambient/CASE`, and exactly those.

use nftmesh_test_support as support;

use nftmesh::model::ambient::{
    compile_host, compile_inpod, AmbientConfig, AmbientHostConfig, PROBE_SET_V4, PROBE_SET_V6,
};
use nftmesh::model::render;
use support::{diff_lines, listing_lines, netns};

/// Case name → our ruleset as nft text.
fn cases() -> Vec<(String, String)> {
    let inpod = support::ambient_cases::inpod()
        .into_iter()
        .map(|(name, cfg)| {
            cfg.validate().unwrap();
            (name, render(&compile_inpod(&cfg)))
        });
    let host = support::ambient_cases::host()
        .into_iter()
        .map(|(name, cfg)| (name, render(&compile_host(&cfg))));
    inpod.chain(host).collect()
}

/// Istio's golden, with the host's probe sets declared first: Istio's `host_sets.go` creates
/// them in the same table, outside the golden's transaction.
fn golden(name: &str) -> String {
    let path = format!(
        "{}/tests/data/istio/ambient/nftables/{name}.golden",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    if !name.starts_with("hostprobe") {
        return text;
    }
    let mut sets = String::from("add table inet istio-ambient-nat\n");
    sets.push_str(&format!(
        "add set inet istio-ambient-nat {PROBE_SET_V4} {{ type ipv4_addr ; }}\n"
    ));
    if name.ends_with("_ipv6") {
        sets.push_str(&format!(
            "add set inet istio-ambient-nat {PROBE_SET_V6} {{ type ipv6_addr ; }}\n"
        ));
    }
    sets + &text
}

#[test]
fn every_ambient_case_lists_like_istios_golden_except_documented_differences() {
    if let Some(why) = netns::oracle_unavailable() {
        support::skip(&format!("the nft oracle is unavailable: {why}"));
        return;
    }
    let docs = support::documented_differences(|h| h.strip_prefix("ambient/").map(str::to_string));
    let all = cases();
    assert_eq!(all.len(), 14, "CASES.md has 14 nftables cases");
    let mut failures = Vec::new();
    for (name, ours) in &all {
        let ours_listed = netns::load_and_list(ours, None)
            .unwrap_or_else(|e| panic!("{name}: nft refused our render: {e}\n{ours}"));
        let theirs = netns::load_and_list(&golden(name), None)
            .unwrap_or_else(|e| panic!("{name}: nft refused the golden: {e}"));
        let diff = diff_lines(&listing_lines(&theirs), &listing_lines(&ours_listed));
        let expected = docs.get(name).cloned().unwrap_or_default();
        let (mut got, mut want) = (diff.clone(), expected.clone());
        got.sort();
        want.sort();
        if got != want {
            failures.push(format!(
                "## `ambient/{name}`\n```diff\n{}\n```\n(documented:\n{})",
                diff.join("\n"),
                expected.join("\n")
            ));
        }
    }
    for name in docs.keys() {
        assert!(
            all.iter().any(|(c, _)| c == name),
            "docs/istio-differences.md names unknown ambient case {name}"
        );
    }
    assert!(
        failures.is_empty(),
        "undocumented or missing differences:\n{}",
        failures.join("\n\n")
    );
}

/// Every ambient ruleset applies over netlink (one transaction) and dumps back as applied.
#[test]
fn every_ambient_ruleset_applies_over_netlink_and_dumps_back() {
    use nftmesh::model::canonical::canonical_ruleset;
    use nftmesh::netlink::{netns::run_in_new, Connection};
    if let Some(why) = support::kernel_unavailable() {
        support::skip(&why);
        return;
    }
    let mut rulesets = Vec::new();
    for ipv6 in [false, true] {
        for cfg in [
            AmbientConfig {
                dns_capture: true,
                ipv6,
                reroute_virtual_interfaces: vec!["veth9".into()],
                ..AmbientConfig::default()
            },
            AmbientConfig {
                bypass_inbound_capture: true,
                ipv6,
                ..AmbientConfig::default()
            },
        ] {
            rulesets.push(compile_inpod(&cfg));
        }
        rulesets.push(compile_host(&AmbientHostConfig {
            ipv6,
            ..AmbientHostConfig::new(1000)
        }));
    }
    let failures = run_in_new(move || {
        let mut conn = Connection::open().unwrap();
        let mut failures = Vec::new();
        for rs in rulesets {
            let ids: Vec<_> = rs
                .tables
                .iter()
                .map(|t| (t.family, t.name.clone()))
                .collect();
            conn.apply(&rs).unwrap();
            let back = conn.dump_ruleset(&ids).unwrap();
            if back != canonical_ruleset(&rs) {
                failures.push(format!("{}\nread back as\n{}", render(&rs), render(&back)));
            }
            conn.delete_tables(&ids).unwrap();
        }
        failures
    })
    .unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
