//! DNS capture (issue 27 item 3) with real queries: with `CaptureConfig::dns` in effect, UDP to
//! port 53 of a DNS server (`cgroup/sendmsg4` for `sendto`, `connect4` for a UDP socket's
//! `connect`) reaches the DNS agent's port on 127.0.0.1:15053 and its reply shows the server as
//! its source (`cgroup/recvmsg4`); TCP to port 53 lands on 15053 with `SO_ORIGINAL_DST` the
//! server; the proxy's own queries reach the server itself; with DNS capture off nothing goes
//! to 15053. The same over IPv6 (`sendmsg6`/`recvmsg6`, to `[::1]:15053`, with IPv6 capture
//! on) and for a dual-stack socket's `::ffff:a.b.c.d` (as IPv4, to `::ffff:127.0.0.1:15053`). As nf_tables' `istio-output-dns` does. Queries come from a child process (this
//! binary again) in a network namespace of its own that joins a cgroup the test creates.
//! Needs root; otherwise `SKIP: why` (failing under `CI=true`).

mod kernel_support;
mod support;

use kernel_support::{Listeners, EXCLUDED_PEER6, PEER6, WAIT};
use nftmesh_ebpf::{Attachment, EbpfCapture};
use nftmesh_model::config::{CaptureConfig, DnsCapture, DNS_CAPTURE_PORT};
use nftmesh_netlink::probe::become_user;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use support::child::{APP_GID, APP_UID, OTHER_PEER, PEER, PROXY_GID, PROXY_UID};
use support::{run_child, TestCgroup, CHILD_ENV};

/// The DNS server of the configurations (on the child namespace's `lo`).
const SERVER: Ipv4Addr = PEER;
/// An address that is not a configured DNS server (also on `lo`).
const NOT_SERVER: Ipv4Addr = OTHER_PEER;

/// The IPv6 DNS server of the IPv6 phase; `EXCLUDED_PEER6` is not one.
const SERVER6: Ipv6Addr = PEER6;

fn dns53(ip: impl Into<IpAddr>) -> SocketAddr {
    SocketAddr::new(ip.into(), 53)
}

/// Port 53 of `ip` as a dual-stack socket reaches it: `::ffff:a.b.c.d`.
fn mapped53(ip: Ipv4Addr) -> SocketAddr {
    dns53(ip.to_ipv6_mapped())
}

fn agent() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DNS_CAPTURE_PORT)
}

fn agent6() -> SocketAddr {
    SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), DNS_CAPTURE_PORT)
}

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
        "servers" => servers(cgroup),
        "capture_all" => capture_all(cgroup),
        "off" => off(cgroup),
        "ipv6" => ipv6(cgroup),
        _ => support::child::run(&spec),
    }
}

/// Named UDP sockets standing in for the DNS servers and the DNS agent.
#[derive(Default)]
struct UdpListeners(Vec<(&'static str, UdpSocket)>);

/// Where a query landed and what the client saw of the reply.
#[derive(Debug)]
struct Exchange {
    /// The listener that received the query.
    landed: &'static str,
    /// The source of the reply, as the client's `recvfrom` shows it.
    reply_from: SocketAddr,
    /// The client's `getpeername()`, for a connected socket.
    peer: Option<SocketAddr>,
}

impl UdpListeners {
    fn add(&mut self, name: &'static str, at: SocketAddr) {
        let s = UdpSocket::bind(at).unwrap_or_else(|e| panic!("bind {name} {at}: {e}"));
        s.set_nonblocking(true).expect("non-blocking");
        self.0.push((name, s));
    }

    /// Send a query to `to` from a thread running as `uid`/`gid` (with `connected`, on a socket
    /// connected to `to`; an IPv6 `to` from a dual-stack `[::]` socket); the listener that
    /// receives it answers. Panics unless exactly one
    /// received it and the client got the answer within [`WAIT`].
    fn query(&self, uid: u32, gid: u32, to: SocketAddr, connected: bool) -> Exchange {
        let client = std::thread::spawn(move || -> std::io::Result<(SocketAddr, Option<_>)> {
            become_user(uid, gid)?;
            let any = match to {
                SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            let s = UdpSocket::bind((any, 0))?;
            s.set_read_timeout(Some(WAIT))?;
            if connected {
                s.connect(to)?;
                s.send(b"query")?;
            } else {
                s.send_to(b"query", to)?;
            }
            let mut buf = [0u8; 64];
            let (n, from) = s.recv_from(&mut buf)?;
            assert_eq!(&buf[..n], b"answer", "the reply's bytes");
            Ok((from, connected.then(|| s.peer_addr()).transpose()?))
        });
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 64];
        let landed = 'found: loop {
            for (name, s) in &self.0 {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    assert_eq!(&buf[..n], b"query", "the query's bytes at {name}");
                    s.send_to(b"answer", from).expect("answer");
                    break 'found *name;
                }
            }
            assert!(
                Instant::now() < deadline,
                "query to {to} as {uid}/{gid}: no listener received it within {WAIT:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        let (reply_from, peer) = client
            .join()
            .expect("the client thread")
            .unwrap_or_else(|e| panic!("query to {to} as {uid}/{gid}: {e}"));
        for (other, s) in &self.0 {
            assert!(
                s.recv_from(&mut buf).is_err(),
                "query to {to}: {other} received it too"
            );
        }
        Exchange {
            landed,
            reply_from,
            peer,
        }
    }
}

/// The child's network (the peers on `lo`, `NOT_SERVER` too) and its listeners: UDP and TCP on
/// port 53 of every peer, the DNS agent on 127.0.0.1:15053 and [::1]:15053 (UDP and TCP) and
/// the proxies, these after joining `cgroup`.
fn setup(cgroup: &Path) -> (UdpListeners, Listeners) {
    kernel_support::network();
    let o = Command::new("ip")
        .args(["addr", "add", &format!("{NOT_SERVER}/32"), "dev", "lo"])
        .output()
        .expect("run ip");
    assert!(o.status.success(), "ip addr add {NOT_SERVER}: {o:?}");
    let mut udp = UdpListeners::default();
    udp.add("server", dns53(SERVER));
    udp.add("not-server", dns53(NOT_SERVER));
    let mut tcp = Listeners::default();
    tcp.add("server", dns53(SERVER));
    tcp.add("not-server", dns53(NOT_SERVER));
    for (name, at) in [("server6", SERVER6), ("not-server6", EXCLUDED_PEER6)] {
        udp.add(name, dns53(at));
        tcp.add(name, dns53(at));
    }
    kernel_support::join(cgroup);
    udp.add("agent", agent());
    tcp.add("agent", agent());
    udp.add("agent6", agent6());
    tcp.add("agent6", agent6());
    tcp.add_proxies();
    (udp, tcp)
}

/// DNS capture to the configured server `SERVER`.
fn servers(cgroup: &Path) {
    let (udp, tcp) = setup(cgroup);
    // sendto(SERVER:53) from an app: to the agent, the reply from SERVER:53.
    let q = udp.query(APP_UID, APP_GID, dns53(SERVER), false);
    assert_eq!(q.landed, "agent", "an app's query to {SERVER}:53: {q:?}");
    assert_eq!(q.reply_from, dns53(SERVER), "the reply's source: {q:?}");
    // connect(SERVER:53) + send: the same, and getpeername() shows the server.
    let q = udp.query(0, 0, dns53(SERVER), true);
    assert_eq!(q.landed, "agent", "a connected query to {SERVER}:53: {q:?}");
    assert_eq!(q.reply_from, dns53(SERVER), "the reply's source: {q:?}");
    assert_eq!(q.peer, Some(dns53(SERVER)), "getpeername(): {q:?}");
    // The proxy's own queries (by uid, by gid) reach the server itself.
    for (uid, gid) in [(PROXY_UID, APP_GID), (APP_UID, PROXY_GID)] {
        for connected in [false, true] {
            let q = udp.query(uid, gid, dns53(SERVER), connected);
            assert_eq!(q.landed, "server", "{uid}/{gid}'s query: {q:?}");
            assert_eq!(q.reply_from, dns53(SERVER), "{q:?}");
        }
    }
    // A dual-stack socket's query to ::ffff:SERVER:53 is IPv4 DNS (IPv6 capture off here).
    for connected in [false, true] {
        let q = udp.query(APP_UID, APP_GID, mapped53(SERVER), connected);
        assert_eq!(q.landed, "agent", "a dual-stack query: {q:?}");
        assert_eq!(q.reply_from, mapped53(SERVER), "{q:?}");
    }
    // IPv6 capture off: native IPv6 DNS is left alone.
    let q = udp.query(APP_UID, APP_GID, dns53(SERVER6), false);
    assert_eq!(q.landed, "server6", "{q:?}");
    // Port 53 of an address that is not a DNS server is not DNS capture's.
    let q = udp.query(APP_UID, APP_GID, dns53(NOT_SERVER), false);
    assert_eq!(q.landed, "not-server", "{q:?}");
    assert_eq!(q.reply_from, dns53(NOT_SERVER), "{q:?}");
    // TCP to SERVER:53 lands on the agent with SO_ORIGINAL_DST the server.
    let got = tcp.connect(APP_UID, APP_GID, dns53(SERVER));
    assert_eq!(got.name, "agent", "TCP to {SERVER}:53");
    assert_eq!(got.original, Some(dns53(SERVER)), "SO_ORIGINAL_DST");
    assert_eq!(got.client.peer_addr().ok(), Some(dns53(SERVER)));
    // The proxy's TCP to the server goes through; TCP to another port 53 is outbound traffic.
    let got = tcp.connect(PROXY_UID, PROXY_GID, dns53(SERVER));
    assert_eq!(got.name, "server", "the proxy's TCP to {SERVER}:53");
    let got = tcp.connect(APP_UID, APP_GID, dns53(NOT_SERVER));
    assert_eq!(got.name, "proxy", "TCP to {NOT_SERVER}:53");
    assert_eq!(got.original, Some(dns53(NOT_SERVER)));
}

/// DNS capture of every address's port 53.
fn capture_all(cgroup: &Path) {
    let (udp, tcp) = setup(cgroup);
    for to in [SERVER, NOT_SERVER] {
        let q = udp.query(APP_UID, APP_GID, dns53(to), false);
        assert_eq!(q.landed, "agent", "an app's query to {to}:53: {q:?}");
        assert_eq!(q.reply_from, dns53(to), "{q:?}");
        let got = tcp.connect(APP_UID, APP_GID, dns53(to));
        assert_eq!(got.name, "agent", "TCP to {to}:53");
        assert_eq!(got.original, Some(dns53(to)), "SO_ORIGINAL_DST");
    }
    let q = udp.query(PROXY_UID, PROXY_GID, dns53(NOT_SERVER), false);
    assert_eq!(q.landed, "not-server", "the proxy's query: {q:?}");
}

/// DNS capture off: UDP goes where it is sent, TCP to port 53 is outbound traffic like any.
fn off(cgroup: &Path) {
    let (udp, tcp) = setup(cgroup);
    for connected in [false, true] {
        let q = udp.query(APP_UID, APP_GID, dns53(SERVER), connected);
        assert_eq!(q.landed, "server", "{q:?}");
        assert_eq!(q.reply_from, dns53(SERVER), "{q:?}");
    }
    let got = tcp.connect(APP_UID, APP_GID, dns53(SERVER));
    assert_eq!(got.name, "proxy", "TCP to {SERVER}:53 with DNS capture off");
    assert_eq!(got.original, Some(dns53(SERVER)));
}

/// DNS capture with IPv6 on, to `SERVER` and `SERVER6`.
fn ipv6(cgroup: &Path) {
    let (udp, tcp) = setup(cgroup);
    for connected in [false, true] {
        let q = udp.query(APP_UID, APP_GID, dns53(SERVER6), connected);
        assert_eq!(
            q.landed, "agent6",
            "an app's query to [{SERVER6}]:53: {q:?}"
        );
        assert_eq!(q.reply_from, dns53(SERVER6), "the reply's source: {q:?}");
        assert_eq!(q.peer, connected.then(|| dns53(SERVER6)), "{q:?}");
        let q = udp.query(APP_UID, APP_GID, mapped53(SERVER), connected);
        assert_eq!(q.landed, "agent", "a dual-stack query: {q:?}");
        assert_eq!(q.reply_from, mapped53(SERVER), "{q:?}");
        let q = udp.query(PROXY_UID, PROXY_GID, dns53(SERVER6), connected);
        assert_eq!(q.landed, "server6", "the proxy's query: {q:?}");
        assert_eq!(q.reply_from, dns53(SERVER6), "{q:?}");
    }
    let q = udp.query(APP_UID, APP_GID, dns53(EXCLUDED_PEER6), false);
    assert_eq!(q.landed, "not-server6", "{q:?}");
    let q = udp.query(APP_UID, APP_GID, dns53(SERVER), false);
    assert_eq!(q.landed, "agent", "IPv4 as before: {q:?}");
    assert_eq!(q.reply_from, dns53(SERVER), "{q:?}");
    let got = tcp.connect(APP_UID, APP_GID, dns53(SERVER6));
    assert_eq!(got.name, "agent6", "TCP to [{SERVER6}]:53");
    assert_eq!(got.original, Some(dns53(SERVER6)), "IP6T_SO_ORIGINAL_DST");
    let got = tcp.connect(PROXY_UID, PROXY_GID, dns53(SERVER6));
    assert_eq!(got.name, "server6", "the proxy's TCP to [{SERVER6}]:53");
}

fn dns(capture_all: bool, servers: &[IpAddr]) -> CaptureConfig {
    CaptureConfig {
        dns: DnsCapture {
            enabled: true,
            capture_all,
            servers: servers.to_vec(),
        },
        ipv6: servers.iter().any(IpAddr::is_ipv6),
        ..CaptureConfig::sidecar()
    }
}

#[test]
fn dns_to_the_servers_reaches_the_agent_and_answers_from_the_server() {
    let Some(bpffs) = kernel_support::ready() else {
        return;
    };
    let cgroup = TestCgroup::create("ebpf");
    let attached = EbpfCapture::new(&dns(false, &[SERVER.into()]))
        .and_then(|mut c| c.install(bpffs.bpffs(), cgroup.path()))
        .unwrap_or_else(|e| panic!("install: {e}"));
    let programs = attached.programs();
    for p in [
        "nftmesh_sendmsg4",
        "nftmesh_recvmsg4",
        "nftmesh_sendmsg6",
        "nftmesh_recvmsg6",
    ] {
        assert!(programs.contains(&p), "{p} linked: {programs:?}");
    }
    run_child("servers", cgroup.path());
    attached.remove().expect("remove");
    assert_eq!(bpffs.contents(), Vec::<std::path::PathBuf>::new());
    assert!(Attachment::open(bpffs.bpffs(), cgroup.path())
        .expect("open")
        .is_none());
}

#[test]
fn ipv6_and_dual_stack_dns_reach_the_agent() {
    let Some(_bpffs) = kernel_support::ready() else {
        return;
    };
    let cgroup = TestCgroup::create("ebpf");
    let attached = EbpfCapture::new(&dns(false, &[SERVER.into(), SERVER6.into()]))
        .and_then(|mut c| c.attach(cgroup.path()))
        .unwrap_or_else(|e| panic!("attach: {e}"));
    run_child("ipv6", cgroup.path());
    attached.remove().expect("remove");
}

#[test]
fn capture_all_dns_takes_every_port_53() {
    let Some(_bpffs) = kernel_support::ready() else {
        return;
    };
    let cgroup = TestCgroup::create("ebpf");
    let attached = EbpfCapture::new(&dns(true, &[]))
        .and_then(|mut c| c.attach(cgroup.path()))
        .unwrap_or_else(|e| panic!("attach: {e}"));
    run_child("capture_all", cgroup.path());
    attached.remove().expect("remove");
}

#[test]
fn with_dns_capture_off_nothing_goes_to_the_agent() {
    let Some(bpffs) = kernel_support::ready() else {
        return;
    };
    let cgroup = TestCgroup::create("ebpf");
    let attached = EbpfCapture::new(&CaptureConfig::sidecar())
        .and_then(|mut c| c.install(bpffs.bpffs(), cgroup.path()))
        .unwrap_or_else(|e| panic!("install: {e}"));
    let programs = attached.programs();
    assert!(
        !programs.contains(&"nftmesh_sendmsg4"),
        "no DNS program linked without DNS capture: {programs:?}"
    );
    run_child("off", cgroup.path());
    attached.remove().expect("remove");
}
