//! `nftmesh stats`: the live counters as text, JSON and Prometheus text, in a namespace the
//! test creates (the counts growing with real connections is `tests/traffic_stats.rs` of the library).

mod common;

use common::{netns_or_skip, nftmesh, nftmesh_ok};
use serde_json::Value;

#[test]
fn stats_prints_totals_and_rules_as_text_json_and_prometheus() {
    let Some(ns) = netns_or_skip() else { return };
    let path = ns.path();
    let empty = nftmesh_ok(&["stats", "--network-namespace", &path]);
    assert_eq!(empty, "no nftmesh table in this namespace\n");
    nftmesh_ok(&[
        "apply",
        "--network-namespace",
        &path,
        "-i",
        "*",
        "--ipv6",
        "off",
    ]);

    let text = nftmesh_ok(&["stats", "--network-namespace", &path]);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["TOTAL", "BY", "REASON", "PACKETS", "BYTES"],
        "{text}"
    );
    let captured: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(captured[..2], ["captured", "outbound"], "{text}");
    assert_eq!(captured[captured.len() - 2..], ["0", "0"], "{text}");
    assert!(
        text.contains("\n   PACKETS        BYTES  FAMILY TABLE CHAIN #INDEX  [REASON]  RULE\n"),
        "{text}"
    );
    assert!(text.contains("inet istio-proxy-nat istio-redirect #0  [captured_outbound]  meta l4proto tcp counter redirect to :15001"), "{text}");

    let v: Value = serde_json::from_str(&nftmesh_ok(&[
        "stats",
        "--network-namespace",
        &path,
        "--json",
    ]))
    .unwrap();
    for reason in [
        "captured_outbound",
        "captured_inbound",
        "captured_dns",
        "passthrough_proxy_uid",
        "passthrough_loopback",
        "other",
    ] {
        assert_eq!(v["totals"][reason]["packets"], 0, "{reason}: {v}");
    }
    let rules = v["rules"].as_array().unwrap();
    let live = nftmesh_ok(&["dump", "--network-namespace", &path]);
    assert_eq!(
        rules.len(),
        live.lines().filter(|l| l.starts_with("add rule ")).count()
    );
    let uid = rules
        .iter()
        .find(|r| r["rule"] == "meta skuid 1337 counter return")
        .expect("the proxy uid's return");
    assert_eq!(uid["reason"], "passthrough_proxy_uid");
    assert_eq!(
        (uid["table"].as_str(), uid["chain"].as_str()),
        (Some("istio-proxy-nat"), Some("istio-output"))
    );
    assert!(uid["index"].is_u64() && uid["bytes"] == 0);

    let prom = nftmesh_ok(&["stats", "--network-namespace", &path, "--prometheus"]);
    assert!(
        prom.contains("# TYPE nftmesh_capture_packets_total counter\n"),
        "{prom}"
    );
    assert!(
        prom.contains("nftmesh_capture_packets_total{reason=\"captured_outbound\"} 0\n"),
        "{prom}"
    );
    assert!(
        prom.contains("chain=\"istio-redirect\",index=\"0\",reason=\"captured_outbound\"} 0\n"),
        "{prom}"
    );

    let o = nftmesh(&["stats", "--json", "--prometheus"]);
    assert_eq!(o.status.code(), Some(2), "one format at a time");
    let o = nftmesh(&["stats", "--network-namespace", "/nonexistent/netns"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/netns"));
}
