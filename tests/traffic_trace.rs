//! `nftmesh::trace` on real connections in a pod namespace: an application's connection is
//! traced through the redirect rule, the proxy uid's through its return, and the trace's own
//! table is gone afterwards, whether the trace was stopped or only dropped (the kernel's
//! owner flag).

use nftmesh_test_support as support;

use nftmesh::model::config::CaptureConfig;
use nftmesh::model::expr::L4Proto;
use nftmesh::netlink::trace::{TraceKind, TraceVerdict};
use nftmesh::trace::{Step, Trace, TraceFilter};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::pods::*;

/// Every step that comes within `wait` of the previous one (at most 200, within 5 s).
fn steps(trace: &mut Trace, wait: Duration) -> Vec<Step> {
    let mut out = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while out.len() < 200 && Instant::now() < end {
        match trace.next(wait).expect("trace event") {
            Some(s) => out.push(s),
            None => break,
        }
    }
    out
}

fn tables() -> Vec<String> {
    let mut conn = nftmesh::netlink::Connection::open().expect("connection");
    conn.tables()
        .expect("tables")
        .into_iter()
        .map(|t| t.name)
        .collect()
}

/// Whether `table` is gone within a second (the kernel deletes an owned table as its socket
/// is released).
fn gone(table: &str) -> bool {
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        if !tables().iter().any(|t| t == table) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn traced_connections_show_the_redirect_and_the_proxy_return_and_leave_no_table() {
    if let Some(why) = support::netns::oracle_unavailable() {
        support::skip(&why);
        return;
    }
    let mut cfg = CaptureConfig::sidecar();
    cfg.ipv6 = false;
    in_pod("trace", cfg, &[], |peer| {
        let target = SocketAddr::from((PEER, 8080));
        let servers = [
            listen(15001, "outbound"),
            peer_listen(&peer, target, "peer"),
        ];
        let app_filter = TraceFilter {
            proto: Some(L4Proto::Tcp),
            dport: Some(8080),
            uid: Some(APP_UID),
            ..TraceFilter::default()
        };
        let mut trace = Trace::start(None, &app_filter, "nftmesh-trace-test").expect("start");
        assert!(tables().iter().any(|t| t == "nftmesh-trace-test"));
        let app = connect_as(APP_UID, APP_UID, target).expect("app connection");
        assert_eq!(app, format!("outbound {target}"));
        let app_steps = steps(&mut trace, Duration::from_millis(300));
        let redirect = app_steps
            .iter()
            .find(|s| s.event.chain == "istio-redirect" && s.event.kind == TraceKind::Rule)
            .unwrap_or_else(|| panic!("no redirect step in {app_steps:#?}"));
        assert_eq!(
            redirect.rule.as_deref(),
            Some("meta l4proto tcp counter redirect to :15001")
        );
        assert_eq!(redirect.event.verdict, Some(TraceVerdict::Accept));
        assert_eq!(redirect.place.as_ref().map(|p| p.index), Some(0));
        // The first event of the packet carries its headers: the app's SYN to the target.
        let syn = app_steps
            .iter()
            .find_map(|s| s.event.packet)
            .expect("a packet header");
        assert_eq!((syn.dst, syn.dport), (target.ip(), Some(8080)));
        // Only the app's packets were traced.
        assert!(app_steps.iter().all(|s| s.event.chain != "istio-output"
            || s.rule.as_deref() != Some("meta skuid 1337 counter return")));
        trace.stop().expect("stop");
        assert!(gone("nftmesh-trace-test"), "stop deletes the table");

        let proxy_filter = TraceFilter {
            uid: Some(PROXY_UID),
            ..app_filter
        };
        let mut trace = Trace::start(None, &proxy_filter, "nftmesh-trace-proxy").expect("start");
        let proxy = connect_as(PROXY_UID, PROXY_UID, target).expect("proxy connection");
        assert_eq!(proxy, "peer -");
        let proxy_steps = steps(&mut trace, Duration::from_millis(300));
        let ret = proxy_steps
            .iter()
            .find(|s| s.rule.as_deref() == Some("meta skuid 1337 counter return"))
            .unwrap_or_else(|| panic!("no proxy return in {proxy_steps:#?}"));
        assert_eq!(ret.event.chain, "istio-output");
        assert_eq!(ret.event.verdict, Some(TraceVerdict::Return));
        assert!(!proxy_steps
            .iter()
            .any(|s| s.event.chain == "istio-redirect"));
        // Dropped without stop: the kernel deletes the owned table with its socket.
        drop(trace);
        assert!(
            gone("nftmesh-trace-proxy"),
            "the owner flag deletes the table"
        );
        for h in servers {
            h.join().unwrap();
        }
    });
}

#[test]
fn filters_no_packet_can_pass_are_refused_before_anything_is_added() {
    let both = TraceFilter {
        uid: Some(1),
        iif: Some("eth0".into()),
        ..TraceFilter::default()
    };
    assert!(both.hooks().unwrap_err().to_string().contains("never hold"));
    let port = TraceFilter {
        dport: Some(80),
        ..TraceFilter::default()
    };
    assert!(port.matches().unwrap_err().to_string().contains("protocol"));
    assert_eq!(
        TraceFilter::default().hooks().unwrap(),
        vec![
            nftmesh::model::Hook::Prerouting,
            nftmesh::model::Hook::Output
        ]
    );
}
