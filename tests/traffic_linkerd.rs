//! Linkerd's capture with real traffic: a pod namespace joined to a peer namespace, the
//! capture of Linkerd's injector argv (`--incoming-proxy-port 4143 --outgoing-proxy-port 4140
//! --proxy-uid 2102 --inbound-ports-to-ignore 4190,4191,4567,4568 --outbound-ports-to-ignore
//! 4567,4568`, case `injector-default` of `tests/data/linkerd/`), installed by nftmesh and,
//! side by side, Linkerd's own rules for the same flags (the golden linkerd2-proxy-init
//! produced) loaded with `iptables-restore`: every row holds for both.

use nftmesh_test_support as support;

use nftmesh::model::expr::PortRange;
use nftmesh::model::linkerd::LinkerdConfig;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use support::pods::*;

const APP: u32 = 1000;
const PROXY: u32 = 2102;

fn injector() -> LinkerdConfig {
    LinkerdConfig {
        proxy_uid: Some(PROXY),
        inbound_ports_to_ignore: [4190, 4191, 4567, 4568].map(PortRange::single).to_vec(),
        outbound_ports_to_ignore: [4567, 4568].map(PortRange::single).to_vec(),
        ..LinkerdConfig::default()
    }
}

/// What each row's connection reached (the listener's name and the original destination it
/// saw), in the pod set up by `setup`.
fn rows(tag: &str, setup: Setup) -> Vec<(&'static str, String)> {
    in_pod_with(tag, setup, &[], |peer| {
        let mut out = Vec::new();
        let mut row = |name: &'static str, r: std::io::Result<String>| {
            out.push((name, r.unwrap_or_else(|e| format!("error: {e}"))));
        };
        let to_peer = SocketAddr::from((PEER, 8080));
        // The app's outbound: to the proxy's outgoing port, with its original destination.
        let h = [
            listen(4140, "outgoing"),
            peer_listen(&peer, to_peer, "peer"),
        ];
        row("app to peer:8080", connect_as(APP, APP, to_peer));
        // The proxy's own outbound: not redirected.
        row("proxy to peer:8080", connect_as(PROXY, PROXY, to_peer));
        h.into_iter().for_each(|h| h.join().unwrap());
        // An ignored outbound port.
        let ignored = SocketAddr::from((PEER, 4567));
        let h = peer_listen(&peer, ignored, "peer");
        row("app to peer:4567", connect_as(APP, APP, ignored));
        h.join().unwrap();
        // Loopback: not redirected.
        let lo = TcpListener::bind((Ipv4Addr::LOCALHOST, 9000)).unwrap();
        let h = serve(lo, "app-local", 1);
        row(
            "app to 127.0.0.1:9000",
            connect_as(APP, APP, SocketAddr::from((Ipv4Addr::LOCALHOST, 9000))),
        );
        h.join().unwrap();
        // Inbound: to the proxy's incoming port with its original destination; an ignored
        // inbound port reaches the app.
        let h = listen(4143, "incoming");
        row("peer to pod:8080", from_peer(&peer, 8080));
        h.join().unwrap();
        let h = listen(4190, "app-admin");
        row("peer to pod:4190", from_peer(&peer, 4190));
        h.join().unwrap();
        out
    })
}

#[test]
fn injector_argv_captures_like_linkerds_own_rules() {
    if let Some(why) = support::netns::oracle_unavailable() {
        support::skip(&why);
        return;
    }
    let golden = std::fs::read_to_string(
        support::workspace_root().join("tests/data/linkerd/goldens/injector-default.golden"),
    )
    .unwrap();
    let v4 = nftmesh::iptables::trace::split_trace_text(&golden)
        .into_iter()
        .next()
        .expect("an IPv4 part")
        .1;
    let ours = rows("linkerd-ours", Setup::Linkerd(Box::new(injector())));
    let theirs = rows("linkerd-theirs", Setup::IptablesRestore(v4, None));
    let want = [
        ("app to peer:8080", format!("outgoing {PEER}:8080")),
        // The peer's namespace has no NAT: its listener sees no original destination.
        ("proxy to peer:8080", "peer -".to_string()),
        ("app to peer:4567", "peer -".to_string()),
        (
            "app to 127.0.0.1:9000",
            "app-local 127.0.0.1:9000".to_string(),
        ),
        ("peer to pod:8080", format!("incoming {POD}:8080")),
        ("peer to pod:4190", format!("app-admin {POD}:4190")),
    ];
    for (got, who) in [(&ours, "nftmesh"), (&theirs, "linkerd's rules")] {
        let got: Vec<(&str, &str)> = got.iter().map(|(n, r)| (*n, r.as_str())).collect();
        let want: Vec<(&str, &str)> = want.iter().map(|(n, r)| (*n, r.as_str())).collect();
        assert_eq!(got, want, "{who}");
    }
}

/// What the peer's connections to the pod reach, for each (port, listener) of `rows`: one
/// listener per row, the one the row expects (the proxy's `incoming` on 4143, or `app` on the
/// port itself); a connection that goes elsewhere is refused and shows as an error.
fn inbound_rows(
    tag: &str,
    setup: Setup,
    rows: &'static [(u16, &'static str)],
) -> Vec<(u16, String)> {
    in_pod_with(tag, setup, &[], move |peer| {
        rows.iter()
            .map(|(port, who)| {
                let h = match *who {
                    "incoming" => listen(4143, "incoming"),
                    _ => listen(*port, "app"),
                };
                let r = from_peer(&peer, *port).unwrap_or_else(|e| format!("error: {e}"));
                h.join().unwrap();
                (*port, r)
            })
            .collect()
    })
}

fn golden_v4(case: &str) -> String {
    let golden = std::fs::read_to_string(
        support::workspace_root().join(format!("tests/data/linkerd/goldens/{case}.golden")),
    )
    .unwrap();
    nftmesh::iptables::trace::split_trace_text(&golden)
        .into_iter()
        .next()
        .expect("an IPv4 part")
        .1
}

#[test]
fn listed_ports_and_ignored_subnets_inbound_like_linkerds_own_rules() {
    if let Some(why) = support::netns::oracle_unavailable() {
        support::skip(&why);
        return;
    }
    // Case ports-to-redirect-gid: only 8080 and 9090 go to the proxy; 4190 is ignored.
    let listed = LinkerdConfig {
        proxy_uid: Some(PROXY),
        proxy_gid: Some(2103),
        ports_to_redirect: vec![8080, 9090],
        inbound_ports_to_ignore: vec![PortRange::single(4190)],
        ..LinkerdConfig::default()
    };
    let rows: &'static [(u16, &str)] = &[(8080, "incoming"), (7000, "app"), (4190, "app")];
    let want: Vec<(u16, String)> = rows
        .iter()
        .map(|(p, who)| (*p, format!("{who} {POD}:{p}")))
        .collect();
    let ports = rows;
    let ours = inbound_rows("lk-listed-ours", Setup::Linkerd(Box::new(listed)), ports);
    let theirs = inbound_rows(
        "lk-listed-theirs",
        Setup::IptablesRestore(golden_v4("ports-to-redirect-gid"), None),
        ports,
    );
    assert_eq!(ours, want, "nftmesh");
    assert_eq!(theirs, want, "linkerd's rules");
    // Case subnets-ipv4: the peer's 10.77.0.2 is inside the ignored 10.0.0.0/8.
    let subnets = LinkerdConfig {
        proxy_uid: Some(PROXY),
        inbound_ports_to_ignore: [4190, 4191].map(PortRange::single).to_vec(),
        subnets_to_ignore: vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.168.1.0/24".parse().unwrap(),
        ],
        ..LinkerdConfig::default()
    };
    let want = vec![(8080, format!("app {POD}:8080"))];
    let ours = inbound_rows(
        "lk-subnets-ours",
        Setup::Linkerd(Box::new(subnets)),
        &[(8080, "app")],
    );
    let theirs = inbound_rows(
        "lk-subnets-theirs",
        Setup::IptablesRestore(golden_v4("subnets-ipv4"), None),
        &[(8080, "app")],
    );
    assert_eq!(ours, want, "nftmesh");
    assert_eq!(theirs, want, "linkerd's rules");
}
