//! Real traffic through the applied capture (a first slice of the end-to-end checks): a "pod"
//! network namespace joined by a veth pair to a "peer" namespace, both created and deleted by
//! the test; clients run on threads with their own uid (raw `setresuid`, which changes only
//! the calling thread). Every wait is bounded.

use nftmesh_test_support as support;

use support::pods::*;

use nftmesh::model::config::CaptureConfig;
use nftmesh::model::{Hook, Packet};
use std::net::IpAddr;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;

fn skip() -> bool {
    match support::netns::oracle_unavailable() {
        Some(why) => {
            support::skip(&why);
            true
        }
        None => false,
    }
}

#[test]
fn redirect_capture_of_real_connections_outbound_inbound_and_bypasses() {
    if skip() {
        return;
    }
    let mut cfg = CaptureConfig::sidecar();
    cfg.ipv6 = false;
    // A user exclusion on top of Istio's defaults (15090, 15021, 15020).
    cfg.inbound_ports_exclude.push(22);
    let (app, proxy, app_in, tunnel_in, excluded) = in_pod("redirect", cfg, &[], |peer| {
        let peer_srv = peer_listen(&peer, SocketAddr::from((PEER, 8080)), "peer");
        let servers = [
            listen(15001, "outbound"),
            listen(15006, "inbound"),
            listen(15008, "tunnel"),
            peer_srv,
        ];
        let target = SocketAddr::from((PEER, 8080));
        let app = connect_as(APP_UID, APP_UID, target);
        let proxy = connect_as(PROXY_UID, PROXY_UID, target);
        // Inbound, from the peer: to the app port (captured) and to the tunnel port 15008
        // (never captured).
        let app_in = from_peer(&peer, 8080);
        let tunnel_in = from_peer(&peer, 15008);
        // Istio's default inbound exclusions and the user's 22.
        let excluded: Vec<(u16, std::io::Result<String>)> = [15090u16, 15021, 15020, 22]
            .into_iter()
            .map(|port| {
                let name: &'static str = Box::leak(format!("own{port}").into_boxed_str());
                let h = listen(port, name);
                let r = from_peer(&peer, port);
                h.join().unwrap();
                (port, r)
            })
            .collect();
        for h in servers {
            h.join().unwrap();
        }
        (app, proxy, app_in, tunnel_in, excluded)
    });
    assert_eq!(
        app.expect("app connection"),
        format!("outbound {PEER}:8080"),
        "app traffic is captured with its original destination"
    );
    assert_eq!(
        proxy.expect("proxy connection"),
        "peer -",
        "the proxy's own traffic reaches the peer directly"
    );
    assert_eq!(
        app_in.expect("inbound connection"),
        format!("inbound {POD}:8080"),
        "inbound to the app lands on 15006"
    );
    // Not redirected: it reached the 15008 listener itself, not 15006.
    let tunnel_in = tunnel_in.expect("tunnel connection");
    assert!(
        tunnel_in.starts_with("tunnel "),
        "inbound to 15008 is not captured: {tunnel_in}"
    );
    for (port, r) in excluded {
        let r = r.unwrap_or_else(|e| panic!("inbound to {port}: {e}"));
        assert!(
            r.starts_with(&format!("own{port} ")),
            "inbound to {port} is not captured: {r}"
        );
    }
}

#[test]
fn dns_to_the_configured_server_lands_on_15053_and_excluded_cidrs_are_not_captured() {
    if skip() {
        return;
    }
    let mut cfg = CaptureConfig::sidecar();
    cfg.ipv6 = false;
    cfg.dns.enabled = true;
    cfg.dns.servers = vec![DNS_SERVER.into()];
    cfg.outbound_cidrs_exclude = vec![format!("{PEER}/32").parse().unwrap()];
    cfg.outbound_ports_exclude = vec![9090];
    let (
        excluded,
        excluded_port,
        app_dns_captured,
        app_dns_at_server,
        proxy_dns_captured,
        proxy_dns_at_server,
        tcp,
    ) = in_pod("dns", cfg, &[DNS_SERVER], |peer| {
        let peer_srv = peer_listen(&peer, SocketAddr::from((PEER, 8080)), "peer");
        // No listener on 15001: were the exclusion ignored, the connection would be
        // redirected there and refused.
        let excluded = connect_as(APP_UID, APP_UID, SocketAddr::from((PEER, 8080)));
        peer_srv.join().unwrap();
        // An excluded outbound port, to an address that is not excluded.
        let port_srv = peer_listen(&peer, SocketAddr::from((DNS_SERVER, 9090)), "peer");
        let excluded_port = connect_as(APP_UID, APP_UID, SocketAddr::from((DNS_SERVER, 9090)));
        port_srv.join().unwrap();
        let capture = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 15053)).unwrap();
        let server = peer
            .run(|| std::net::UdpSocket::bind((DNS_SERVER, 53)).expect("peer dns"))
            .unwrap();
        let dns = SocketAddr::from((DNS_SERVER, 53));
        udp_as(APP_UID, dns);
        let app = (udp_received(&capture), udp_received(&server));
        udp_as(PROXY_UID, dns);
        let proxy = (udp_received(&capture), udp_received(&server));
        // DNS over TCP: the app's lands on 15053, the proxy's reaches the server.
        let tcp_capture = listen(15053, "dns-capture");
        let tcp_server = peer_listen(&peer, SocketAddr::from((DNS_SERVER, 53)), "dns-server");
        let tcp = (
            connect_as(APP_UID, APP_UID, dns),
            connect_as(PROXY_UID, PROXY_UID, dns),
        );
        tcp_capture.join().unwrap();
        tcp_server.join().unwrap();
        (excluded, excluded_port, app.0, app.1, proxy.0, proxy.1, tcp)
    });
    assert_eq!(
        excluded_port.expect("excluded port"),
        "peer -",
        "an excluded outbound port reaches the peer"
    );
    let (tcp_app, tcp_proxy) = tcp;
    assert_eq!(
        tcp_app.expect("app TCP DNS"),
        format!("dns-capture {DNS_SERVER}:53")
    );
    assert!(tcp_proxy.expect("proxy TCP DNS").starts_with("dns-server "));
    assert_eq!(
        excluded.expect("excluded connection"),
        "peer -",
        "an excluded CIDR reaches the peer directly"
    );
    assert!(
        app_dns_captured && !app_dns_at_server,
        "the app's DNS lands on 15053, not at the server"
    );
    assert!(
        !proxy_dns_captured && proxy_dns_at_server,
        "the proxy's own DNS reaches the server"
    );
}

#[test]
fn ipv6_outbound_and_inbound_are_captured_with_their_original_destinations() {
    if skip() {
        return;
    }
    let mut cfg = CaptureConfig::sidecar();
    cfg.ipv6 = true;
    let (app, proxy, app_in) = in_pod("ipv6", cfg, &[], |peer| {
        let peer_srv = peer_listen(&peer, SocketAddr::from((PEER6, 8080)), "peer");
        let servers = [
            listen6(15001, "outbound"),
            listen6(15006, "inbound"),
            peer_srv,
        ];
        let target = SocketAddr::from((PEER6, 8080));
        let app = connect_as(APP_UID, APP_UID, target);
        let proxy = connect_as(PROXY_UID, PROXY_UID, target);
        let app_in = peer
            .run(|| connect_as(0, 0, SocketAddr::from((POD6, 8080))))
            .expect("enter peer netns");
        for h in servers {
            h.join().unwrap();
        }
        (app, proxy, app_in)
    });
    assert_eq!(
        app.expect("app connection"),
        format!("outbound [{PEER6}]:8080")
    );
    assert_eq!(proxy.expect("proxy connection"), "peer -");
    assert_eq!(
        app_in.expect("inbound connection"),
        format!("inbound [{POD6}]:8080")
    );
}

#[test]
fn inbound_passthrough_from_127_0_0_6_is_not_captured_again() {
    if skip() {
        return;
    }
    let mut cfg = CaptureConfig::sidecar();
    cfg.ipv6 = false;
    let (passthrough, proxy_other_src) = in_pod("passthrough", cfg, &[], |_peer| {
        let servers = [listen(8080, "app"), listen(15006, "inbound")];
        // Envoy's inbound passthrough: the proxy uid, from 127.0.0.6, to the pod's own address.
        let passthrough = connect_from_as(
            PROXY_UID,
            Ipv4Addr::new(127, 0, 0, 6).into(),
            SocketAddr::from((POD, 8080)),
        );
        // The same from another loopback source is sent back to the inbound port.
        let other = connect_from_as(
            PROXY_UID,
            Ipv4Addr::new(127, 0, 0, 7).into(),
            SocketAddr::from((POD, 8080)),
        );
        for h in servers {
            h.join().unwrap();
        }
        (passthrough, other)
    });
    let p = passthrough.expect("passthrough connection");
    assert!(
        p.starts_with("app "),
        "from 127.0.0.6 the app is reached directly: {p}"
    );
    assert_eq!(
        proxy_other_src.expect("other source"),
        format!("inbound {POD}:8080")
    );
}

#[test]
fn tproxy_inbound_lands_on_a_transparent_listener_with_the_original_destination_as_local_address() {
    if skip() {
        return;
    }

    use nix::sys::socket::{
        bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
        SockaddrIn,
    };
    let mut cfg = CaptureConfig::sidecar();
    cfg.ipv6 = false;
    cfg.mode = nftmesh::model::config::InterceptionMode::Tproxy;
    // The install put the TPROXY routing (fwmark 1337 -> table 133) in place.
    let landed = in_pod("tproxy", cfg, &[], move |peer| {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        setsockopt(&fd, sockopt::IpTransparent, &true).expect("IP_TRANSPARENT");
        setsockopt(&fd, sockopt::ReuseAddr, &true).unwrap();
        bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, 15006)).unwrap();
        listen(&fd, Backlog::new(8).unwrap()).unwrap();
        let server = serve_with(TcpListener::from(fd), 2, |s| {
            let local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
            format!("tproxy {local}")
        });
        // To the pod's own address, and to an address the pod does not have (routed to it by
        // the peer): only the fwmark rule and the local route deliver the latter locally.
        let local = from_peer(&peer, 8080);
        let foreign = peer
            .run(|| {
                sh(&[
                    "ip",
                    "route",
                    "add",
                    "10.88.0.0/24",
                    "via",
                    &POD.to_string(),
                ]);
                connect_as(0, 0, SocketAddr::from((FOREIGN, 8080)))
            })
            .expect("enter peer netns");
        server.join().unwrap();
        (local, foreign)
    });
    assert_eq!(
        landed.0.expect("inbound connection"),
        format!("tproxy {POD}:8080")
    );
    assert_eq!(
        landed.1.expect("connection to a foreign address"),
        format!("tproxy {FOREIGN}:8080")
    );
}

/// The IPv4 and (if any) IPv6 restore input of an iptables golden, split as
/// `nftmesh_iptables::trace` reads Istio's traces.
fn golden_parts(case: &str) -> (String, Option<String>) {
    let text = support::golden("iptables", case);
    let mut parts = nftmesh::iptables::trace::split_trace_text(&text)
        .into_iter()
        .map(|(_, part)| part);
    let v4 = parts.next().unwrap_or_default();
    (v4, parts.next())
}

const OTHER: Ipv4Addr = Ipv4Addr::new(172, 16, 77, 2);

/// The rows of the expectation table for Istio's `ipnets` case (outbound capture of 10/8 only).
fn ipnets_rows(setup: Setup, tag: &str) -> Vec<(&'static str, String)> {
    in_pod_with(tag, setup, &[OTHER], |peer| {
        sh(&["ip", "route", "add", "172.16.77.0/24", "dev", "eth0"]);
        let mut rows = Vec::new();
        let peer_srv = |ip: Ipv4Addr| peer_listen(&peer, SocketAddr::from((ip, 8080)), "peer");
        let show = |r: std::io::Result<String>| r.unwrap_or_else(|e| format!("error: {e}"));
        let (h, o) = (peer_srv(PEER), listen(15001, "outbound"));
        rows.push((
            "app -> 10.77.0.2:8080",
            show(connect_as(APP_UID, APP_UID, SocketAddr::from((PEER, 8080)))),
        ));
        rows.push((
            "proxy -> 10.77.0.2:8080",
            show(connect_as(
                PROXY_UID,
                PROXY_UID,
                SocketAddr::from((PEER, 8080)),
            )),
        ));
        h.join().unwrap();
        o.join().unwrap();
        let h = peer_srv(OTHER);
        rows.push((
            "app -> 172.16.77.2:8080 (not in 10/8)",
            show(connect_as(
                APP_UID,
                APP_UID,
                SocketAddr::from((OTHER, 8080)),
            )),
        ));
        h.join().unwrap();
        // No listener on 15006: were it captured, the connection would be refused.
        let a = listen(8080, "app");
        rows.push((
            "peer -> pod:8080 (no inbound capture)",
            show(from_peer(&peer, 8080)),
        ));
        a.join().unwrap();
        rows
    })
}

#[test]
fn the_same_expectation_table_passes_for_nftmesh_and_for_istios_own_iptables_rules() {
    const TEST: &str =
        "the_same_expectation_table_passes_for_nftmesh_and_for_istios_own_iptables_rules";
    if let Some(target) = support::ebpf_column::child() {
        let setup = Setup::Ebpf(Box::new(case_config("ipnets")), target);
        support::ebpf_column::print_rows(&ipnets_rows(setup, "ipnets-ebpf"));
        return;
    }
    if skip() || ebpf_skip() {
        return;
    }
    let (ours, istio) = both_columns("ipnets", ipnets_rows);
    let ebpf = ebpf_column(TEST, &ours);
    let expected = [
        format!("outbound {PEER}:8080"),
        "peer -".to_string(),
        "peer -".to_string(),
        "app ".to_string(),
    ];
    print_and_check(
        "Istio case ipnets",
        &[
            ("nftmesh", &ours),
            ("istio-iptables", &istio),
            ("nftmesh eBPF backend", &ebpf),
        ],
        &expected,
    );
    let (pod, to) = (IpAddr::from(POD), |ip: Ipv4Addr| {
        SocketAddr::from((ip, 8080))
    });
    let packets = [
        sent(APP_UID, pod, to(PEER), "eth0"),
        sent(PROXY_UID, pod, to(PEER), "eth0"),
        sent(APP_UID, pod, to(OTHER), "eth0"),
        arriving(PEER.into(), to(POD)),
    ];
    explained_like_observed("ipnets", &ours, &packets);
}

#[test]
fn ipv6_inbound_passthrough_from_loopback_6_is_not_captured_again() {
    if skip() {
        return;
    }
    let mut cfg = CaptureConfig::sidecar();
    cfg.ipv6 = true;
    // The install put ::6 on lo.
    let (passthrough, other) = in_pod("passthrough6", cfg, &[], |_peer| {
        let servers = [listen6(8080, "app"), listen6(15006, "inbound")];
        let to = SocketAddr::from((POD6, 8080));
        let passthrough =
            connect_from_as(PROXY_UID, Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6).into(), to);
        // The same from the pod's own address is sent back to the inbound port.
        let other = connect_from_as(PROXY_UID, POD6.into(), to);
        for h in servers {
            h.join().unwrap();
        }
        (passthrough, other)
    });
    let p = passthrough.expect("passthrough connection");
    assert!(
        p.starts_with("app "),
        "from ::6 the app is reached directly: {p}"
    );
    assert_eq!(
        other.expect("other source"),
        format!("inbound [{POD6}]:8080")
    );
}

/// The rows for Istio's `inbound-ports-wildcard` case (inbound `*`, no outbound capture).
fn inbound_wildcard_rows(setup: Setup, tag: &str) -> Vec<(&'static str, String)> {
    in_pod_with(tag, setup, &[], |peer| {
        let show = |r: std::io::Result<String>| r.unwrap_or_else(|e| format!("error: {e}"));
        let mut rows = Vec::new();
        let (i, t) = (
            listen_as_proxy(15006, "inbound", false),
            listen(15008, "tunnel"),
        );
        rows.push(("peer -> pod:8080", show(from_peer(&peer, 8080))));
        rows.push(("peer -> pod:15008", show(from_peer(&peer, 15008))));
        i.join().unwrap();
        t.join().unwrap();
        let h = peer_listen(&peer, SocketAddr::from((PEER, 8080)), "peer");
        rows.push((
            "app -> 10.77.0.2:8080 (no outbound capture)",
            show(connect_as(APP_UID, APP_UID, SocketAddr::from((PEER, 8080)))),
        ));
        h.join().unwrap();
        let (a, i) = (
            listen(8080, "app"),
            listen_as_proxy(15006, "inbound", false),
        );
        let to = SocketAddr::from((POD, 8080));
        rows.push((
            "proxy from 127.0.0.6 -> pod:8080",
            show(connect_from_as(
                PROXY_UID,
                Ipv4Addr::new(127, 0, 0, 6).into(),
                to,
            )),
        ));
        rows.push((
            "proxy from 127.0.0.7 -> pod:8080",
            show(connect_from_as(
                PROXY_UID,
                Ipv4Addr::new(127, 0, 0, 7).into(),
                to,
            )),
        ));
        a.join().unwrap();
        i.join().unwrap();
        rows
    })
}

#[test]
fn the_inbound_wildcard_table_passes_for_nftmesh_and_for_istios_own_iptables_rules() {
    const TEST: &str =
        "the_inbound_wildcard_table_passes_for_nftmesh_and_for_istios_own_iptables_rules";
    if let Some(target) = support::ebpf_column::child() {
        let setup = Setup::Ebpf(Box::new(case_config("inbound-ports-wildcard")), target);
        support::ebpf_column::print_rows(&inbound_wildcard_rows(setup, "wildcard-ebpf"));
        return;
    }
    if skip() || ebpf_skip() {
        return;
    }
    let (ours, istio) = both_columns("inbound-ports-wildcard", inbound_wildcard_rows);
    let ebpf = ebpf_column(TEST, &ours);
    let lookup = ebpf_column_with(TEST, &ours, nftmesh::ebpf::EbpfInbound::SkLookup);
    let expected = [
        format!("inbound {POD}:8080"),
        "tunnel ".to_string(),
        "peer -".to_string(),
        "app ".to_string(),
        format!("inbound {POD}:8080"),
    ];
    print_and_check(
        "Istio case inbound-ports-wildcard",
        &[
            ("nftmesh", &ours),
            ("istio-iptables", &istio),
            ("nftmesh eBPF backend", &ebpf),
            ("eBPF, sk_lookup inbound", &lookup),
        ],
        &expected,
    );
    let pod = |port: u16| SocketAddr::from((POD, port));
    let lo = |last: u8| IpAddr::from(Ipv4Addr::new(127, 0, 0, last));
    let packets = [
        arriving(PEER.into(), pod(8080)),
        arriving(PEER.into(), pod(15008)),
        sent(APP_UID, POD.into(), SocketAddr::from((PEER, 8080)), "eth0"),
        sent(PROXY_UID, lo(6), pod(8080), "lo"),
        sent(PROXY_UID, lo(7), pod(8080), "lo"),
    ];
    explained_like_observed("inbound-ports-wildcard", &ours, &packets);
}

/// A table's rows for Istio's `case`: installed by nftmesh from the case's config, and by
/// `iptables-restore` from the case's golden.
type Rows = Vec<(&'static str, String)>;

/// The sidecar's listeners as the rows name them, and their ports.
const LISTENERS: [(&str, u16); 3] = [("outbound", 15001), ("inbound", 15006), ("tunnel", 15008)];

/// Explain each row's packet against the case's capture, side by side with what the row saw.
fn explained_like_observed(case: &str, observed: &Rows, packets: &[(Hook, Packet)]) {
    let c = support::cases::cases()
        .into_iter()
        .find(|c| c.name == case)
        .expect("case");
    let capture = nftmesh::Capture::new(&c.config()).expect("valid case");
    support::pods::explain_rows(case, capture.ruleset(), observed, packets, &LISTENERS);
}

/// A packet an app or the proxy (`uid`) sends from `src` to `dst`, leaving by `oif`.
fn sent(uid: u32, src: IpAddr, dst: SocketAddr, oif: &str) -> (Hook, Packet) {
    (
        Hook::Output,
        Packet::local_tcp(uid, uid, src, dst.ip(), dst.port(), oif),
    )
}

/// A packet from `src` arriving on eth0 for `dst`.
fn arriving(src: IpAddr, dst: SocketAddr) -> (Hook, Packet) {
    (
        Hook::Prerouting,
        Packet::incoming_tcp(src, dst.ip(), dst.port(), "eth0"),
    )
}

fn both_columns(case: &str, rows: fn(Setup, &str) -> Rows) -> (Rows, Rows) {
    let c = support::cases::cases()
        .into_iter()
        .find(|c| c.name == case)
        .expect("case");
    let ours = rows(Setup::Nftmesh(Box::new(c.config())), &format!("{case}-nft"));
    let (v4, v6) = golden_parts(case);
    let istio = rows(Setup::IptablesRestore(v4, v6), &format!("{case}-ipt"));
    (ours, istio)
}

/// Print the table (row, then a cell per column) and check every column against `expected`
/// (each cell must start with it).
fn print_and_check(case: &str, columns: &[(&str, &Rows)], expected: &[String]) {
    let mut head = format!("{:<44}", format!("row ({case})"));
    for (who, _) in columns {
        head.push_str(&format!(" | {who:<30}"));
    }
    println!("{head}");
    for (k, (row, _)) in columns[0].1.iter().enumerate() {
        let mut line = format!("{row:<44}");
        for (_, rows) in columns {
            line.push_str(&format!(" | {:<30}", rows[k].1));
        }
        println!("{line}");
    }
    for (who, rows) in columns {
        assert_eq!(rows.len(), expected.len(), "{who}: one cell per row");
        for (k, want) in expected.iter().enumerate() {
            let got = &rows[k].1;
            assert!(
                got.starts_with(want.as_str()),
                "{who}, row {:?}: got {got:?}, want {want:?}",
                rows[k].0
            );
        }
    }
}

/// Whether the eBPF column cannot run here (printed as a skip, a failure under CI).
fn ebpf_skip() -> bool {
    match support::ebpf_column::unavailable() {
        Some(why) => {
            support::skip(&why);
            true
        }
        None => false,
    }
}

/// The eBPF backend's column of the test named `test` (run again as a child in a cgroup of its
/// own), its rows checked to be `like`'s.
fn ebpf_column(test: &str, like: &Rows) -> Rows {
    ebpf_column_with(test, like, nftmesh::ebpf::EbpfInbound::Nftables)
}

/// [`ebpf_column`] with inbound captured as `inbound` says.
fn ebpf_column_with(test: &str, like: &Rows, inbound: nftmesh::ebpf::EbpfInbound) -> Rows {
    let got = support::ebpf_column::column_with(test, inbound);
    assert_eq!(
        got.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(),
        like.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        "the eBPF column has the same rows"
    );
    like.iter()
        .zip(got)
        .map(|((row, _), (_, seen))| (*row, seen))
        .collect()
}

/// The config of a case, by name.
fn case_config(case: &str) -> CaptureConfig {
    support::cases::cases()
        .into_iter()
        .find(|c| c.name == case)
        .expect("case")
        .config()
}

#[test]
fn ipv6_dns_to_the_configured_server_lands_on_15053_and_the_proxys_reaches_the_server() {
    if skip() {
        return;
    }
    let server6 = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 3);
    let mut cfg = CaptureConfig::sidecar();
    cfg.ipv6 = true;
    cfg.dns.enabled = true;
    cfg.dns.servers = vec![server6.into()];
    let (app, proxy) = in_pod("dns6", cfg, &[], move |peer| {
        let server = peer
            .run(move || {
                sh(&[
                    "ip",
                    "addr",
                    "add",
                    &format!("{server6}/64"),
                    "dev",
                    "eth0p",
                    "nodad",
                ]);
                std::net::UdpSocket::bind((server6, 53)).expect("peer dns")
            })
            .unwrap();
        let capture = std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 15053)).unwrap();
        let dns = SocketAddr::from((server6, 53));
        udp_as(APP_UID, dns);
        let app = (udp_received(&capture), udp_received(&server));
        udp_as(PROXY_UID, dns);
        let proxy = (udp_received(&capture), udp_received(&server));
        (app, proxy)
    });
    assert_eq!(
        app,
        (true, false),
        "the app's DNS lands on 15053, not at the server"
    );
    assert_eq!(
        proxy,
        (false, true),
        "the proxy's own DNS reaches the server"
    );
}

#[test]
fn ipv6_excluded_cidrs_and_ports_are_not_captured_and_tcp_dns_lands_on_15053() {
    if skip() {
        return;
    }
    let other6 = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 4);
    let mut cfg = CaptureConfig::sidecar();
    cfg.ipv6 = true;
    cfg.dns.enabled = true;
    cfg.dns.servers = vec![other6.into()];
    cfg.outbound_cidrs_exclude = vec![format!("{PEER6}/128").parse().unwrap()];
    cfg.outbound_ports_exclude = vec![9090];
    let (excluded, excluded_port, captured, tcp) = in_pod("excl6", cfg, &[], move |peer| {
        peer.run(move || {
            sh(&[
                "ip",
                "addr",
                "add",
                &format!("{other6}/64"),
                "dev",
                "eth0p",
                "nodad",
            ])
        })
        .unwrap();
        // No listener on 15001 yet: were the exclusion ignored, this would be refused.
        let srv = peer_listen(&peer, SocketAddr::from((PEER6, 8080)), "peer");
        let excluded = connect_as(APP_UID, APP_UID, SocketAddr::from((PEER6, 8080)));
        srv.join().unwrap();
        let srv = peer_listen(&peer, SocketAddr::from((other6, 9090)), "peer");
        let excluded_port = connect_as(APP_UID, APP_UID, SocketAddr::from((other6, 9090)));
        srv.join().unwrap();
        // The control: the same address on another port is captured.
        let out = listen6(15001, "outbound");
        let captured = connect_as(APP_UID, APP_UID, SocketAddr::from((other6, 8080)));
        out.join().unwrap();
        // DNS over TCP to the configured IPv6 server: the app's lands on 15053, the proxy's
        // reaches the server.
        let dns = SocketAddr::from((other6, 53));
        let capture = listen6(15053, "dns-capture");
        let server = peer_listen(&peer, dns, "dns-server");
        let tcp = (
            connect_as(APP_UID, APP_UID, dns),
            connect_as(PROXY_UID, PROXY_UID, dns),
        );
        capture.join().unwrap();
        server.join().unwrap();
        (excluded, excluded_port, captured, tcp)
    });
    assert_eq!(excluded.expect("excluded CIDR"), "peer -");
    assert_eq!(excluded_port.expect("excluded port"), "peer -");
    assert_eq!(
        captured.expect("captured control"),
        format!("outbound [{other6}]:8080")
    );
    assert_eq!(
        tcp.0.expect("app TCP DNS"),
        format!("dns-capture [{other6}]:53")
    );
    assert!(tcp.1.expect("proxy TCP DNS").starts_with("dns-server "));
}

/// The rows for Istio's `ipv6-inbound-ports` case (inbound 4000 and 5000 over IPv6, no outbound
/// capture), IPv6 traffic only.
fn ipv6_inbound_rows(setup: Setup, tag: &str) -> Vec<(&'static str, String)> {
    in_pod_with(tag, setup, &[], |peer| {
        nftmesh::netlink::routes::Routing::open()
            .unwrap()
            .ensure_loopback_v6()
            .expect("::6 on lo");
        let show = |r: std::io::Result<String>| r.unwrap_or_else(|e| format!("error: {e}"));
        let from_peer6 = |port: u16| {
            peer.run(move || connect_as(0, 0, SocketAddr::from((POD6, port))))
                .expect("enter peer netns")
        };
        let mut rows = Vec::new();
        let (i, a) = (
            listen_as_proxy(15006, "inbound", true),
            listen6(8080, "app"),
        );
        rows.push(("peer -> [pod]:4000", show(from_peer6(4000))));
        rows.push((
            "peer -> [pod]:8080 (not an inbound port)",
            show(from_peer6(8080)),
        ));
        i.join().unwrap();
        a.join().unwrap();
        let h = peer_listen(&peer, SocketAddr::from((PEER6, 8080)), "peer");
        rows.push((
            "app -> [peer]:8080 (no outbound capture)",
            show(connect_as(
                APP_UID,
                APP_UID,
                SocketAddr::from((PEER6, 8080)),
            )),
        ));
        h.join().unwrap();
        let (a, i) = (
            listen6(4000, "app"),
            listen_as_proxy(15006, "inbound", true),
        );
        let to = SocketAddr::from((POD6, 4000));
        rows.push((
            "proxy from ::6 -> [pod]:4000",
            show(connect_from_as(
                PROXY_UID,
                Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6).into(),
                to,
            )),
        ));
        rows.push((
            "proxy from [pod] -> [pod]:4000",
            show(connect_from_as(PROXY_UID, POD6.into(), to)),
        ));
        a.join().unwrap();
        i.join().unwrap();
        rows
    })
}

#[test]
fn the_ipv6_inbound_table_passes_for_nftmesh_and_for_istios_own_ip6tables_rules() {
    const TEST: &str =
        "the_ipv6_inbound_table_passes_for_nftmesh_and_for_istios_own_ip6tables_rules";
    if let Some(target) = support::ebpf_column::child() {
        let setup = Setup::Ebpf(Box::new(case_config("ipv6-inbound-ports")), target);
        support::ebpf_column::print_rows(&ipv6_inbound_rows(setup, "ipv6-in-ebpf"));
        return;
    }
    if skip() || ebpf_skip() {
        return;
    }
    let (ours, istio) = both_columns("ipv6-inbound-ports", ipv6_inbound_rows);
    let ebpf = ebpf_column(TEST, &ours);
    let lookup = ebpf_column_with(TEST, &ours, nftmesh::ebpf::EbpfInbound::SkLookup);
    let expected = [
        format!("inbound [{POD6}]:4000"),
        "app ".to_string(),
        "peer -".to_string(),
        "app ".to_string(),
        format!("inbound [{POD6}]:4000"),
    ];
    print_and_check(
        "Istio case ipv6-inbound-ports",
        &[
            ("nftmesh", &ours),
            ("istio-iptables", &istio),
            ("nftmesh eBPF backend", &ebpf),
            ("eBPF, sk_lookup inbound", &lookup),
        ],
        &expected,
    );
    let pod = |port: u16| SocketAddr::from((POD6, port));
    let packets = [
        arriving(PEER6.into(), pod(4000)),
        arriving(PEER6.into(), pod(8080)),
        sent(
            APP_UID,
            POD6.into(),
            SocketAddr::from((PEER6, 8080)),
            "eth0",
        ),
        sent(
            PROXY_UID,
            Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6).into(),
            pod(4000),
            "lo",
        ),
        sent(PROXY_UID, POD6.into(), pod(4000), "lo"),
    ];
    explained_like_observed("ipv6-inbound-ports", &ours, &packets);
}

/// An outbound peer address in `outbound_cidrs_exclude` of [`sidecar_config`].
const EXCLUDED_PEER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 4);

/// Istio's sidecar defaults (IPv4) with DNS capture to [`DNS_SERVER`], outbound port 9090 and
/// [`EXCLUDED_PEER`] excluded, and inbound port 22 excluded.
fn sidecar_config() -> CaptureConfig {
    let mut cfg = CaptureConfig::sidecar();
    cfg.ipv6 = false;
    cfg.dns.enabled = true;
    cfg.dns.servers = vec![DNS_SERVER.into()];
    cfg.outbound_ports_exclude = vec![9090];
    cfg.outbound_cidrs_exclude = vec![format!("{EXCLUDED_PEER}/32").parse().unwrap()];
    cfg.inbound_ports_exclude.push(22);
    cfg
}

/// The rows of the sidecar table: a connection made before the install, outbound (with the
/// app's getpeername and a half-close), the proxy's bypass, outbound exclusions, inbound and
/// its exclusions, DNS over UDP and TCP.
fn sidecar_rows(setup: Setup, tag: &str) -> Rows {
    let before = |peer: &nftmesh::netlink::netns::Netns| {
        let to = SocketAddr::from((PEER, 8081));
        let h = peer_listen_on_request(peer, to, "peer");
        (h, open(to))
    };
    in_pod_before(
        tag,
        setup,
        &[DNS_SERVER, EXCLUDED_PEER],
        before,
        |peer, (early_srv, early)| {
            let show = |r: std::io::Result<String>| r.unwrap_or_else(|e| format!("error: {e}"));
            let peer_srv =
                |ip: Ipv4Addr, port: u16| peer_listen(&peer, SocketAddr::from((ip, port)), "peer");
            let target = SocketAddr::from((PEER, 8080));
            let mut rows: Rows = Vec::new();
            rows.push((
                "connection made before the install",
                show(request_on(early)),
            ));
            early_srv.join().unwrap();
            let (o, p) = (listen(15001, "outbound"), peer_srv(PEER, 8080));
            rows.push((
                "app -> 10.77.0.2:8080",
                show(connect_as(APP_UID, APP_UID, target)),
            ));
            rows.push((
                "proxy -> 10.77.0.2:8080",
                show(connect_as(PROXY_UID, PROXY_UID, target)),
            ));
            o.join().unwrap();
            p.join().unwrap();
            let o = listen(15001, "outbound");
            rows.push((
                "app -> 10.77.0.2:8080: its getpeername",
                show(peer_seen_as(APP_UID, target)),
            ));
            o.join().unwrap();
            let o = listen_to_eof(15001, "outbound");
            rows.push((
                "app -> 10.77.0.2:8080, half-closed",
                show(half_close_as(APP_UID, target)),
            ));
            o.join().unwrap();
            // No listener on 15001 from here: a capture would be refused.
            let p = peer_srv(PEER, 9090);
            rows.push((
                "app -> 10.77.0.2:9090 (excluded port)",
                show(connect_as(APP_UID, APP_UID, SocketAddr::from((PEER, 9090)))),
            ));
            p.join().unwrap();
            let p = peer_srv(EXCLUDED_PEER, 8080);
            rows.push((
                "app -> 10.77.0.4:8080 (excluded CIDR)",
                show(connect_as(
                    APP_UID,
                    APP_UID,
                    SocketAddr::from((EXCLUDED_PEER, 8080)),
                )),
            ));
            p.join().unwrap();
            let (i, t) = (
                listen_as_proxy(15006, "inbound", false),
                listen(15008, "tunnel"),
            );
            rows.push(("peer -> pod:8080", show(from_peer(&peer, 8080))));
            rows.push(("peer -> pod:15008", show(from_peer(&peer, 15008))));
            i.join().unwrap();
            t.join().unwrap();
            for (row, port, name) in [
                ("peer -> pod:15090 (Istio's)", 15090u16, "own15090"),
                ("peer -> pod:15021 (Istio's)", 15021, "own15021"),
                ("peer -> pod:15020 (Istio's)", 15020, "own15020"),
                ("peer -> pod:22 (excluded)", 22, "own22"),
            ] {
                let h = listen(port, name);
                rows.push((row, show(from_peer(&peer, port))));
                h.join().unwrap();
            }
            let capture = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 15053)).unwrap();
            let server = peer
                .run(|| std::net::UdpSocket::bind((DNS_SERVER, 53)).expect("peer dns"))
                .unwrap();
            let dns = SocketAddr::from((DNS_SERVER, 53));
            let landed = |capture: &std::net::UdpSocket, server: &std::net::UdpSocket| match (
                udp_received(capture),
                udp_received(server),
            ) {
                (true, false) => "on 15053".to_string(),
                (false, true) => "at the server".to_string(),
                other => format!("error: {other:?}"),
            };
            udp_as(APP_UID, dns);
            rows.push(("app UDP -> 10.77.0.3:53", landed(&capture, &server)));
            udp_as(PROXY_UID, dns);
            rows.push(("proxy UDP -> 10.77.0.3:53", landed(&capture, &server)));
            let (c, s) = (
                listen(15053, "dns-capture"),
                peer_listen(&peer, dns, "dns-server"),
            );
            rows.push((
                "app TCP -> 10.77.0.3:53",
                show(connect_as(APP_UID, APP_UID, dns)),
            ));
            rows.push((
                "proxy TCP -> 10.77.0.3:53",
                show(connect_as(PROXY_UID, PROXY_UID, dns)),
            ));
            c.join().unwrap();
            s.join().unwrap();
            rows
        },
    )
}

#[test]
fn the_sidecar_table_passes_for_nftables_and_for_the_ebpf_backend() {
    const TEST: &str = "the_sidecar_table_passes_for_nftables_and_for_the_ebpf_backend";
    if let Some(target) = support::ebpf_column::child() {
        let setup = Setup::Ebpf(Box::new(sidecar_config()), target);
        support::ebpf_column::print_rows(&sidecar_rows(setup, "sidecar-ebpf"));
        return;
    }
    if skip() || ebpf_skip() {
        return;
    }
    let mut nft = sidecar_rows(Setup::Nftmesh(Box::new(sidecar_config())), "sidecar-nft");
    let mut ebpf = ebpf_column(TEST, &nft);
    let mut lookup = ebpf_column_with(TEST, &nft, nftmesh::ebpf::EbpfInbound::SkLookup);
    // A connection made before the install: the programs act at connect() only, so it is
    // untouched. nf_tables' REDIRECT is not: once the nat table exists, conntrack picks the
    // established connection up mid-stream as new, the nat chain redirects its next segment
    // to the proxy port, and the connection is reset (as with Istio's own iptables rules,
    // which are the same NAT).
    for (who, column) in [
        ("eBPF backend", &mut ebpf),
        ("sk_lookup inbound", &mut lookup),
    ] {
        let (row, seen) = column.remove(0);
        assert_eq!(
            (row, seen.as_str()),
            ("connection made before the install", "peer after request"),
            "{who}"
        );
    }
    let (row, seen) = nft.remove(0);
    println!("{row}: nftables backend: {seen}; eBPF backend: peer after request");
    assert!(
        seen.contains("reset"),
        "nftables backend, {row}: {seen} (REDIRECT used to reset it)"
    );
    let expected = [
        format!("outbound {PEER}:8080"),
        "peer -".to_string(),
        format!("{PEER}:8080 (outbound {PEER}:8080)"),
        format!("outbound {PEER}:8080 got 5"),
        "peer -".to_string(),
        "peer -".to_string(),
        format!("inbound {POD}:8080"),
        "tunnel ".to_string(),
        "own15090 ".to_string(),
        "own15021 ".to_string(),
        "own15020 ".to_string(),
        "own22 ".to_string(),
        "on 15053".to_string(),
        "at the server".to_string(),
        format!("dns-capture {DNS_SERVER}:53"),
        "dns-server ".to_string(),
    ];
    print_and_check(
        "sidecar",
        &[
            ("nftables backend", &nft),
            ("eBPF backend", &ebpf),
            ("eBPF, sk_lookup inbound", &lookup),
        ],
        &expected,
    );
}

/// Istio's sidecar defaults with IPv6 on, DNS capture to [`PEER6`] and outbound port 9090
/// excluded.
fn sidecar6_config() -> CaptureConfig {
    let mut cfg = CaptureConfig::sidecar();
    cfg.ipv6 = true;
    cfg.dns.enabled = true;
    cfg.dns.servers = vec![PEER6.into()];
    cfg.outbound_ports_exclude = vec![9090];
    cfg
}

/// The IPv6 rows: outbound (with getpeername and a half-close), the proxy's bypass, an excluded
/// port, inbound, DNS over UDP and TCP.
fn sidecar6_rows(setup: Setup, tag: &str) -> Rows {
    in_pod_with(tag, setup, &[], |peer| {
        let show = |r: std::io::Result<String>| r.unwrap_or_else(|e| format!("error: {e}"));
        let peer_srv = |port: u16| peer_listen(&peer, SocketAddr::from((PEER6, port)), "peer");
        let target = SocketAddr::from((PEER6, 8080));
        let mut rows: Rows = Vec::new();
        let (o, p) = (listen6(15001, "outbound"), peer_srv(8080));
        rows.push((
            "app -> [fd00:77::2]:8080",
            show(connect_as(APP_UID, APP_UID, target)),
        ));
        rows.push((
            "proxy -> [fd00:77::2]:8080",
            show(connect_as(PROXY_UID, PROXY_UID, target)),
        ));
        o.join().unwrap();
        p.join().unwrap();
        let o = listen6(15001, "outbound");
        rows.push((
            "app -> [fd00:77::2]:8080: its getpeername",
            show(peer_seen_as(APP_UID, target)),
        ));
        o.join().unwrap();
        let o = listen_to_eof_at(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 15001)), "outbound");
        rows.push((
            "app -> [fd00:77::2]:8080, half-closed",
            show(half_close_as(APP_UID, target)),
        ));
        o.join().unwrap();
        let p = peer_srv(9090);
        rows.push((
            "app -> [fd00:77::2]:9090 (excluded port)",
            show(connect_as(
                APP_UID,
                APP_UID,
                SocketAddr::from((PEER6, 9090)),
            )),
        ));
        p.join().unwrap();
        let i = listen_as_proxy(15006, "inbound", true);
        rows.push(("peer -> [pod]:8080", show(from_peer6(&peer, 8080))));
        i.join().unwrap();
        let capture = std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 15053)).unwrap();
        let server = peer
            .run(|| std::net::UdpSocket::bind((PEER6, 53)).expect("peer dns"))
            .unwrap();
        let dns = SocketAddr::from((PEER6, 53));
        let landed = |capture: &std::net::UdpSocket, server: &std::net::UdpSocket| match (
            udp_received(capture),
            udp_received(server),
        ) {
            (true, false) => "on 15053".to_string(),
            (false, true) => "at the server".to_string(),
            other => format!("error: {other:?}"),
        };
        udp_as(APP_UID, dns);
        rows.push(("app UDP -> [fd00:77::2]:53", landed(&capture, &server)));
        udp_as(PROXY_UID, dns);
        rows.push(("proxy UDP -> [fd00:77::2]:53", landed(&capture, &server)));
        let (c, s) = (
            listen6(15053, "dns-capture"),
            peer_listen(&peer, dns, "dns-server"),
        );
        rows.push((
            "app TCP -> [fd00:77::2]:53",
            show(connect_as(APP_UID, APP_UID, dns)),
        ));
        rows.push((
            "proxy TCP -> [fd00:77::2]:53",
            show(connect_as(PROXY_UID, PROXY_UID, dns)),
        ));
        c.join().unwrap();
        s.join().unwrap();
        // The proxy's inbound passthrough: from ::6 (on lo with IPv6) to the pod, not captured.
        let (a, i) = (
            listen6(8080, "app"),
            listen_as_proxy(15006, "inbound", true),
        );
        let six: std::net::IpAddr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6).into();
        rows.push((
            "proxy from ::6 -> [pod]:8080",
            show(connect_from_as(
                PROXY_UID,
                six,
                SocketAddr::from((POD6, 8080)),
            )),
        ));
        a.join().unwrap();
        i.join().unwrap();
        rows
    })
}

#[test]
fn the_ipv6_sidecar_table_passes_for_nftables_and_for_the_ebpf_backend() {
    const TEST: &str = "the_ipv6_sidecar_table_passes_for_nftables_and_for_the_ebpf_backend";
    if let Some(target) = support::ebpf_column::child() {
        let setup = Setup::Ebpf(Box::new(sidecar6_config()), target);
        support::ebpf_column::print_rows(&sidecar6_rows(setup, "sidecar6-ebpf"));
        return;
    }
    if skip() || ebpf_skip() {
        return;
    }
    let nft = sidecar6_rows(Setup::Nftmesh(Box::new(sidecar6_config())), "sidecar6-nft");
    let ebpf = ebpf_column(TEST, &nft);
    let lookup = ebpf_column_with(TEST, &nft, nftmesh::ebpf::EbpfInbound::SkLookup);
    let expected = [
        format!("outbound [{PEER6}]:8080"),
        "peer -".to_string(),
        format!("[{PEER6}]:8080 (outbound [{PEER6}]:8080)"),
        format!("outbound [{PEER6}]:8080 got 5"),
        "peer -".to_string(),
        format!("inbound [{POD6}]:8080"),
        "on 15053".to_string(),
        "at the server".to_string(),
        format!("dns-capture [{PEER6}]:53"),
        "dns-server ".to_string(),
        "app ".to_string(),
    ];
    print_and_check(
        "IPv6 sidecar",
        &[
            ("nftables backend", &nft),
            ("eBPF backend", &ebpf),
            ("eBPF, sk_lookup inbound", &lookup),
        ],
        &expected,
    );
}
