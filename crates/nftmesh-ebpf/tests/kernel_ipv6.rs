//! The capture of IPv6 connects (`cgroup/connect6`) and of dual-stack sockets reaching IPv4
//! peers (IPv4-mapped destinations), with real connections: a child process (this binary
//! again) in a network namespace of its own, with IPv6 peers on its `lo` (`nodad`), joins a
//! cgroup the test creates. Needs root; otherwise `SKIP: why` (failing under `CI=true`).

mod kernel_support;
mod support;

use ipnet::IpNet;
use kernel_support::{app, Listeners, EXCLUDED_PEER6, PEER6};
use nftmesh_ebpf::{EbpfCapture, Tracked};
use nftmesh_model::config::CaptureConfig;
use nftmesh_test_support::skip;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};
use support::child::{
    APP_GID, APP_PORT, APP_UID, EXCLUDED_PORT, PEER, PROXY_GID, PROXY_PORT, PROXY_UID,
};
use support::{run_child, TestCgroup, CHILD_ENV};

/// Not a test of its own: the entry point of the child processes; does nothing unless
/// [`CHILD_ENV`] names a phase.
#[test]
fn child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (phase, cgroup) = spec.split_once(':').expect("phase:cgroup");
    let cgroup = Path::new(cgroup);
    match phase {
        "ipv6" => ipv6_phase(cgroup, true),
        "ipv6-off" => ipv6_phase(cgroup, false),
        _ => support::child::run(&spec),
    }
}

/// `::ffff:<ip>`: where a dual-stack socket connects to reach the IPv4 `ip`.
fn mapped(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), APP_PORT)
}

/// With IPv6 capture on (`ipv6`): IPv6 connects follow the chain's IPv6 rules and land on
/// `[::1]:15001` with `IP6T_SO_ORIGINAL_DST` right. Off: they are untouched. Either way a
/// dual-stack socket's connect to an IPv4-mapped peer is captured as IPv4 (on
/// `127.0.0.1:15001`, `SO_ORIGINAL_DST` the IPv4 peer), as nf_tables sees IPv4 packets.
fn ipv6_phase(cgroup: &Path, ipv6: bool) {
    kernel_support::network();
    let mut l = Listeners::default();
    l.add("peer", app(PEER));
    l.add("peer6", app(PEER6));
    l.add(
        "peer6 excluded port",
        SocketAddr::new(PEER6.into(), EXCLUDED_PORT),
    );
    l.add("excluded peer6", app(EXCLUDED_PEER6));
    l.add("loopback6", app(Ipv6Addr::LOCALHOST));
    // Not in the cgroup yet: untouched.
    l.expect(0, 0, app(PEER6), "peer6");
    kernel_support::join(cgroup);
    l.add_proxies();
    if ipv6 {
        l.expect(0, 0, app(PEER6), "proxy");
        l.expect(APP_UID, APP_GID, app(PEER6), "proxy");
        l.expect(PROXY_UID, APP_GID, app(PEER6), "peer6");
        l.expect(APP_UID, PROXY_GID, app(PEER6), "peer6");
        l.expect(
            0,
            0,
            SocketAddr::new(PEER6.into(), EXCLUDED_PORT),
            "peer6 excluded port",
        );
        l.expect(0, 0, app(EXCLUDED_PEER6), "excluded peer6");
        l.expect(0, 0, app(Ipv6Addr::LOCALHOST), "loopback6");
        // The proxy's socket is an IPv6 one on [::1].
        let got = l.connect(0, 0, app(PEER6));
        let proxy_end = got.server.local_addr().expect("local address");
        assert_eq!(
            proxy_end,
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), PROXY_PORT)
        );
    } else {
        l.expect(0, 0, app(PEER6), "peer6");
        l.expect(APP_UID, APP_GID, app(PEER6), "peer6");
    }
    // A dual-stack socket reaching 10.77.0.2 over IPv4.
    let got = l.connect(APP_UID, APP_GID, mapped(PEER));
    assert_eq!(
        got.name,
        "proxy",
        "a connect to {} landed on {}",
        mapped(PEER),
        got.name
    );
    assert_eq!(
        got.server.local_addr().ok(),
        Some(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), PROXY_PORT))
    );
    assert_eq!(
        got.original,
        Some(app(PEER)),
        "SO_ORIGINAL_DST of a mapped connect"
    );
    let got = l.connect(PROXY_UID, PROXY_GID, mapped(PEER));
    assert_eq!(got.name, "peer", "the proxy's own mapped connect");
}

fn ready() -> Option<()> {
    match support::unavailable() {
        Some(why) => {
            skip(&why);
            None
        }
        None => Some(()),
    }
}

/// Wait (bounded) until the capture tracks no connection.
fn assert_forgets(capture: &EbpfCapture) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let t = capture.tracked().expect("read the maps");
        if t == Tracked::default() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "entries left after every socket closed: {t:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ipv6_connects_are_captured_with_the_chains_ipv6_rules() {
    let Some(()) = ready() else { return };
    let cgroup = TestCgroup::create("ebpf");
    let cfg = CaptureConfig {
        ipv6: true,
        outbound_ports_exclude: vec![EXCLUDED_PORT],
        outbound_cidrs_exclude: vec![IpNet::new(EXCLUDED_PEER6.into(), 128).expect("prefix")],
        ..CaptureConfig::sidecar()
    };
    let mut capture = EbpfCapture::new(&cfg).unwrap_or_else(|e| panic!("load: {e}"));
    let attached = capture
        .attach(cgroup.path())
        .unwrap_or_else(|e| panic!("attach: {e}"));
    run_child("ipv6", cgroup.path());
    assert_forgets(&capture);
    attached.remove().expect("remove");
    run_child("removed", cgroup.path());
}

#[test]
fn without_ipv6_only_ipv4_mapped_connects_are_captured() {
    let Some(()) = ready() else { return };
    let cgroup = TestCgroup::create("ebpf");
    let mut capture =
        EbpfCapture::new(&CaptureConfig::sidecar()).unwrap_or_else(|e| panic!("load: {e}"));
    let attached = capture
        .attach(cgroup.path())
        .unwrap_or_else(|e| panic!("attach: {e}"));
    run_child("ipv6-off", cgroup.path());
    assert_forgets(&capture);
    attached.remove().expect("remove");
}
