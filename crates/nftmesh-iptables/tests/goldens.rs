//! Every Istio iptables golden (`tests/data/istio/sidecar/iptables/*.golden`, the command
//! trace of Istio's `istio-iptables` generator) parses, prints back to iptables-save text that
//! parses to the same rules, and translates.

use nftmesh_iptables::{parse, parse_trace, translate_all, IptRuleset};
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/istio/sidecar/iptables")
}

fn goldens() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(golden_dir())
        .expect("conformance goldens")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "golden"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn reprint(rs: &IptRuleset) -> String {
    let text = rs.to_string();
    let again = parse(&text, rs.family).unwrap_or_else(|e| panic!("reparse: {e}\n{text}"));
    assert_eq!(again.to_string(), text, "print → parse → print is stable");
    text
}

#[test]
fn all_27_goldens_parse_print_back_and_translate() {
    let all = goldens();
    assert_eq!(all.len(), 27, "27 iptables goldens");
    let mut with_v6 = 0;
    for (name, text) in &all {
        let trace = parse_trace(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(trace.v4.rule_count() > 0, "{name}: IPv4 rules");
        let body_rules = text
            .lines()
            .filter(|l| l.starts_with("-A") || l.starts_with("-I"))
            .count();
        let parts = trace.parts();
        let parsed: usize = parts.iter().map(|p| p.rule_count()).sum();
        assert_eq!(parsed, body_rules, "{name}: one parsed rule per -A/-I line");
        with_v6 += usize::from(trace.v6.is_some());
        for p in &parts {
            reprint(p);
        }
        let nft = translate_all(&parts).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            nft.rule_count(),
            parsed,
            "{name}: one nft rule per iptables rule"
        );
    }
    assert!(with_v6 > 0, "some goldens carry an IPv6 part");
}
