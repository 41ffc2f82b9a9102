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
