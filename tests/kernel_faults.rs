//! Fault behaviour of the library, each test in a fresh network namespace: a batch the kernel
//! refuses (an expression this hook does not support) is a typed error naming the rule and
//! changes nothing, also when it was to remove Istio's iptables-nft rules (`--migrate`): at no
//! instant are both captures, or neither, active.

use nftmesh_test_support as support;

use nftmesh::model::compile;
use nftmesh::model::config::CaptureConfig;
use nftmesh::model::expr::Statement;
use nftmesh::model::ruleset::{Chain, ChainType, Family, Hook, Rule, Ruleset, Table};
use nftmesh::netlink::netns::run_in_new;
use nftmesh::netlink::{Connection, NetlinkError, Object};

/// A command's output without `#` comment lines (iptables-save stamps the time in them).
fn run_here(cmd: &str, args: &[&str], stdin: &str) -> String {
    support::run_here(cmd, args, stdin)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Istio's default capture plus one rule the kernel refuses: `redirect` in a filter chain.
fn refused() -> (Ruleset, Object) {
    let mut rs = compile(&CaptureConfig::sidecar());
    let mut t = Table::new(Family::Inet, "nftmesh-refused");
    let mut c = Chain::base("out", ChainType::Filter, Hook::Output, 0);
    c.rules.push(Rule::new(
        vec![],
        vec![Statement::Redirect { port: Some(15001) }],
    ));
    t.chains.push(c);
    rs.tables.push(t);
    let object = Object::Rule {
        table: "inet nftmesh-refused".into(),
        chain: "out".into(),
        index: 0,
        text: "redirect to :15001".into(),
    };
    (rs, object)
}

fn unavailable() -> Option<String> {
    support::netns::oracle_unavailable()
        .or_else(|| support::tool_missing("iptables-restore", "--version"))
}

#[test]
fn a_refused_expression_is_a_typed_error_naming_the_rule_and_changes_nothing() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let (bad, object) = refused();
    let (before, err, after) = run_in_new(move || {
        let mut conn = Connection::open().unwrap();
        conn.apply(&compile(&CaptureConfig::sidecar())).unwrap();
        let before = run_here("nft", &["list", "ruleset"], "");
        let err = conn.apply(&bad).expect_err("redirect in a filter chain");
        (before, err, run_here("nft", &["list", "ruleset"], ""))
    })
    .unwrap();
    assert_eq!(before, after);
    match err {
        NetlinkError::Rejected {
            object: o, errno, ..
        } => {
            assert_eq!(o, object);
            assert_eq!(errno, libc::EOPNOTSUPP);
        }
        other => panic!("expected a rejected rule, got {other}"),
    }
}

#[test]
fn a_refused_migration_leaves_istios_iptables_rules_and_installs_nothing() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let golden = support::golden("iptables", "empty");
    let rules: String = golden
        .lines()
        .filter(|l| !l.ends_with("tables-save"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (bad, _) = refused();
    let (before, err, after, nft_after, found) = run_in_new(move || {
        run_here("iptables-restore", &[], &rules);
        let before = run_here("iptables-save", &[], "");
        let mut conn = Connection::open().unwrap();
        let found = nftmesh::migrate::find_istio_iptables(&mut conn).unwrap();
        let err = nftmesh::migrate::apply_migrating(&mut conn, &bad).expect_err("refused");
        let after = run_here("iptables-save", &[], "");
        let nft_after = run_here("nft", &["list", "tables"], "");
        (before, err, after, nft_after, found)
    })
    .unwrap();
    assert!(before.contains(":ISTIO_OUTPUT"), "{before}");
    assert!(!found.is_empty(), "Istio's chains were found");
    assert!(matches!(err, NetlinkError::Rejected { .. }), "{err}");
    assert_eq!(before, after, "Istio's iptables rules are untouched");
    assert!(!nft_after.contains("istio-proxy"), "{nft_after}");
}
