use super::*;
use crate::config::{
    CidrSelection, DnsCapture, GroupRef, InterceptionMode, OwnerGroups, PortSelection,
    DNS_CAPTURE_PORT,
};
use crate::eval::{eval, FinalVerdict, Outcome, Packet};
use crate::expr::{CtStates, L4Proto};
use crate::render::render;
use crate::ruleset::{Family, Hook};
use ipnet::IpNet;
use proptest::prelude::*;
use std::net::IpAddr;

const APP_UID: u32 = 1000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn out(cfg: &CaptureConfig, p: &Packet) -> Outcome {
    eval(&compile(cfg), p, Hook::Output).unwrap()
}

fn pre(cfg: &CaptureConfig, p: &Packet) -> Outcome {
    eval(&compile(cfg), p, Hook::Prerouting).unwrap()
}

fn app(daddr: &str, dport: u16) -> Packet {
    Packet::local_tcp(APP_UID, APP_UID, ip("10.0.0.5"), ip(daddr), dport, "eth0")
}

// ---- unit tests per option -----------------------------------------------------------------

#[test]
fn default_config_captures_nothing_outbound_but_loops_the_proxy_back_inbound() {
    let cfg = CaptureConfig::default();
    let rs = compile(&cfg);
    assert_eq!(rs.tables.len(), 1, "nat table only");
    assert_eq!(
        out(&cfg, &app("10.1.1.1", 80)).redirect,
        None,
        "no include CIDRs: nothing captured"
    );
    let proxy_to_pod = Packet::local_tcp(1337, 1337, ip("10.0.0.5"), ip("10.0.0.5"), 8080, "lo");
    assert_eq!(out(&cfg, &proxy_to_pod).redirect, Some(15006));
}

#[test]
fn sidecar_preset_captures_both_ways_and_skips_the_proxys_ports() {
    let cfg = CaptureConfig::sidecar();
    assert_eq!(out(&cfg, &app("10.1.1.1", 80)).redirect, Some(15001));
    let inbound = |port| Packet::incoming_tcp(ip("10.9.0.1"), ip("10.0.0.5"), port, "eth0");
    assert_eq!(pre(&cfg, &inbound(8080)).redirect, Some(15006));
    for port in [15090, 15021, 15020, 15008] {
        assert_eq!(pre(&cfg, &inbound(port)).redirect, None, "port {port}");
    }
    assert!(render(&compile(&cfg)).contains("tcp dport { 15090, 15021, 15020 } counter return"));
}

#[test]
fn tproxy_mode_diverts_inbound_in_mangle_with_the_mark() {
    let cfg = CaptureConfig {
        mode: InterceptionMode::Tproxy,
        ..CaptureConfig::sidecar()
    };
    let rs = compile(&cfg);
    assert!(rs.table(Family::Inet, MANGLE_TABLE).is_some());
    let p = Packet::incoming_tcp(ip("10.9.0.1"), ip("10.0.0.5"), 8080, "eth0");
    let o = eval(&rs, &p, Hook::Prerouting).unwrap();
    assert_eq!(o.tproxy.and_then(|t| t.port), Some(15006));
    assert_eq!(o.mark, 1337);
    assert_eq!(o.redirect, None);
    let mut est = p.clone();
    est.ct_state = CtStates::ESTABLISHED;
    let o = eval(&rs, &est, Hook::Prerouting).unwrap();
    assert_eq!(
        (o.tproxy, o.mark),
        (None, 1337),
        "established packets are diverted with the mark"
    );
}

#[test]
fn dns_without_servers_or_capture_all_is_off_like_istio() {
    let cfg = CaptureConfig {
        dns: DnsCapture {
            enabled: true,
            capture_all: false,
            servers: vec![],
        },
        ..CaptureConfig::default()
    };
    assert!(!cfg.dns_in_effect());
    assert!(compile(&cfg).table(Family::Inet, RAW_TABLE).is_none());
}

#[test]
fn dns_capture_all_redirects_any_port_53_and_zones_conntrack() {
    let cfg = CaptureConfig {
        dns: DnsCapture {
            enabled: true,
            capture_all: true,
            servers: vec![],
        },
        ..CaptureConfig::default()
    };
    let mut p = app("8.8.8.8", 53);
    p.l4proto = L4Proto::Udp;
    assert_eq!(out(&cfg, &p).redirect, Some(DNS_CAPTURE_PORT));
    assert_eq!(
        out(&cfg, &p).ct_zone,
        Some(2),
        "application DNS goes to zone 2"
    );
    let mut proxy = p.clone();
    proxy.skuid = Some(1337);
    let o = out(&cfg, &proxy);
    assert_eq!(
        (o.redirect, o.ct_zone),
        (None, Some(1)),
        "the agent's upstream DNS: zone 1"
    );
}

#[test]
fn drop_invalid_drops_invalid_tcp_in_mangle() {
    let cfg = CaptureConfig {
        drop_invalid: true,
        ..CaptureConfig::default()
    };
    let mut p = Packet::incoming_tcp(ip("10.9.0.1"), ip("10.0.0.5"), 8080, "eth0");
    p.ct_state = CtStates::INVALID;
    assert_eq!(pre(&cfg, &p).verdict, FinalVerdict::Drop);
    p.ct_state = CtStates::ESTABLISHED;
    assert_eq!(pre(&cfg, &p).verdict, FinalVerdict::Accept);
}

#[test]
fn overlapping_and_duplicate_list_items_are_merged() {
    let cfg = CaptureConfig {
        outbound_cidrs_exclude: vec![
            "10.0.0.0/8".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ],
        outbound_ports_exclude: vec![9000, 9000],
        ..CaptureConfig::sidecar()
    };
    let text = render(&compile(&cfg));
    assert!(
        text.contains("ip daddr 10.0.0.0/8 counter return"),
        "{text}"
    );
    assert!(text.contains("tcp dport 9000 counter return"), "{text}");
}

#[test]
fn excluded_interfaces_and_virtual_interfaces() {
    let cfg = CaptureConfig {
        exclude_interfaces: vec!["eth9".into()],
        reroute_virtual_interfaces: vec!["veth1".into()],
        ..CaptureConfig::sidecar()
    };
    let mut p = app("10.1.1.1", 80);
    p.oif = "eth9".into();
    assert_eq!(out(&cfg, &p).redirect, None);
    let from_vm = Packet::incoming_tcp(ip("192.168.0.2"), ip("10.1.1.1"), 80, "veth1");
    assert_eq!(
        pre(&cfg, &from_vm).redirect,
        Some(15001),
        "VM traffic is treated as outbound"
    );
    let excluded_in = Packet::incoming_tcp(ip("10.9.0.1"), ip("10.0.0.5"), 80, "eth9");
    assert_eq!(pre(&cfg, &excluded_in).redirect, None);
}

#[test]
fn owner_group_include_list_limits_outbound_capture() {
    let cfg = CaptureConfig {
        owner_groups: OwnerGroups::Include(vec![GroupRef::Id(2000)]),
        ..CaptureConfig::sidecar()
    };
    assert_eq!(out(&cfg, &app("10.1.1.1", 80)).redirect, None);
    let mut p = app("10.1.1.1", 80);
    p.skgid = Some(2000);
    assert_eq!(out(&cfg, &p).redirect, Some(15001));
    let none = CaptureConfig {
        owner_groups: OwnerGroups::Include(vec![]),
        ..CaptureConfig::sidecar()
    };
    assert_eq!(
        out(&none, &p).redirect,
        None,
        "an empty include list captures no group"
    );
}

#[test]
fn passthrough_loopback_source_is_not_captured_again() {
    let cfg = CaptureConfig {
        ipv6: true,
        ..CaptureConfig::sidecar()
    };
    for (s, d) in [("127.0.0.6", "10.0.0.5"), ("::6", "fd00::5")] {
        let p = Packet::local_tcp(1337, 1337, ip(s), ip(d), 8080, "lo");
        assert_eq!(out(&cfg, &p).redirect, None, "{s}");
    }
}

// ---- properties ----------------------------------------------------------------------------

const PORT_POOL: [u16; 8] = [22, 53, 80, 443, 3306, 8080, 9090, 15008];
const PROXY_IDS: [u32; 4] = [1337, 3, 4, 500];
const APP_GIDS: [u32; 2] = [1000, 2000];
const V4_NETS: [&str; 5] = [
    "10.0.0.0/8",
    "10.96.0.0/12",
    "192.168.0.0/16",
    "1.1.0.0/16",
    "9.9.9.9/32",
];
const V6_NETS: [&str; 3] = ["2001:db8::/32", "fd00:10::/64", "2001:db8:1::/48"];
const DNS_SERVERS: [&str; 3] = ["10.96.0.10", "127.0.0.53", "fd00:10::a"];

fn subset<T: Clone + std::fmt::Debug>(pool: &'static [T]) -> impl Strategy<Value = Vec<T>> {
    proptest::sample::subsequence(pool.to_vec(), 0..=pool.len())
}

fn nonempty_subset<T: Clone + std::fmt::Debug>(
    pool: &'static [T],
) -> impl Strategy<Value = Vec<T>> {
    proptest::sample::subsequence(pool.to_vec(), 1..=pool.len())
}

fn nets(v4: Vec<&str>, v6: Vec<&str>, ipv6: bool) -> Vec<IpNet> {
    v4.into_iter()
        .chain(v6.into_iter().filter(|_| ipv6))
        .map(|s| s.parse().unwrap())
        .collect()
}

prop_compose! {
    fn config()(
        tproxy in any::<bool>(),
        uids in nonempty_subset(&PROXY_IDS),
        gids in nonempty_subset(&PROXY_IDS),
        inbound_all in any::<bool>(),
        inbound in subset(&PORT_POOL),
        inbound_exclude in subset(&PORT_POOL),
        out_include_ports in subset(&PORT_POOL),
        out_exclude_ports in subset(&PORT_POOL),
        include_all in any::<bool>(),
        include_v4 in subset(&V4_NETS),
        include_v6 in subset(&V6_NETS),
        exclude_v4 in subset(&V4_NETS),
        exclude_v6 in subset(&V6_NETS),
        groups in (0u8..3, subset(&APP_GIDS)),
        exclude_ifs in subset(&["eth1", "not-istio"]),
        virt_ifs in subset(&["eth2", "veth3"]),
        dns in (any::<bool>(), any::<bool>(), subset(&DNS_SERVERS)),
        drop_invalid in any::<bool>(),
        ipv6 in any::<bool>(),
        wide_loopback in any::<bool>(),
    ) -> CaptureConfig {
        let inbound_ports = if inbound_all {
            PortSelection::All
        } else {
            PortSelection::Ports(inbound.clone())
        };
        let inbound_exclude: Vec<u16> = if inbound_all {
            inbound_exclude
        } else {
            inbound_exclude.into_iter().filter(|p| !inbound.contains(p)).collect()
        };
        let out_exclude_ports: Vec<u16> = out_exclude_ports
            .into_iter()
            .filter(|p| !out_include_ports.contains(p) && *p != 53)
            .collect();
        let owner_groups = match groups.0 {
            0 => OwnerGroups::All,
            1 => OwnerGroups::Include(groups.1.into_iter().map(GroupRef::Id).collect()),
            _ => OwnerGroups::Exclude(groups.1.into_iter().map(GroupRef::Id).collect()),
        };
        let servers = dns.2.iter().map(|s| ip(s)).filter(|a| ipv6 || a.is_ipv4()).collect();
        CaptureConfig {
            mode: if tproxy { InterceptionMode::Tproxy } else { InterceptionMode::Redirect },
            proxy_uids: uids,
            proxy_gids: gids,
            inbound_ports,
            inbound_ports_exclude: inbound_exclude,
            outbound_ports_include: out_include_ports,
            outbound_ports_exclude: out_exclude_ports,
            outbound_cidrs_include: if include_all {
                CidrSelection::All
            } else {
                CidrSelection::Cidrs(nets(include_v4, include_v6, ipv6))
            },
            outbound_cidrs_exclude: nets(exclude_v4, exclude_v6, ipv6),
            owner_groups,
            exclude_interfaces: exclude_ifs.into_iter().map(String::from).collect(),
            reroute_virtual_interfaces: virt_ifs.into_iter().map(String::from).collect(),
            dns: DnsCapture { enabled: dns.0, capture_all: dns.1, servers },
            drop_invalid,
            ipv6,
            host_ipv4_loopback_cidr: if wide_loopback { "127.0.0.0/8" } else { "127.0.0.1/32" }
                .parse()
                .unwrap(),
            ..CaptureConfig::default()
        }
    }
}

/// A destination: from the CIDR pools (edges included), DNS servers, or random.
fn daddr(ipv6: bool) -> BoxedStrategy<IpAddr> {
    let v4 = prop_oneof![
        Just(ip("10.0.0.1")),
        Just(ip("10.255.255.255")),
        Just(ip("11.0.0.0")),
        Just(ip("10.96.0.10")),
        Just(ip("192.168.255.255")),
        Just(ip("1.1.0.0")),
        Just(ip("9.9.9.9")),
        Just(ip("9.9.9.10")),
        any::<[u8; 4]>().prop_map(IpAddr::from),
    ];
    if !ipv6 {
        return v4.boxed();
    }
    let v6 = prop_oneof![
        Just(ip("2001:db8::1")),
        Just(ip("2001:db9::")),
        Just(ip("fd00:10::a")),
        Just(ip("fd00:10:0:1::1")),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ];
    prop_oneof![v4, v6].boxed()
}

fn dport() -> impl Strategy<Value = u16> {
    prop_oneof![proptest::sample::select(PORT_POOL.to_vec()), 1u16..=65535]
}

fn is_loopback(cfg: &CaptureConfig, a: IpAddr) -> bool {
    a.is_loopback() || matches!(a, IpAddr::V4(v4) if cfg.host_ipv4_loopback_cidr.contains(&v4))
}

fn in_nets(list: &[IpNet], a: IpAddr) -> bool {
    list.iter().any(|n| n.contains(&a))
}

fn group_captured(cfg: &CaptureConfig, gid: u32) -> bool {
    let has = |l: &Vec<GroupRef>| l.contains(&GroupRef::Id(gid));
    match &cfg.owner_groups {
        OwnerGroups::All => true,
        OwnerGroups::Include(l) => has(l),
        OwnerGroups::Exclude(l) => !has(l),
    }
}

fn dns_captures(cfg: &CaptureConfig, a: IpAddr, port: u16) -> bool {
    cfg.dns_in_effect() && port == 53 && (cfg.dns.capture_all || cfg.dns.servers.contains(&a))
}

fn proptest_config() -> ProptestConfig {
    ProptestConfig {
        cases: 1000,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config())]

    /// The proxy's own traffic (by uid or by gid) never reaches the outbound capture port or
    /// the DNS port; off `lo` it is never redirected at all.
    #[test]
    fn proxy_traffic_is_never_captured_outbound(
        cfg in config(),
        by_uid in any::<bool>(),
        pick in any::<proptest::sample::Index>(),
        udp in any::<bool>(),
        oif in proptest::sample::select(vec!["eth0", "lo", "eth1", "eth2"]),
        port in dport(),
        seed_v6 in any::<bool>(),
    ) {
        cfg.validate().unwrap();
        let rs = compile(&cfg);
        let (uid, gid) = if by_uid {
            (*pick.get(&cfg.proxy_uids), APP_GIDS[0])
        } else {
            (APP_UID, *pick.get(&cfg.proxy_gids))
        };
        let dst = if seed_v6 && cfg.ipv6 { ip("2001:db8::1") } else { ip("10.96.0.10") };
        let mut p = Packet::local_tcp(uid, gid, ip("10.0.0.5"), dst, port, oif);
        if udp { p.l4proto = L4Proto::Udp; }
        let o = eval(&rs, &p, Hook::Output).unwrap();
        prop_assert_ne!(o.redirect, Some(cfg.proxy_port));
        prop_assert_ne!(o.redirect, Some(DNS_CAPTURE_PORT));
        if oif != "lo" {
            prop_assert_eq!(o.redirect, None);
        }
    }

    /// Another uid's outbound TCP to a destination not excluded reaches the outbound capture
    /// port exactly when it is included (by CIDR, `*` or port); DNS to a captured server goes
    /// to the DNS port instead.
    #[test]
    fn app_outbound_tcp_is_captured_exactly_when_included(
        (cfg, dst) in config().prop_flat_map(|c| { let v6 = c.ipv6; (Just(c), daddr(v6)) }),
        gid in proptest::sample::select(APP_GIDS.to_vec()),
        port in dport(),
    ) {
        prop_assume!(!is_loopback(&cfg, dst));
        prop_assume!(!cfg.proxy_gids.contains(&gid));
        let p = Packet::local_tcp(APP_UID, gid, ip("10.0.0.5"), dst, port, "eth0");
        let o = eval(&compile(&cfg), &p, Hook::Output).unwrap();
        let expected = if !group_captured(&cfg, gid) || cfg.outbound_ports_exclude.contains(&port) {
            None
        } else if dns_captures(&cfg, dst, port) {
            Some(DNS_CAPTURE_PORT)
        } else if in_nets(&cfg.outbound_cidrs_exclude, dst) {
            None
        } else {
            let included = match &cfg.outbound_cidrs_include {
                CidrSelection::All => true,
                CidrSelection::Cidrs(c) => in_nets(c, dst),
            } || cfg.outbound_ports_include.contains(&port);
            included.then_some(cfg.proxy_port)
        };
        prop_assert_eq!(o.redirect, expected);
    }

    /// Inbound TCP to an included, not excluded port reaches the inbound capture port
    /// (REDIRECT) or is tproxied there with the mark (TPROXY); nothing else is captured, and
    /// the tunnel port never is.
    #[test]
    fn inbound_tcp_is_captured_exactly_when_included(
        (cfg, dst) in config().prop_flat_map(|c| { let v6 = c.ipv6; (Just(c), daddr(v6)) }),
        port in dport(),
        tunnel in any::<bool>(),
        iif in proptest::sample::select(vec!["eth0", "eth1", "not-istio"]),
    ) {
        prop_assume!(!is_loopback(&cfg, dst));
        let port = if tunnel { cfg.inbound_tunnel_port } else { port };
        let src = if dst.is_ipv4() { ip("10.200.0.9") } else { ip("fd00:99::9") };
        let p = Packet::incoming_tcp(src, dst, port, iif);
        let o = eval(&compile(&cfg), &p, Hook::Prerouting).unwrap();
        let included = match &cfg.inbound_ports {
            PortSelection::All => !cfg.inbound_ports_exclude.contains(&port),
            PortSelection::Ports(l) => l.contains(&port),
        };
        let captured = included
            && port != cfg.inbound_tunnel_port
            && !cfg.exclude_interfaces.iter().any(|i| i == iif);
        match cfg.mode {
            InterceptionMode::Redirect => {
                prop_assert_eq!(o.redirect, captured.then_some(cfg.inbound_capture_port));
                prop_assert_eq!(o.tproxy, None);
            }
            InterceptionMode::Tproxy => {
                prop_assert_eq!(o.redirect, None);
                prop_assert_eq!(o.tproxy.and_then(|t| t.port), captured.then_some(cfg.inbound_capture_port));
                if captured {
                    prop_assert_eq!(o.mark, cfg.tproxy_mark);
                }
            }
        }
        if port == cfg.inbound_tunnel_port {
            prop_assert!(o.redirect.is_none() && o.tproxy.is_none());
        }
    }

    /// With DNS capture on, UDP and TCP to port 53 of a listed server (any server with
    /// capture-all) from a non-proxy uid reach the DNS port.
    #[test]
    fn dns_to_a_listed_server_reaches_the_agent(
        cfg in config(),
        pick in any::<proptest::sample::Index>(),
        udp in any::<bool>(),
        any_dst in daddr(false),
    ) {
        let mut cfg = cfg;
        cfg.dns.enabled = true;
        prop_assume!(cfg.dns_in_effect());
        let gid = APP_GIDS[0];
        prop_assume!(!cfg.proxy_gids.contains(&gid) && group_captured(&cfg, gid));
        let dst = if cfg.dns.servers.is_empty() { any_dst } else { *pick.get(&cfg.dns.servers) };
        prop_assume!(cfg.dns.servers.contains(&dst) || (cfg.dns.capture_all && !is_loopback(&cfg, dst)));
        let oif = if dst.is_loopback() { "lo" } else { "eth0" };
        let src = if dst.is_ipv4() { ip("10.0.0.5") } else { ip("fd00::5") };
        let mut p = Packet::local_tcp(APP_UID, gid, src, dst, 53, oif);
        if udp { p.l4proto = L4Proto::Udp; }
        let o = eval(&compile(&cfg), &p, Hook::Output).unwrap();
        prop_assert_eq!(o.redirect, Some(DNS_CAPTURE_PORT));
    }
}
