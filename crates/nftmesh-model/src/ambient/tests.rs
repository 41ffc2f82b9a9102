use super::*;
use crate::eval::{eval, Packet};
use crate::expr::L4Proto;
use crate::ruleset::Hook;
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn dns_on() -> AmbientConfig {
    AmbientConfig {
        dns_capture: true,
        ..AmbientConfig::default()
    }
}

#[test]
fn defaults_are_istios_constants_and_validate() {
    let c = AmbientConfig::default();
    assert_eq!(
        (
            c.ztunnel_outbound_port,
            c.ztunnel_inbound_plaintext_port,
            c.ztunnel_inbound_port,
            c.dns_capture_port
        ),
        (15001, 15006, 15008, 15053)
    );
    assert_eq!((c.inpod_mark, c.inpod_mask), (0x539, 0xfff));
    assert_eq!((c.inpod_tproxy_mark, c.inpod_tproxy_mask), (0x111, 0xfff));
    assert_eq!(c.route_table, 100);
    assert_eq!(c.probe_snat_ipv4, PROBE_SNAT_IPV4);
    c.validate().unwrap();
}

#[test]
fn invalid_settings_are_typed_errors_naming_the_field() {
    let bad = [
        AmbientConfig {
            dns_capture_port: 15001,
            ..AmbientConfig::default()
        },
        AmbientConfig {
            inpod_mark: 0x1539,
            ..AmbientConfig::default()
        },
        AmbientConfig {
            inpod_tproxy_mark: 0x539,
            ..AmbientConfig::default()
        },
        AmbientConfig {
            reroute_virtual_interfaces: vec!["x".repeat(16)],
            ..AmbientConfig::default()
        },
        AmbientConfig {
            route_table: 254,
            ..AmbientConfig::default()
        },
    ];
    let fields = [
        "dns_capture_port",
        "inpod_mark",
        "inpod_tproxy_mark",
        "reroute_virtual_interfaces",
        "route_table",
    ];
    for (c, field) in bad.iter().zip(fields) {
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(field), "{field}: {e}");
    }
}

#[test]
fn an_apps_outbound_tcp_goes_to_ztunnel_and_ztunnels_own_does_not() {
    let rs = compile_inpod(&AmbientConfig::default());
    let app = Packet::local_tcp(1000, 1000, ip("10.0.0.5"), ip("10.1.2.3"), 8080, "eth0");
    assert_eq!(eval(&rs, &app, Hook::Output).unwrap().redirect, Some(15001));
    let mut ztunnel = app.clone();
    ztunnel.mark = 0x539;
    assert_eq!(eval(&rs, &ztunnel, Hook::Output).unwrap().redirect, None);
    // Replies of connections ztunnel originated carry its conn mark: not redirected, and the
    // mark is restored from the connection.
    let mut reply = app.clone();
    reply.ct_mark = 0x111;
    let out = eval(&rs, &reply, Hook::Output).unwrap();
    assert_eq!((out.redirect, out.mark), (None, 0x111));
    let lo = Packet::local_tcp(1000, 1000, ip("10.0.0.5"), ip("127.0.0.1"), 8080, "lo");
    assert_eq!(eval(&rs, &lo, Hook::Output).unwrap().redirect, None);
}

#[test]
fn inbound_goes_to_the_plaintext_port_except_hbone_probes_and_with_bypass() {
    let cfg = AmbientConfig::default();
    let rs = compile_inpod(&cfg);
    let inbound = Packet::incoming_tcp(ip("10.9.9.9"), ip("10.0.0.5"), 8080, "eth0");
    assert_eq!(
        eval(&rs, &inbound, Hook::Prerouting).unwrap().redirect,
        Some(15006)
    );
    let hbone = Packet::incoming_tcp(ip("10.9.9.9"), ip("10.0.0.5"), 15008, "eth0");
    assert_eq!(eval(&rs, &hbone, Hook::Prerouting).unwrap().redirect, None);
    let probe = Packet::incoming_tcp(ip("169.254.7.127"), ip("10.0.0.5"), 8080, "eth0");
    assert_eq!(eval(&rs, &probe, Hook::Prerouting).unwrap().redirect, None);
    let bypass = compile_inpod(&AmbientConfig {
        bypass_inbound_capture: true,
        ..cfg
    });
    assert_eq!(
        eval(&bypass, &inbound, Hook::Prerouting).unwrap().redirect,
        None
    );
}

#[test]
fn dns_goes_to_the_dns_port_only_when_on_and_the_raw_table_only_then() {
    let mut q = Packet::local_tcp(1000, 1000, ip("10.0.0.5"), ip("10.96.0.10"), 53, "eth0");
    q.l4proto = L4Proto::Udp;
    let on = compile_inpod(&dns_on());
    assert_eq!(eval(&on, &q, Hook::Output).unwrap().redirect, Some(15053));
    assert!(on.table(crate::Family::Inet, RAW_TABLE).is_some());
    let off = compile_inpod(&AmbientConfig::default());
    assert_eq!(eval(&off, &q, Hook::Output).unwrap().redirect, None);
    assert!(off.table(crate::Family::Inet, RAW_TABLE).is_none());
    // ztunnel's own query to the upstream resolver goes in conntrack zone 1.
    q.mark = 0x539;
    assert_eq!(eval(&on, &q, Hook::Output).unwrap().ct_zone, Some(1));
}

#[test]
fn the_host_snats_kubelets_probes_to_set_addresses_only() {
    let rs = compile_host(&AmbientHostConfig::new(1000));
    let t = &rs.tables[0];
    assert_eq!(t.sets.len(), 1);
    assert_eq!(t.sets[0].name, PROBE_SET_V4);
    let text = crate::render(&rs);
    assert!(
        text.contains("meta l4proto tcp meta skuid 1000 ip daddr @istio-inpod-probes-v4 counter snat ip to 169.254.7.127"),
        "{text}"
    );
    let dual = compile_host(&AmbientHostConfig {
        ipv6: true,
        ..AmbientHostConfig::new(1000)
    });
    assert_eq!(dual.tables[0].sets.len(), 2);
}

/// The host table as it is live after `host apply --ipv6 on` and `host probe add` of
/// 10.1.2.3 and fd00::3.
fn live_host_table() -> crate::ruleset::Table {
    let mut rs = compile_host(&AmbientHostConfig {
        ipv6: true,
        ..AmbientHostConfig::new(0)
    });
    let mut t = rs.tables.remove(0);
    t.sets[0]
        .elements
        .push(crate::ruleset::SetElement::Prefix(ip("10.1.2.3").into()));
    t.sets[1]
        .elements
        .push(crate::ruleset::SetElement::Prefix(ip("fd00::3").into()));
    t
}

#[test]
fn the_host_cleanup_flushes_the_rules_and_keeps_every_chain_and_both_probe_sets() {
    // Istio's DeleteHostRules: `flush table inet istio-ambient-nat`, whatever the node's settings.
    let live = live_host_table();
    let flushed = host_flushed(&live);
    assert_eq!(flushed.name, HOST_TABLE);
    assert!(flushed.chains.iter().all(|c| c.rules.is_empty()));
    let chains = |t: &crate::ruleset::Table| {
        t.chains
            .iter()
            .map(|c| (c.name.clone(), c.base))
            .collect::<Vec<_>>()
    };
    assert_eq!(chains(&flushed), chains(&live), "chains and hooks kept");
    let sets: Vec<_> = flushed.sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        sets,
        [PROBE_SET_V4, PROBE_SET_V6],
        "both families' sets kept"
    );
    // Declared with no element: the transaction that keeps set elements adds none and
    // deletes none.
    assert!(flushed.sets.iter().all(|s| s.elements.is_empty()));
    assert_eq!(
        flushed.sets[1].key_type,
        crate::ruleset::SetKeyType::Ipv6Addr
    );
}

#[test]
fn the_host_cleanup_report_says_what_was_flushed_and_what_was_kept() {
    let live = live_host_table();
    let r = HostCleanup::of(Some(&live));
    assert_eq!(
        r,
        HostCleanup {
            table_found: true,
            rules_flushed: 2,
            sets_kept: vec![(PROBE_SET_V4.into(), 1), (PROBE_SET_V6.into(), 1)],
        }
    );
    assert_eq!(
        r.to_string(),
        "flushed 2 rule(s) of table inet istio-ambient-nat (the probe SNAT); its chains stay \
         and so do its sets, with their addresses: istio-inpod-probes-v4 (1 address), \
         istio-inpod-probes-v6 (1 address)"
    );
    let none = HostCleanup::of(None);
    assert!(!none.table_found);
    assert!(none
        .to_string()
        .contains("not installed here; nothing changed"));
}

#[test]
fn a_probe_removal_deletes_only_addresses_its_set_holds_and_says_why_for_the_others() {
    let live = live_host_table();
    let asked = [
        ip("10.1.2.3"),
        ip("10.9.9.9"),
        ip("fd00::3"),
        ip("fd00::9"),
        ip("10.1.2.3"),
    ];
    let r = ProbeRemoval::plan(Some(&live), &asked);
    assert_eq!(r.removed, [ip("10.1.2.3"), ip("fd00::3")], "once each");
    assert_eq!(r.not_in_set, [ip("10.9.9.9"), ip("fd00::9")]);
    assert!(r.no_set.is_empty());
    let text = r.to_string();
    assert!(
        text.contains("10.9.9.9 was not in set istio-inpod-probes-v4: nothing to remove"),
        "{text}"
    );
    assert!(
        text.contains("removed fd00::3 from set istio-inpod-probes-v6"),
        "{text}"
    );
    // Installed without IPv6: the v6 set is missing, the v4 one is there.
    let mut v4_only = live.clone();
    v4_only.sets.retain(|s| s.name == PROBE_SET_V4);
    let r = ProbeRemoval::plan(Some(&v4_only), &[ip("fd00::3"), ip("10.1.2.3")]);
    assert_eq!(r.removed, [ip("10.1.2.3")]);
    assert_eq!(r.no_set, [ip("fd00::3")]);
    assert!(
        r.to_string()
            .contains("has no set istio-inpod-probes-v6 here (the host rules are not installed in this namespace, or were installed without IPv6)"),
        "{r}"
    );
    // No host table at all.
    let r = ProbeRemoval::plan(None, &[ip("10.1.2.3")]);
    assert_eq!(r.no_set, [ip("10.1.2.3")]);
    assert!(r.removed.is_empty() && r.not_in_set.is_empty());
}
