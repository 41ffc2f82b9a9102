//! Istio ambient's in-pod capture with real traffic: a pod namespace with ztunnel-like
//! listeners inside it (as the node agent opens ztunnel's sockets there) on 15001, 15006,
//! 15008 and 15053, joined to a peer namespace. The same expectation rows run against
//! nftmesh's capture and against Istio's own ambient iptables golden loaded with
//! `iptables-restore` (the test oracle); both columns must match the expectations. IPv4 rows
//! run Istio's `default` and `ingress` cases, their IPv6 twins `default_ipv6` and
//! `ingress_ipv6` (golden loaded with `iptables-restore` and `ip6tables-restore`). A reply the
//! peer sends on a connection ztunnel originated (mark 0x539) reaches ztunnel's socket: the
//! client row reads the peer's answer. Each row's packet, explained against the same capture
//! (the evaluator's trail, as `nftmesh ambient explain` runs it), lands where the traffic did.

use nftmesh_test_support as support;

use nftmesh::iptables::trace::split_trace_text;
use nftmesh::model::ambient::AmbientConfig;
use nftmesh::model::eval::Packet;
use nftmesh::model::expr::L4Proto;
use nftmesh::model::Hook;
use nftmesh::netlink::netns::Netns;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use support::pods::*;

const PROBE: Ipv4Addr = Ipv4Addr::new(169, 254, 7, 127);
const ZTUNNEL_MARK: u32 = 0x539;
/// The IPv6 kubelet probe source after the host's SNAT that Istio's `default_ipv6` golden
/// was generated with (its test's value, not Istio's default).
const PROBE6: Ipv6Addr = Ipv6Addr::new(
    0xe9ac, 0x1e77, 0x90ca, 0x399f, 0x4d6d, 0xece2, 0x2f9b, 0x3164,
);
/// A resolver on the peer's side of the link.
const DNS_SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 3);

type Rows = Vec<(&'static str, String)>;

/// Connect as root from a socket carrying `mark` (SO_MARK, as ztunnel marks its own).
fn connect_marked(mark: u32, to: SocketAddr) -> std::io::Result<String> {
    connect_with(0, None, Some(mark), to)
}

/// Whether a UDP query from the app to `server`:53 lands on ztunnel's DNS port 15053.
fn dns_over_udp(server: IpAddr) -> String {
    let any: IpAddr = if server.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let dns = std::net::UdpSocket::bind((any, 15053)).unwrap();
    udp_as(APP_UID, SocketAddr::new(server, 53));
    if udp_received(&dns) {
        "ztunnel-dns".into()
    } else {
        "not captured".into()
    }
}

fn show(r: std::io::Result<String>) -> String {
    r.unwrap_or_else(|e| format!("error: {}", e.kind()))
}

/// The rows of a capture with DNS on (Istio's `default` case).
fn default_rows(setup: Setup, tag: &str) -> Rows {
    in_pod_with(tag, setup, &[PROBE, DNS_SERVER], |peer: Netns| {
        // The pod answers the probe address on the link, as through its node.
        support::run_here(
            "ip",
            &["route", "add", &format!("{PROBE}/32"), "dev", "eth0"],
            "",
        );
        let mut rows = Vec::new();
        let to_peer = SocketAddr::from((PEER, 8080));
        let h = [listen(15001, "ztunnel-outbound")];
        rows.push((
            "app outbound TCP",
            show(connect_as(APP_UID, APP_UID, to_peer)),
        ));
        for h in h {
            h.join().unwrap();
        }
        let h = peer_listen(&peer, to_peer, "peer");
        rows.push((
            "ztunnel's own outbound (mark 0x539), the peer's replies reach it",
            show(connect_marked(ZTUNNEL_MARK, to_peer)),
        ));
        h.join().unwrap();
        let h = listen(15006, "ztunnel-inbound");
        rows.push(("inbound to the app port", show(from_peer(&peer, 8080))));
        h.join().unwrap();
        let h = listen(15008, "hbone");
        rows.push(("inbound to 15008 (HBONE)", show(from_peer(&peer, 15008))));
        h.join().unwrap();
        let h = listen(8080, "app");
        let probe = peer
            .run(|| connect_from_as(0, IpAddr::V4(PROBE), SocketAddr::from((POD, 8080))))
            .expect("enter peer netns");
        rows.push(("kubelet probe from 169.254.7.127", show(probe)));
        h.join().unwrap();
        rows.push(("DNS over UDP", dns_over_udp(IpAddr::from(DNS_SERVER))));
        let h = listen(15053, "ztunnel-dns");
        rows.push((
            "DNS over TCP",
            show(connect_as(
                APP_UID,
                APP_UID,
                SocketAddr::from((DNS_SERVER, 53)),
            )),
        ));
        h.join().unwrap();
        rows
    })
}

fn default_expected() -> Rows {
    vec![
        ("app outbound TCP", format!("ztunnel-outbound {PEER}:8080")),
        (
            "ztunnel's own outbound (mark 0x539), the peer's replies reach it",
            "peer -".into(),
        ),
        (
            "inbound to the app port",
            format!("ztunnel-inbound {POD}:8080"),
        ),
        // Not redirected: the listener's own address is the original destination.
        ("inbound to 15008 (HBONE)", format!("hbone {POD}:15008")),
        (
            "kubelet probe from 169.254.7.127",
            format!("app {POD}:8080"),
        ),
        ("DNS over UDP", "ztunnel-dns".into()),
        ("DNS over TCP", format!("ztunnel-dns {DNS_SERVER}:53")),
    ]
}

/// The IPv6 twins of [`default_rows`] (Istio's `default_ipv6` case): the same paths over
/// IPv6, with the kubelet probe from the golden's IPv6 SNAT address.
fn default_rows6(setup: Setup, tag: &str) -> Rows {
    in_pod_with(tag, setup, &[], |peer: Netns| {
        peer.run(|| {
            for a in [PROBE6, DNS_SERVER6] {
                sh(&[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    &format!("{a}/128"),
                    "dev",
                    "eth0p",
                    "nodad",
                ]);
            }
            sh(&[
                "ip",
                "-6",
                "route",
                "add",
                &format!("{POD6}/128"),
                "dev",
                "eth0p",
            ]);
        })
        .expect("enter peer netns");
        for a in [PROBE6, DNS_SERVER6] {
            sh(&[
                "ip",
                "-6",
                "route",
                "add",
                &format!("{a}/128"),
                "dev",
                "eth0",
            ]);
        }
        let mut rows = Vec::new();
        let to_peer = SocketAddr::from((PEER6, 8080));
        let h = listen6(15001, "ztunnel-outbound");
        rows.push((
            "app outbound TCP over IPv6",
            show(connect_as(APP_UID, APP_UID, to_peer)),
        ));
        h.join().unwrap();
        let h = peer_listen(&peer, to_peer, "peer");
        rows.push((
            "ztunnel's own outbound over IPv6 (mark 0x539), the peer's replies reach it",
            show(connect_marked(ZTUNNEL_MARK, to_peer)),
        ));
        h.join().unwrap();
        let to_pod = |port: u16| {
            peer.run(move || connect_as(0, 0, SocketAddr::from((POD6, port))))
                .expect("enter peer netns")
        };
        let h = listen6(15006, "ztunnel-inbound");
        rows.push(("inbound over IPv6 to the app port", show(to_pod(8080))));
        h.join().unwrap();
        let h = listen6(15008, "hbone");
        rows.push(("inbound over IPv6 to 15008 (HBONE)", show(to_pod(15008))));
        h.join().unwrap();
        let h = listen6(8080, "app");
        let probe = peer
            .run(|| connect_from_as(0, IpAddr::V6(PROBE6), SocketAddr::from((POD6, 8080))))
            .expect("enter peer netns");
        rows.push(("kubelet probe over IPv6", show(probe)));
        h.join().unwrap();
        rows.push((
            "DNS over UDP over IPv6",
            dns_over_udp(IpAddr::from(DNS_SERVER6)),
        ));
        let h = listen6(15053, "ztunnel-dns");
        rows.push((
            "DNS over TCP over IPv6",
            show(connect_as(
                APP_UID,
                APP_UID,
                SocketAddr::from((DNS_SERVER6, 53)),
            )),
        ));
        h.join().unwrap();
        rows
    })
}

fn default_expected6() -> Rows {
    vec![
        (
            "app outbound TCP over IPv6",
            format!("ztunnel-outbound [{PEER6}]:8080"),
        ),
        (
            "ztunnel's own outbound over IPv6 (mark 0x539), the peer's replies reach it",
            "peer -".into(),
        ),
        (
            "inbound over IPv6 to the app port",
            format!("ztunnel-inbound [{POD6}]:8080"),
        ),
        (
            "inbound over IPv6 to 15008 (HBONE)",
            format!("hbone [{POD6}]:15008"),
        ),
        ("kubelet probe over IPv6", format!("app [{POD6}]:8080")),
        ("DNS over UDP over IPv6", "ztunnel-dns".into()),
        (
            "DNS over TCP over IPv6",
            format!("ztunnel-dns [{DNS_SERVER6}]:53"),
        ),
    ]
}

/// The rows of a pod that bypasses inbound capture and has DNS capture off (Istio's
/// `ingress` case).
fn ingress_rows(setup: Setup, tag: &str) -> Rows {
    in_pod_with(tag, setup, &[DNS_SERVER], |peer: Netns| {
        let mut rows = Vec::new();
        let h = listen(8080, "app");
        rows.push(("inbound to the app port", show(from_peer(&peer, 8080))));
        h.join().unwrap();
        rows.push(("DNS over UDP", dns_over_udp(IpAddr::from(DNS_SERVER))));
        let to_peer = SocketAddr::from((PEER, 8080));
        let h = [listen(15001, "ztunnel-outbound")];
        rows.push((
            "app outbound TCP",
            show(connect_as(APP_UID, APP_UID, to_peer)),
        ));
        for h in h {
            h.join().unwrap();
        }
        rows
    })
}

fn ingress_expected() -> Rows {
    vec![
        ("inbound to the app port", format!("app {POD}:8080")),
        ("DNS over UDP", "not captured".into()),
        ("app outbound TCP", format!("ztunnel-outbound {PEER}:8080")),
    ]
}

/// The IPv6 twins of [`ingress_rows`] (Istio's `ingress_ipv6` case).
fn ingress_rows6(setup: Setup, tag: &str) -> Rows {
    in_pod_with(tag, setup, &[], |peer: Netns| {
        peer.run(|| {
            sh(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{DNS_SERVER6}/128"),
                "dev",
                "eth0p",
                "nodad",
            ]);
        })
        .expect("enter peer netns");
        sh(&[
            "ip",
            "-6",
            "route",
            "add",
            &format!("{DNS_SERVER6}/128"),
            "dev",
            "eth0",
        ]);
        let mut rows = Vec::new();
        let h = listen6(8080, "app");
        let inbound = peer
            .run(|| connect_as(0, 0, SocketAddr::from((POD6, 8080))))
            .expect("enter peer netns");
        rows.push(("inbound over IPv6 to the app port", show(inbound)));
        h.join().unwrap();
        rows.push((
            "DNS over UDP over IPv6",
            dns_over_udp(IpAddr::from(DNS_SERVER6)),
        ));
        let h = listen6(15001, "ztunnel-outbound");
        rows.push((
            "app outbound TCP over IPv6",
            show(connect_as(
                APP_UID,
                APP_UID,
                SocketAddr::from((PEER6, 8080)),
            )),
        ));
        h.join().unwrap();
        rows
    })
}

fn ingress_expected6() -> Rows {
    vec![
        (
            "inbound over IPv6 to the app port",
            format!("app [{POD6}]:8080"),
        ),
        ("DNS over UDP over IPv6", "not captured".into()),
        (
            "app outbound TCP over IPv6",
            format!("ztunnel-outbound [{PEER6}]:8080"),
        ),
    ]
}

/// Istio's ambient iptables golden: its IPv4 part and its IPv6 part, if any.
fn golden(case: &str) -> (String, Option<String>) {
    let path = format!(
        "{}/tests/data/istio/ambient/iptables/{case}.golden",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut parts = split_trace_text(&text).into_iter().map(|(_, part)| part);
    let v4 = parts.next().expect("an IPv4 part");
    (v4, parts.next())
}

fn check(name: &str, expected: &Rows, ours: &Rows, istio: &Rows) {
    println!("| {name} | expected | nftmesh | Istio's iptables |");
    let mut failures = Vec::new();
    for (i, (row, want)) in expected.iter().enumerate() {
        let (a, b) = (&ours[i].1, &istio[i].1);
        println!("| {row} | {want} | {a} | {b} |");
        if a != want || b != want {
            failures.push(format!("{row}: expected {want}, nftmesh {a}, Istio {b}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The packet each row sends, in row order: `default` rows, or `ingress` rows when
/// `ingress`. Addresses: the pod, the peer, the resolver and the probe source.
fn row_packets(
    ingress: bool,
    pod: IpAddr,
    peer: IpAddr,
    dns: IpAddr,
    probe: IpAddr,
) -> Vec<(Hook, Packet)> {
    let out = |uid: u32, to: IpAddr, port: u16, udp: bool, mark: u32| {
        let mut p = Packet::local_tcp(uid, uid, pod, to, port, "eth0");
        if udp {
            p.l4proto = L4Proto::Udp;
        }
        p.mark = mark;
        (Hook::Output, p)
    };
    let inb = |from: IpAddr, port: u16| {
        (
            Hook::Prerouting,
            Packet::incoming_tcp(from, pod, port, "eth0"),
        )
    };
    if ingress {
        return vec![
            inb(peer, 8080),
            out(APP_UID, dns, 53, true, 0),
            out(APP_UID, peer, 8080, false, 0),
        ];
    }
    vec![
        out(APP_UID, peer, 8080, false, 0),
        out(0, peer, 8080, false, ZTUNNEL_MARK),
        inb(peer, 8080),
        inb(peer, 15008),
        inb(probe, 8080),
        out(APP_UID, dns, 53, true, 0),
        out(APP_UID, dns, 53, false, 0),
    ]
}

/// Ztunnel's listeners as the rows name them, and their ports.
const LISTENERS: [(&str, u16); 4] = [
    ("ztunnel-outbound", 15001),
    ("ztunnel-inbound", 15006),
    ("hbone", 15008),
    ("ztunnel-dns", 15053),
];

fn explained_like_observed(
    name: &str,
    cfg: &AmbientConfig,
    observed: &Rows,
    packets: &[(Hook, Packet)],
) {
    let rs = nftmesh::Capture::ambient(cfg).unwrap().ruleset().clone();
    explain_rows(name, &rs, observed, packets, &LISTENERS);
}

fn unavailable() -> bool {
    let why = support::netns::oracle_unavailable()
        .or_else(|| support::tool_missing("iptables-restore", "--version"));
    if let Some(why) = why {
        support::skip(&why);
        return true;
    }
    false
}

/// One Istio case three ways: its rows under nftmesh's capture of `cfg` and under Istio's
/// golden `case` (IPv6 part loaded too when `v6`), both checked against `expected`, and each
/// row's packet explained against `cfg`.
fn run_case(
    case: &str,
    cfg: AmbientConfig,
    rows: fn(Setup, &str) -> Rows,
    expected: Rows,
    v6: bool,
) {
    if unavailable() {
        return;
    }
    if v6 {
        if let Some(why) = support::tool_missing("ip6tables-restore", "--version") {
            support::skip(&why);
            return;
        }
    }
    let ours = rows(
        Setup::Ambient(Box::new(cfg.clone())),
        &format!("{case}-ours"),
    );
    let (v4, v6_part) = golden(case);
    assert_eq!(
        v6_part.is_some(),
        v6,
        "{case}: an IPv6 part exactly when IPv6"
    );
    let istio = rows(
        Setup::IptablesRestore(v4, v6_part),
        &format!("{case}-istio"),
    );
    check(case, &expected, &ours, &istio);
    let ingress = cfg.bypass_inbound_capture;
    let packets = if v6 {
        row_packets(
            ingress,
            POD6.into(),
            PEER6.into(),
            DNS_SERVER6.into(),
            PROBE6.into(),
        )
    } else {
        row_packets(
            ingress,
            POD.into(),
            PEER.into(),
            DNS_SERVER.into(),
            PROBE.into(),
        )
    };
    explained_like_observed(case, &cfg, &ours, &packets);
}

#[test]
fn ambient_capture_of_real_traffic_matches_istios_own_rules() {
    let cfg = AmbientConfig {
        dns_capture: true,
        ..AmbientConfig::default()
    };
    run_case("default", cfg, default_rows, default_expected(), false);
}

#[test]
fn bypass_inbound_capture_and_dns_off_match_istios_own_rules() {
    let cfg = AmbientConfig {
        bypass_inbound_capture: true,
        ..AmbientConfig::default()
    };
    run_case("ingress", cfg, ingress_rows, ingress_expected(), false);
}

#[test]
fn ipv6_ambient_capture_of_real_traffic_matches_istios_own_rules() {
    let cfg = AmbientConfig {
        dns_capture: true,
        ipv6: true,
        probe_snat_ipv6: PROBE6,
        ..AmbientConfig::default()
    };
    run_case(
        "default_ipv6",
        cfg,
        default_rows6,
        default_expected6(),
        true,
    );
}

#[test]
fn ipv6_bypass_inbound_capture_and_dns_off_match_istios_own_rules() {
    let cfg = AmbientConfig {
        bypass_inbound_capture: true,
        ipv6: true,
        probe_snat_ipv6: PROBE6,
        ..AmbientConfig::default()
    };
    run_case(
        "ingress_ipv6",
        cfg,
        ingress_rows6,
        ingress_expected6(),
        true,
    );
}
