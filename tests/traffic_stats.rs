//! `Namespace::stats` against real traffic: after a known number of real connections of each
//! kind, the counters of the rules that saw them, and their sums by reason, grew by exactly
//! that number (nat chains see a connection's first packet only).

use nftmesh_test_support as support;

use nftmesh::model::config::CaptureConfig;
use nftmesh::model::stats::{Reason, Stats};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use support::pods::*;

fn packets_of(stats: &Stats, chain: &str, rule: &str) -> u64 {
    let found: Vec<u64> = stats
        .rules
        .iter()
        .filter(|r| r.place.chain == chain && r.rule == rule)
        .map(|r| r.counter.packets)
        .collect();
    assert_eq!(found.len(), 1, "{chain}: {rule} in {:#?}", stats.rules);
    found[0]
}

#[test]
fn counters_grow_by_the_real_connections_each_rule_saw() {
    if let Some(why) = support::netns::oracle_unavailable() {
        support::skip(&why);
        return;
    }
    let mut cfg = CaptureConfig::sidecar();
    cfg.ipv6 = false;
    let (before, after) = in_pod("stats", cfg, &[], |peer| {
        let ns = nftmesh::Namespace::current().expect("namespace");
        let before = ns.stats().expect("stats before");
        let (app_n, proxy_n, in_n, tunnel_n) = (3, 2, 2, 1);
        let target = SocketAddr::from((PEER, 8080));
        let bind = |p: u16| TcpListener::bind((Ipv4Addr::UNSPECIFIED, p)).expect("listener");
        let servers = [
            serve(bind(15001), "outbound", app_n),
            serve(bind(15006), "inbound", in_n),
            serve(bind(15008), "tunnel", tunnel_n),
            {
                let l = peer
                    .run(move || TcpListener::bind(target).expect("peer listener"))
                    .expect("enter peer");
                serve(l, "peer", proxy_n)
            },
        ];
        for _ in 0..app_n {
            let r = connect_as(APP_UID, APP_UID, target).expect("app connection");
            assert_eq!(r, format!("outbound {target}"));
        }
        for _ in 0..proxy_n {
            let r = connect_as(PROXY_UID, PROXY_UID, target).expect("proxy connection");
            assert_eq!(r, "peer -");
        }
        for _ in 0..in_n {
            let r = from_peer(&peer, 8080).expect("inbound connection");
            assert!(r.starts_with("inbound "), "{r}");
        }
        for _ in 0..tunnel_n {
            let r = from_peer(&peer, 15008).expect("tunnel connection");
            assert!(r.starts_with("tunnel "), "{r}");
        }
        for h in servers {
            h.join().unwrap();
        }
        (before, ns.stats().expect("stats after"))
    });
    assert!(!before.rules.is_empty());
    assert!(
        before.rules.iter().all(|r| r.counter.packets == 0),
        "a fresh install counts nothing: {before:#?}"
    );
    let redirect = "meta l4proto tcp counter redirect to :15001";
    let in_redirect = "meta l4proto tcp counter redirect to :15006";
    let proxy_return = "meta skuid 1337 counter return";
    let tunnel_return = "tcp dport 15008 counter return";
    assert_eq!(packets_of(&after, "istio-redirect", redirect), 3);
    assert_eq!(packets_of(&after, "istio-in-redirect", in_redirect), 2);
    assert_eq!(packets_of(&after, "istio-output", proxy_return), 2);
    assert_eq!(packets_of(&after, "istio-inbound", tunnel_return), 1);
    assert_eq!(after.total(Reason::CapturedOutbound).packets, 3);
    assert_eq!(after.total(Reason::CapturedInbound).packets, 2);
    assert_eq!(after.total(Reason::PassthroughProxyUid).packets, 2);
    assert_eq!(after.total(Reason::PassthroughExcludedPort).packets, 1);
    assert_eq!(after.total(Reason::CapturedDns).packets, 0);
    // A SYN over IPv4 is at least 40 bytes.
    assert!(after.total(Reason::CapturedOutbound).bytes >= 3 * 40);
}
