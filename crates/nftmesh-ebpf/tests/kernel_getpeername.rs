//! What the app sees of a redirected connection (`cgroup/getpeername4`, `getpeername6`): its
//! `getpeername()` shows the original peer, as after nf_tables' REDIRECT (whose reply rewrite
//! makes the app's socket connected to the original address), for IPv4, IPv6 and a dual-stack
//! socket's IPv4-mapped peer, and still after the proxy has closed its end. Connections come
//! from a child process (this binary again) in a network namespace of its own that joins a
//! cgroup the test creates. Needs root; otherwise `SKIP: why` (failing under `CI=true`).

mod kernel_support;
mod support;

use kernel_support::{app, Landing, Listeners, PEER6, WAIT};
use nftmesh_ebpf::EbpfCapture;
use nftmesh_model::config::CaptureConfig;
use nftmesh_test_support::skip;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use support::child::{APP_GID, APP_PORT, APP_UID, PEER, PROXY_GID, PROXY_UID};
use support::{run_child, TestCgroup, CHILD_ENV};

/// Not a test of its own: the entry point of the child processes; does nothing unless
/// [`CHILD_ENV`] names a phase.
#[test]
fn child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (phase, cgroup) = spec.split_once(':').expect("phase:cgroup");
    match phase {
        "peers" => peers(Path::new(cgroup)),
        _ => support::child::run(&spec),
    }
}

/// Assert what both ends see of a connection redirected from `to`: the app's peer is `to`, the
/// proxy's peer is the app's own address.
fn assert_ends(got: &Landing, to: SocketAddr) {
    assert_eq!(
        got.name, "proxy",
        "a connect to {to} landed on {}",
        got.name
    );
    assert_eq!(
        got.client.peer_addr().ok(),
        Some(to),
        "the app's getpeername() for a connect to {to}"
    );
    // A dual-stack app socket's address is IPv4-mapped; the proxy's (IPv4) sees it plain.
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    assert_eq!(
        got.server.peer_addr().ok().map(canonical),
        got.client.local_addr().ok().map(canonical),
        "the proxy's peer is the app's socket"
    );
}

fn peers(cgroup: &Path) {
    kernel_support::network();
    let mut l = Listeners::default();
    l.add("peer", app(PEER));
    l.add("peer6", app(PEER6));
    kernel_support::join(cgroup);
    l.add_proxies();
    let v4 = l.expect(APP_UID, APP_GID, app(PEER), "proxy");
    assert_ends(&v4, app(PEER));
    let v6 = l.expect(0, 0, app(PEER6), "proxy");
    assert_ends(&v6, app(PEER6));
    let mapped = SocketAddr::new(IpAddr::V6(PEER.to_ipv6_mapped()), APP_PORT);
    let dual = l.connect(0, 0, mapped);
    assert_ends(&dual, mapped);
    // The proxy closes its end: the app's socket still shows its peer (it lives in the
    // socket's storage, not in the maps the proxy's close empties).
    let Landing {
        mut client, server, ..
    } = v4;
    drop(server);
    client.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("EOF from the proxy");
    assert_eq!(
        client.peer_addr().ok(),
        Some(app(PEER)),
        "after the proxy closed"
    );
    // Not redirected: the real peer, as always.
    let direct = l.connect(PROXY_UID, PROXY_GID, app(PEER));
    assert_eq!(direct.name, "peer");
    assert_eq!(direct.client.peer_addr().ok(), Some(app(PEER)));
}

#[test]
fn the_app_sees_its_original_peer() {
    if let Some(why) = support::unavailable() {
        skip(&why);
        return;
    }
    let cgroup = TestCgroup::create("ebpf");
    let cfg = CaptureConfig {
        ipv6: true,
        ..CaptureConfig::sidecar()
    };
    let attached = EbpfCapture::new(&cfg)
        .and_then(|mut c| c.attach(cgroup.path()))
        .unwrap_or_else(|e| panic!("attach: {e}"));
    run_child("peers", cgroup.path());
    attached.remove().expect("remove");
}
