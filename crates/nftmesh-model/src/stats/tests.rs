use super::*;
use crate::ambient::{compile_inpod, AmbientConfig};
use crate::compile;
use crate::config::{CaptureConfig, InterceptionMode, PortSelection};

/// Every rule of `ruleset` counted once, with as many bytes as its index + 1.
fn counted_once(ruleset: &Ruleset) -> Stats {
    let counters = Stats::places(ruleset).map(|p| {
        let bytes = p.index as u64 + 1;
        (p, Counter { packets: 1, bytes })
    });
    Stats::new(ruleset, counters)
}

/// The reason of the one rule of `chain` in `table` whose text is `text`.
fn reason(stats: &Stats, table: &str, chain: &str, text: &str) -> Reason {
    let found: Vec<&RuleStats> = stats
        .rules
        .iter()
        .filter(|r| r.place.table == table && r.place.chain == chain && r.rule == text)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{table} {chain}: {text:?} in {:#?}",
        stats.rules
    );
    found[0].reason
}

#[test]
fn sidecar_rules_have_the_reasons_an_operator_names() {
    let stats = counted_once(&compile(&CaptureConfig::sidecar()));
    let t = compile::NAT_TABLE;
    let cases = [
        (
            "istio-redirect",
            "meta l4proto tcp counter redirect to :15001",
            Reason::CapturedOutbound,
        ),
        // Reached only through the proxy's own loopback connections: inbound.
        (
            "istio-in-redirect",
            "meta l4proto tcp counter redirect to :15006",
            Reason::CapturedInbound,
        ),
        (
            "istio-output",
            "meta skuid 1337 counter return",
            Reason::PassthroughProxyUid,
        ),
        (
            "istio-output",
            "meta skgid 1337 counter return",
            Reason::PassthroughProxyGid,
        ),
        (
            "istio-output",
            "oifname \"lo\" ip saddr 127.0.0.6/32 counter return",
            Reason::PassthroughLoopback,
        ),
        (
            "istio-output",
            "oifname \"lo\" meta skuid != 1337 counter return",
            Reason::PassthroughLoopback,
        ),
        (
            "istio-output",
            "ip daddr 127.0.0.1/32 counter return",
            Reason::PassthroughLoopback,
        ),
        (
            "istio-inbound",
            "meta l4proto tcp tcp dport 15008 counter return",
            Reason::PassthroughExcludedPort,
        ),
        ("output", "counter jump istio-output", Reason::Other),
    ];
    for (chain, text, want) in cases {
        assert_eq!(reason(&stats, t, chain, text), want, "{chain}: {text}");
    }
    assert_eq!(
        stats.rules.len(),
        compile(&CaptureConfig::sidecar()).rule_count()
    );
}

#[test]
fn exclusions_dns_tproxy_and_drops_are_told_apart() {
    let mut cfg = CaptureConfig::sidecar();
    cfg.mode = InterceptionMode::Tproxy;
    cfg.inbound_ports = PortSelection::All;
    cfg.outbound_cidrs_exclude = vec!["100.64.0.0/10".parse().unwrap()];
    cfg.outbound_ports_exclude = vec![5432];
    cfg.exclude_interfaces = vec!["eth9".into()];
    cfg.dns.enabled = true;
    cfg.dns.servers = vec!["10.255.255.53".parse().unwrap()];
    cfg.drop_invalid = true;
    let ruleset = compile(&cfg);
    let stats = counted_once(&ruleset);
    let of = |reason: Reason| -> Vec<String> {
        stats
            .rules
            .iter()
            .filter(|r| r.reason == reason)
            .map(|r| format!("{} {}: {}", r.place.table, r.place.chain, r.rule))
            .collect()
    };
    let dns = of(Reason::CapturedDns);
    assert!(
        !dns.is_empty() && dns.iter().all(|r| r.contains("redirect to :15053")),
        "{dns:?}"
    );
    let inbound = of(Reason::CapturedInbound);
    assert!(inbound.iter().any(|r| r.contains("tproxy")), "{inbound:?}");
    assert!(of(Reason::CapturedOutbound)
        .iter()
        .any(|r| r.contains("redirect to :15001")));
    assert!(of(Reason::PassthroughExcludedCidr)
        .iter()
        .any(|r| r.contains("100.64.0.0/10")));
    assert!(of(Reason::PassthroughExcludedPort)
        .iter()
        .any(|r| r.contains("dport 5432")));
    assert!(of(Reason::PassthroughExcludedInterface)
        .iter()
        .any(|r| r.contains("eth9")));
    assert!(!of(Reason::Dropped).is_empty());
    // Every capture rule is counted as some capture; nothing redirecting is "other".
    for r in &stats.rules {
        if r.rule.contains("redirect to") || r.rule.contains("tproxy ") {
            assert!(
                matches!(
                    r.reason,
                    Reason::CapturedOutbound | Reason::CapturedInbound | Reason::CapturedDns
                ),
                "{r:?}"
            );
        }
    }
}

#[test]
fn ambient_captures_by_hook_and_passes_ztunnel_marks() {
    let stats = counted_once(&compile_inpod(&AmbientConfig::default()));
    let captures: Vec<(Reason, String)> = stats
        .rules
        .iter()
        .filter(|r| r.rule.contains("redirect to"))
        .map(|r| (r.reason, r.rule.clone()))
        .collect();
    assert!(!captures.is_empty());
    for (reason, rule) in &captures {
        let want = if rule.contains(":15006") {
            Reason::CapturedInbound
        } else {
            Reason::CapturedOutbound
        };
        assert_eq!(*reason, want, "{rule}");
    }
    assert!(stats
        .rules
        .iter()
        .any(|r| r.reason == Reason::PassthroughMark && r.rule.contains("0x111")));
}

#[test]
fn totals_sum_the_rules_of_each_reason_and_skip_uncounted_places() {
    let ruleset = compile(&CaptureConfig::sidecar());
    let mut places: Vec<Place> = Stats::places(&ruleset).collect();
    let dropped = places.remove(0);
    let mut counters: Vec<(Place, Counter)> = places
        .into_iter()
        .map(|p| {
            (
                p,
                Counter {
                    packets: 3,
                    bytes: 180,
                },
            )
        })
        .collect();
    counters.push((
        Place {
            index: 999,
            ..dropped.clone()
        },
        Counter {
            packets: 7,
            bytes: 7,
        },
    ));
    let stats = Stats::new(&ruleset, counters);
    assert!(!stats
        .rules
        .iter()
        .any(|r| r.place == dropped || r.place.index == 999));
    let uid = stats.total(Reason::PassthroughProxyUid);
    let n = stats
        .rules
        .iter()
        .filter(|r| r.reason == Reason::PassthroughProxyUid)
        .count() as u64;
    assert_eq!(
        uid,
        Counter {
            packets: 3 * n,
            bytes: 180 * n
        }
    );
    let sum = stats
        .totals()
        .into_iter()
        .fold(Counter::default(), |a, (_, c)| a + c);
    assert_eq!(sum.packets, 3 * stats.rules.len() as u64);
    let full = Counter {
        packets: u64::MAX,
        bytes: 1,
    };
    let one = Counter {
        packets: 1,
        bytes: 1,
    };
    assert_eq!(
        full + one,
        Counter {
            packets: u64::MAX,
            bytes: 2
        }
    );
}

#[test]
fn prometheus_text_has_one_sample_per_reason_and_rule() {
    let ruleset = compile(&CaptureConfig::sidecar());
    let stats = counted_once(&ruleset);
    let text = stats.prometheus();
    assert!(text.contains("# TYPE nftmesh_capture_packets_total counter\n"));
    assert!(text.contains("nftmesh_capture_packets_total{reason=\"captured_outbound\"} 1\n"));
    let per_reason = text
        .lines()
        .filter(|l| l.starts_with("nftmesh_capture_bytes_total{"))
        .count();
    assert_eq!(per_reason, Reason::ALL.len());
    let per_rule = text
        .lines()
        .filter(|l| l.starts_with("nftmesh_rule_packets_total{"))
        .count();
    assert_eq!(per_rule, ruleset.rule_count());
    assert!(text.contains(
        "nftmesh_rule_packets_total{family=\"inet\",table=\"istio-proxy-nat\",chain=\"istio-redirect\",index=\"0\",reason=\"captured_outbound\"} 1\n"
    ));
    assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    let labels: std::collections::HashSet<&str> = Reason::ALL.iter().map(|r| r.label()).collect();
    assert_eq!(labels.len(), Reason::ALL.len());
}

#[test]
fn json_names_place_rule_reason_and_counts() {
    let stats = counted_once(&compile(&CaptureConfig::sidecar()));
    for reason in Reason::ALL {
        assert_eq!(serde_json::to_value(reason).unwrap(), reason.label());
    }
    let v = serde_json::to_value(&stats.rules[0]).unwrap();
    for key in [
        "family", "table", "chain", "index", "rule", "reason", "packets", "bytes",
    ] {
        assert!(v.get(key).is_some(), "{key} in {v}");
    }
}
