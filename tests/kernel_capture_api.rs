//! The capture API an agent embeds ([`nftmesh::Namespace`], [`nftmesh::Capture`]), in named
//! network namespaces each test creates (`ip netns add`) and deletes: a mode switch leaves
//! exactly the new mode's tables and routes after each step, its nf_tables part in one
//! transaction; handles opened by path work from any thread; foreign tables stay.

use nftmesh_test_support as support;

#[path = "../examples/agent_loop.rs"]
mod agent_loop;

use nftmesh::{Capture, CaptureConfig, InterceptionMode, Namespace};
use std::path::PathBuf;
use support::named_netns::Netns;

fn pod() -> Option<Netns> {
    if let Some(why) = support::kernel_unavailable() {
        support::skip(&why);
        return None;
    }
    match Netns::new() {
        Ok(n) => {
            // A pod's lo is up; the IPv6 local route needs it.
            n.exec("ip", &["link", "set", "lo", "up"], None);
            Some(n)
        }
        Err(e) => {
            support::skip(&format!("cannot create a named network namespace: {e}"));
            None
        }
    }
}

fn tables(ns: &Netns) -> Vec<String> {
    let mut t: Vec<String> = ns
        .exec("nft", &["list", "tables"], None)
        .lines()
        .map(str::to_string)
        .collect();
    t.sort();
    t
}

/// `ip rule` and `ip -6 rule` lines and table-133 routes naming the TPROXY routing.
fn tproxy_routes(ns: &Netns) -> Vec<String> {
    let mut out = Vec::new();
    for args in [
        &["rule"][..],
        &["-6", "rule"],
        &["route", "show", "table", "133"],
        &["-6", "route", "show", "table", "133"],
    ] {
        // A route table that does not exist is an error for `ip`: no routes.
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.0, "ip"])
            .args(args)
            .output()
            .expect("ip");
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            if l.contains("lookup 133") || l.starts_with("local") {
                out.push(l.trim().to_string());
            }
        }
    }
    out
}

fn has_loopback_v6(ns: &Netns) -> bool {
    ns.exec("ip", &["-6", "addr", "show", "dev", "lo"], None)
        .contains("::6/128")
}

fn captures(ipv6: bool) -> (Capture, Capture) {
    let mut cfg = CaptureConfig::sidecar();
    cfg.ipv6 = ipv6;
    let redirect = Capture::new(&cfg).unwrap();
    cfg.mode = InterceptionMode::Tproxy;
    (redirect, Capture::new(&cfg).unwrap())
}

#[test]
fn switching_modes_leaves_exactly_the_new_modes_tables_and_routes_in_one_transaction() {
    let Some(pod) = pod() else { return };
    let ns = Namespace::open(pod.path()).unwrap();
    let (redirect, tproxy) = captures(false);
    let nat = "table inet istio-proxy-nat".to_string();
    let mangle = "table inet istio-proxy-mangle".to_string();
    for (step, capture, want_tables, want_routes) in [
        ("REDIRECT", &redirect, vec![nat.clone()], 0),
        ("TPROXY", &tproxy, vec![mangle.clone(), nat.clone()], 2),
        ("REDIRECT again", &redirect, vec![nat.clone()], 0),
    ] {
        let before = ns.generation().unwrap();
        let report = ns.install(capture).unwrap();
        let after = ns.generation().unwrap();
        assert_eq!(
            after,
            before.wrapping_add(1),
            "{step}: one nf_tables transaction"
        );
        assert_eq!(tables(&pod), want_tables, "{step}");
        let routes = tproxy_routes(&pod);
        assert_eq!(routes.len(), want_routes, "{step}: {routes:?}");
        assert!(ns.check(capture).unwrap().is_empty(), "{step}: no drift");
        if step == "REDIRECT again" {
            assert_eq!(report.deleted_tables, vec!["inet istio-proxy-mangle"]);
            assert!(report.routing_removed, "{step}");
        }
        if step == "TPROXY" {
            assert!(report.routing_installed && report.deleted_tables.is_empty());
        }
    }
    // The other mode's capture shows as drift, routing included.
    let drift = ns.check(&tproxy).unwrap();
    assert!(
        drift
            .iter()
            .any(|d| matches!(d, nftmesh::Drift::MissingRouting(_))),
        "{drift:?}"
    );
    assert!(drift
        .iter()
        .any(|d| d.to_string().contains("istio-proxy-mangle")));
    // TPROXY routing added behind the handle's back is found by check, and the next install
    // removes it.
    pod.exec(
        "ip",
        &["rule", "add", "fwmark", "1337", "lookup", "133"],
        None,
    );
    assert!(ns
        .check(&redirect)
        .unwrap()
        .iter()
        .any(|d| matches!(d, nftmesh::Drift::ExtraRouting(_))));
    assert!(ns.install(&redirect).unwrap().routing_removed);
    assert!(tproxy_routes(&pod).is_empty(), "{:?}", tproxy_routes(&pod));
    ns.remove(&redirect).unwrap();
    assert!(tables(&pod).is_empty(), "{:?}", tables(&pod));
}

#[test]
fn with_ipv6_the_switch_back_keeps_loopback_v6_and_drops_both_families_routes() {
    let Some(pod) = pod() else { return };
    let ns = Namespace::open(pod.path()).unwrap();
    let (redirect, tproxy) = captures(true);
    ns.install(&tproxy).unwrap();
    assert_eq!(tproxy_routes(&pod).len(), 4, "{:?}", tproxy_routes(&pod));
    assert!(has_loopback_v6(&pod));
    assert!(ns.check(&tproxy).unwrap().is_empty());
    ns.install(&redirect).unwrap();
    assert!(tproxy_routes(&pod).is_empty(), "{:?}", tproxy_routes(&pod));
    assert!(has_loopback_v6(&pod), "REDIRECT with IPv6 keeps ::6 on lo");
    assert!(ns.check(&redirect).unwrap().is_empty());
    ns.remove(&redirect).unwrap();
    assert!(!has_loopback_v6(&pod));
}

#[test]
fn a_handle_opened_by_path_works_from_other_threads_and_leaves_foreign_tables() {
    let Some(pod) = pod() else { return };
    pod.exec("nft", &["add table inet other"], None);
    let ns = std::sync::Arc::new(Namespace::open(pod.path()).unwrap());
    let (redirect, _) = captures(false);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (ns, c) = (ns.clone(), redirect.clone());
            std::thread::spawn(move || ns.install(&c).map(|r| r.rules))
        })
        .collect();
    for w in workers {
        assert!(w.join().unwrap().unwrap() > 0);
    }
    assert!(ns.check(&redirect).unwrap().is_empty());
    ns.remove(&redirect).unwrap();
    assert_eq!(tables(&pod), vec!["table inet other".to_string()]);
}

#[test]
fn the_agent_loop_example_keeps_handles_on_several_pods() {
    let Some(a) = pod() else { return };
    let (Some(b), Some(c)) = (pod(), pod()) else {
        panic!("cannot create more namespaces")
    };
    let paths: Vec<PathBuf> = [&a, &b, &c].iter().map(|n| n.path().into()).collect();
    let log = agent_loop::run(&paths).unwrap();
    let nat = r#"tables ["istio-proxy-nat"], tproxy rules [], drift 0"#;
    for i in 0..3 {
        assert!(
            log.contains(&format!("pod {i}: installed REDIRECT: {nat}")),
            "{log:#?}"
        );
        assert!(
            log.contains(&format!("pod {i}: removed 1 table(s)")),
            "{log:#?}"
        );
    }
    assert!(
        log.contains(
            &r#"pod 0: switched to TPROXY: tables ["istio-proxy-nat", "istio-proxy-mangle"], tproxy rules [4], drift 0"#
                .to_string()
        ),
        "{log:#?}"
    );
    assert!(
        log.contains(&format!("pod 0: switched back to REDIRECT: {nat}")),
        "{log:#?}"
    );
    for n in [&a, &b, &c] {
        assert!(tables(n).is_empty());
        assert!(tproxy_routes(n).is_empty());
    }
}

#[test]
fn migration_is_refused_while_iptables_legacy_tables_exist_and_changes_nothing() {
    let Some(pod) = pod() else { return };
    if let Some(why) = support::tool_missing("iptables-legacy", "--version") {
        support::skip(&why);
        return;
    }
    pod.exec(
        "iptables-legacy",
        &["-t", "nat", "-N", "ISTIO_OUTPUT"],
        None,
    );
    let ns = Namespace::open(pod.path()).unwrap();
    let (redirect, _) = captures(false);
    let err = ns
        .install(&redirect.clone().migrating(nftmesh::Migration::FromIptables))
        .unwrap_err();
    assert!(
        matches!(&err, nftmesh::CaptureError::LegacyTables(t) if t == &["ip nat"]),
        "{err}"
    );
    assert!(tables(&pod).is_empty());
    let r = ns
        .install(&redirect.migrating(nftmesh::Migration::FromIptablesAllowLegacy))
        .unwrap();
    assert_eq!(r.tables, 1);
}

/// `ip rule` lines (both families) naming table 100, ambient's.
fn ambient_rules(ns: &Netns) -> Vec<String> {
    let mut out = Vec::new();
    for args in [&["rule"][..], &["-6", "rule"]] {
        for l in ns.exec("ip", args, None).lines() {
            if l.contains("lookup 100") {
                out.push(l.trim().to_string());
            }
        }
    }
    out
}

#[test]
fn ambient_installs_its_tables_and_routing_and_a_switch_to_sidecar_is_one_transaction() {
    let Some(pod) = pod() else { return };
    let ns = Namespace::open(pod.path()).unwrap();
    let ambient = Capture::ambient(&nftmesh::model::ambient::AmbientConfig {
        dns_capture: true,
        ipv6: true,
        ..Default::default()
    })
    .unwrap();
    let report = ns.install(&ambient).unwrap();
    assert!(report.routing_installed);
    assert_eq!(
        tables(&pod),
        vec![
            "table inet istio-ambient-mangle".to_string(),
            "table inet istio-ambient-nat".to_string(),
            "table inet istio-ambient-raw".to_string(),
        ]
    );
    let rules = ambient_rules(&pod);
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(
        rules
            .iter()
            .all(|r| r.starts_with("32764:") && r.contains("fwmark 0x111/0xfff lookup 100")),
        "{rules:?}"
    );
    let route = pod.exec("ip", &["route", "show", "table", "100"], None);
    assert!(route.contains("local default dev lo"), "{route}");
    assert!(!has_loopback_v6(&pod), "ambient adds no ::6");
    assert!(ns.check(&ambient).unwrap().is_empty());
    // To sidecar REDIRECT: one transaction deletes the three ambient tables and adds nat; the
    // ambient routing goes after it.
    let (redirect, _) = captures(false);
    let before = ns.generation().unwrap();
    let report = ns.install(&redirect).unwrap();
    assert_eq!(ns.generation().unwrap(), before.wrapping_add(1));
    assert_eq!(
        report.deleted_tables.len(),
        3,
        "{:?}",
        report.deleted_tables
    );
    assert!(report.routing_removed);
    assert_eq!(tables(&pod), vec!["table inet istio-proxy-nat".to_string()]);
    assert!(ambient_rules(&pod).is_empty(), "{:?}", ambient_rules(&pod));
    // And back.
    ns.install(&ambient).unwrap();
    assert!(ns.check(&ambient).unwrap().is_empty());
    assert!(!tables(&pod).contains(&"table inet istio-proxy-nat".to_string()));
    ns.remove(&ambient).unwrap();
    assert!(tables(&pod).is_empty());
    assert!(ambient_rules(&pod).is_empty());
}

#[test]
fn a_repair_after_another_process_changed_the_tables_is_one_check_and_one_transaction() {
    let Some(ns) = pod() else { return };
    let handle = Namespace::open(ns.path()).unwrap();
    let capture = Capture::new(&CaptureConfig::sidecar()).unwrap();
    handle.install(&capture).unwrap();
    assert!(
        handle.repair(&capture).unwrap().is_none(),
        "nothing to repair"
    );
    // Another process commits: this handle's idea of the last commit is stale now.
    ns.exec(
        "nft",
        &[
            "flush",
            "chain",
            "inet",
            "istio-proxy-nat",
            "istio-redirect",
        ],
        None,
    );
    let gen_before = handle.generation().unwrap();
    let (drift, report) = handle.repair(&capture).unwrap().expect("a difference");
    assert!(!drift.is_empty());
    assert_eq!(
        report.attempts, 1,
        "the batch was not refused and sent again"
    );
    assert_eq!(
        handle.generation().unwrap(),
        gen_before.wrapping_add(1),
        "one commit"
    );
    assert!(handle.check(&capture).unwrap().is_empty());
}
