//! A "pod" network namespace joined by a veth pair to a "peer" namespace, both created and
//! deleted by the test, with clients on threads of their own uid and listeners answering with
//! their name and the connection's original destination; the capture is installed by nftmesh
//! (sidecar or ambient) or by Istio's own iptables rules (the test oracle). Every wait is
//! bounded. Shared by the sidecar and ambient traffic tests.
#![allow(dead_code)]

use nftmesh::model::ambient::AmbientConfig;
use nftmesh::model::config::CaptureConfig;
use nftmesh::netlink::netns::{run_in_new, Netns};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

pub const APP_UID: u32 = 1000;
pub const PROXY_UID: u32 = 1337;
pub const PEER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const POD: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const PEER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
pub const POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
/// An address no namespace has; the peer routes it to the pod.
pub const FOREIGN: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 5);
pub const WAIT: Duration = Duration::from_secs(3);

/// A named network namespace, deleted on drop.
pub struct Named(String);

impl Drop for Named {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

pub fn sh(args: &[&str]) {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run");
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

pub use nftmesh::netlink::probe::{become_user, original_dst};

/// A listener in the peer's namespace answering one connection.
pub fn peer_listen(
    peer: &Netns,
    addr: SocketAddr,
    name: &'static str,
) -> std::thread::JoinHandle<()> {
    let l = peer
        .run(move || TcpListener::bind(addr).expect("peer listener"))
        .expect("enter peer netns");
    serve(l, name, 1)
}

/// A listener on `[::]:port` in our namespace answering one connection.
pub fn listen6(port: u16, name: &'static str) -> std::thread::JoinHandle<()> {
    serve(
        TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).expect("listener"),
        name,
        1,
    )
}

/// Connect from a thread running as `uid`/`gid`; returns what the server answered.
pub fn connect_as(uid: u32, gid: u32, to: SocketAddr) -> std::io::Result<String> {
    std::thread::spawn(move || {
        become_user(uid, gid)?;
        let mut s = TcpStream::connect_timeout(&to, WAIT)?;
        s.set_read_timeout(Some(WAIT))?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply)
    })
    .join()
    .expect("client thread")
}

/// Serve `n` connections on `l`, answering each with `name` and the original destination.
pub fn serve(l: TcpListener, name: &'static str, n: usize) -> std::thread::JoinHandle<()> {
    serve_with(l, n, move |s| {
        let orig = original_dst(s)
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into());
        format!("{name} {orig}")
    })
}

/// Serve `n` connections on `l` (within a bounded time), answering each with `reply` of it.
pub fn serve_with(
    l: TcpListener,
    n: usize,
    reply: impl Fn(&TcpStream) -> String + Send + 'static,
) -> std::thread::JoinHandle<()> {
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + 2 * WAIT;
        let mut served = 0;
        while served < n && std::time::Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, _)) => {
                    let text = reply(&s);
                    let _ = s.set_nonblocking(false);
                    let _ = write!(s, "{text}");
                    served += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

/// Run `body` inside a fresh "pod" namespace joined by veth to a fresh "peer" namespace
/// (`PEER` and `extra_peer_addrs` on the peer side, `POD` on ours), after applying `cfg`.
/// `body` gets the peer's namespace. Both namespaces are gone afterwards.
pub fn in_pod<T: Send + 'static>(
    tag: &str,
    cfg: CaptureConfig,
    extra_peer_addrs: &'static [Ipv4Addr],
    body: impl FnOnce(Netns) -> T + Send + 'static,
) -> T {
    in_pod_with(tag, Setup::Nftmesh(Box::new(cfg)), extra_peer_addrs, body)
}

/// How the capture is installed in the pod.
pub enum Setup {
    /// nftmesh over netlink.
    Nftmesh(Box<CaptureConfig>),
    /// nftmesh's ambient in-pod capture over netlink.
    Ambient(Box<AmbientConfig>),
    /// nftmesh's Linkerd capture over netlink.
    Linkerd(Box<nftmesh::model::linkerd::LinkerdConfig>),
    /// nftmesh's eBPF backend (`nftmesh::ebpf::EbpfBackend`): outbound by BPF programs on the
    /// cgroup of [`crate::ebpf_column::Target`] (which this process must have joined), scoped to
    /// the pod's namespace; inbound by nf_tables. Removed after the body.
    Ebpf(Box<CaptureConfig>, crate::ebpf_column::Target),
    /// A mesh's own rules (test-only oracle): `iptables-restore` of a golden's IPv4 part and
    /// `ip6tables-restore` of its IPv6 part, if any.
    IptablesRestore(String, Option<String>),
}

pub fn in_pod_with<T: Send + 'static>(
    tag: &str,
    setup: Setup,
    extra_peer_addrs: &'static [Ipv4Addr],
    body: impl FnOnce(Netns) -> T + Send + 'static,
) -> T {
    in_pod_before(tag, setup, extra_peer_addrs, |_| (), |peer, ()| body(peer))
}

/// [`in_pod_with`], running `before` in the pod (given the peer's namespace) once the network
/// is up and before the capture is installed; `body` gets what it returned (a connection made
/// before the install, say).
pub fn in_pod_before<B: 'static, T: Send + 'static>(
    tag: &str,
    setup: Setup,
    extra_peer_addrs: &'static [Ipv4Addr],
    before: impl FnOnce(&Netns) -> B + Send + 'static,
    body: impl FnOnce(Netns, B) -> T + Send + 'static,
) -> T {
    let peer = Named(format!("nftmesh-{tag}-{}", std::process::id()));
    sh(&["ip", "netns", "add", &peer.0]);
    let peer_ns = Netns::new(format!("/var/run/netns/{}", peer.0));
    let peer_name = peer.0.clone();
    run_in_new(move || {
        sh(&["ip", "link", "set", "lo", "up"]);
        sh(&[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p", "netns",
            &peer_name,
        ]);
        sh(&["ip", "addr", "add", &format!("{POD}/24"), "dev", "eth0"]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{POD6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        sh(&["ip", "link", "set", "eth0", "up"]);
        peer_ns
            .run(move || {
                sh(&["ip", "link", "set", "lo", "up"]);
                for a in std::iter::once(&PEER).chain(extra_peer_addrs) {
                    sh(&["ip", "addr", "add", &format!("{a}/24"), "dev", "eth0p"]);
                }
                sh(&[
                    "ip",
                    "addr",
                    "add",
                    &format!("{PEER6}/64"),
                    "dev",
                    "eth0p",
                    "nodad",
                ]);
                sh(&["ip", "link", "set", "eth0p", "up"]);
            })
            .expect("enter peer netns");
        let early = before(&peer_ns);
        let mut ebpf = None;
        match setup {
            Setup::Ebpf(cfg, target) => {
                let bpffs = nftmesh::ebpf::Bpffs::at(&target.bpffs).expect("the test's bpffs");
                let backend = nftmesh::ebpf::EbpfBackend::new(target.cgroup, bpffs)
                    .with_inbound(target.inbound);
                let ns = nftmesh::Namespace::current().expect("the pod's namespace");
                backend
                    .install(&ns, &cfg)
                    .expect("install the eBPF backend");
                ebpf = Some((backend, ns, cfg));
            }
            Setup::Nftmesh(cfg) => {
                // Through the capture API: TPROXY routing and ::6 first, then the tables.
                let capture = nftmesh::Capture::new(&cfg).expect("valid config");
                nftmesh::Namespace::current()
                    .and_then(|ns| ns.install(&capture))
                    .expect("install");
            }
            Setup::Ambient(cfg) => {
                let capture = nftmesh::Capture::ambient(&cfg).expect("valid config");
                nftmesh::Namespace::current()
                    .and_then(|ns| ns.install(&capture))
                    .expect("install");
            }
            Setup::Linkerd(cfg) => {
                let capture = nftmesh::Capture::linkerd(&cfg).expect("valid config");
                nftmesh::Namespace::current()
                    .and_then(|ns| ns.install(&capture))
                    .expect("install");
            }
            Setup::IptablesRestore(v4, v6) => {
                crate::run_here("iptables-restore", &[], &v4);
                if let Some(v6) = v6 {
                    crate::run_here("ip6tables-restore", &[], &v6);
                }
            }
        }
        let out = body(peer_ns, early);
        if let Some((backend, ns, cfg)) = ebpf {
            let removed = backend.remove(&ns, &cfg).expect("remove the eBPF backend");
            assert!(removed.programs, "the programs were attached until now");
        }
        out
    })
    .expect("pod netns")
}

pub const DNS_SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);

pub fn listen(port: u16, name: &'static str) -> std::thread::JoinHandle<()> {
    serve(
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).expect("listener"),
        name,
        1,
    )
}

/// A connection from the peer's namespace to `[POD6]:port`.
pub fn from_peer6(peer: &Netns, port: u16) -> std::io::Result<String> {
    peer.run(move || connect_as(0, 0, SocketAddr::from((POD6, port))))
        .expect("enter peer netns")
}

/// A connection from the peer's namespace to `POD:port`.
pub fn from_peer(peer: &Netns, port: u16) -> std::io::Result<String> {
    peer.run(move || connect_as(0, 0, SocketAddr::from((POD, port))))
        .expect("enter peer netns")
}

/// Send one UDP datagram as `uid` to `to`.
pub fn udp_as(uid: u32, to: SocketAddr) {
    std::thread::spawn(move || {
        become_user(uid, uid).expect("switch uid");
        let any: std::net::IpAddr = if to.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let s = std::net::UdpSocket::bind((any, 0)).unwrap();
        s.send_to(b"query", to).unwrap();
    })
    .join()
    .expect("udp client");
}

/// Whether `s` receives the 5-byte query within 500 ms.
pub fn udp_received(s: &std::net::UdpSocket) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 16];
    matches!(s.recv_from(&mut buf), Ok((5, _)))
}

/// Connect as `uid` from `src` (port chosen by the kernel) to `to`; what the server answered.
pub fn connect_from_as(uid: u32, src: std::net::IpAddr, to: SocketAddr) -> std::io::Result<String> {
    connect_with(uid, Some(src), None, to)
}

/// Connect from a thread running as `uid`, from `src` if given, on a socket carrying `mark`
/// (SO_MARK) if given; what the server answered.
pub fn connect_with(
    uid: u32,
    src: Option<std::net::IpAddr>,
    mark: Option<u32>,
    to: SocketAddr,
) -> std::io::Result<String> {
    use nix::sys::socket::{
        bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType,
        SockaddrStorage,
    };
    std::thread::spawn(move || {
        become_user(uid, uid)?;
        let family = if to.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let fd = socket(family, SockType::Stream, SockFlag::empty(), None)?;
        if let Some(m) = mark {
            setsockopt(&fd, sockopt::Mark, &m)?;
        }
        if let Some(src) = src {
            bind(
                fd.as_raw_fd(),
                &SockaddrStorage::from(SocketAddr::new(src, 0)),
            )?;
        }
        connect(fd.as_raw_fd(), &SockaddrStorage::from(to))?;
        let mut s = TcpStream::from(fd);
        s.set_read_timeout(Some(WAIT))?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply)
    })
    .join()
    .expect("client thread")
}

/// Side by side with real traffic: each row's packet, explained against the same ruleset (the
/// evaluator's trail, as `nftmesh explain` runs it), lands on the port whose listener the row's
/// traffic reached. `listeners` names the capture listeners and their ports; any other
/// observation (the app, the peer, `not captured`) is the packet's own destination port.
pub fn explain_rows(
    name: &str,
    rs: &nftmesh::model::Ruleset,
    observed: &[(&str, String)],
    packets: &[(nftmesh::model::Hook, nftmesh::model::Packet)],
    listeners: &[(&str, u16)],
) {
    assert_eq!(observed.len(), packets.len(), "{name}: one packet per row");
    for ((row, seen), (hook, p)) in observed.iter().zip(packets) {
        let t = nftmesh::model::eval_traced(rs, p, *hook).unwrap();
        let predicted = t
            .outcome
            .redirect
            .or(t.outcome.tproxy.and_then(|x| x.port))
            .unwrap_or(p.dport);
        let listener = seen.split(' ').next().unwrap_or("");
        assert!(
            !seen.starts_with("error"),
            "{name}: {row}: the row failed: {seen}"
        );
        let reached = listeners
            .iter()
            .find(|(n, _)| *n == listener)
            .map(|(_, port)| *port)
            .unwrap_or(p.dport);
        assert_eq!(
            predicted, reached,
            "{name}: {row}: explained {:?}, observed {seen}",
            t.trail
        );
    }
}

/// A listener on `0.0.0.0:port` answering one connection once the client has finished sending
/// (read to EOF, within [`WAIT`]): `name`, the original destination and `got N` bytes.
pub fn listen_to_eof(port: u16, name: &'static str) -> std::thread::JoinHandle<()> {
    listen_to_eof_at(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), name)
}

/// [`listen_to_eof`] at `addr` (`[::]:port` for IPv6).
pub fn listen_to_eof_at(addr: SocketAddr, name: &'static str) -> std::thread::JoinHandle<()> {
    let l = TcpListener::bind(addr).expect("listener");
    serve_with(l, 1, move |s| {
        let orig = original_dst(s)
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into());
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(WAIT));
        let mut got = Vec::new();
        let n = match (&mut &*s).read_to_end(&mut got) {
            Ok(n) => n.to_string(),
            Err(e) => format!("error {e}"),
        };
        format!("{name} {orig} got {n}")
    })
}

/// As `uid`, connect to `to`, send `hello`, half-close (`shutdown(SHUT_WR)`) and read the reply
/// to EOF.
pub fn half_close_as(uid: u32, to: SocketAddr) -> std::io::Result<String> {
    std::thread::spawn(move || {
        become_user(uid, uid)?;
        let mut s = TcpStream::connect_timeout(&to, WAIT)?;
        s.set_read_timeout(Some(WAIT))?;
        s.write_all(b"hello")?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply)
    })
    .join()
    .expect("client thread")
}

/// As `uid`, connect to `to` and report the socket's peer (`getpeername`) and the reply.
pub fn peer_seen_as(uid: u32, to: SocketAddr) -> std::io::Result<String> {
    std::thread::spawn(move || {
        become_user(uid, uid)?;
        let mut s = TcpStream::connect_timeout(&to, WAIT)?;
        s.set_read_timeout(Some(WAIT))?;
        let peer = s.peer_addr()?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(format!("{peer} ({reply})"))
    })
    .join()
    .expect("client thread")
}

/// A listener in the peer's namespace answering one connection once it has received 5 bytes
/// (its name and the original destination); the connection may have been made long before.
pub fn peer_listen_on_request(
    peer: &Netns,
    addr: SocketAddr,
    name: &'static str,
) -> std::thread::JoinHandle<()> {
    let l = peer
        .run(move || TcpListener::bind(addr).expect("peer listener"))
        .expect("enter peer netns");
    serve_with(l, 1, move |s| {
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(2 * WAIT));
        let mut req = [0u8; 5];
        match (&mut &*s).read_exact(&mut req) {
            Ok(()) => format!("{name} after request"),
            Err(e) => format!("{name} error {e}"),
        }
    })
}

/// A connection as root to `to`, made now (before a capture is installed, say); send on it
/// later with [`request_on`].
pub fn open(to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&to, WAIT)?;
    s.set_read_timeout(Some(2 * WAIT))?;
    Ok(s)
}

/// Send a 5-byte request on `s` and read the reply to EOF.
pub fn request_on(s: std::io::Result<TcpStream>) -> std::io::Result<String> {
    let mut s = s?;
    s.write_all(b"again")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply)
}

/// A listener on `0.0.0.0:port` (`[::]:port` with `v6`) bound by a thread running as the
/// proxy ([`PROXY_UID`]), as Envoy's are, answering one connection: `sk_lookup` inbound
/// steering registers only listeners of the proxy's uid.
pub fn listen_as_proxy(port: u16, name: &'static str, v6: bool) -> std::thread::JoinHandle<()> {
    let l = std::thread::spawn(move || {
        become_user(PROXY_UID, PROXY_UID).expect("switch to the proxy's uid");
        if v6 {
            TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))
        } else {
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
        }
        .expect("listener")
    })
    .join()
    .expect("listener thread");
    serve(l, name, 1)
}
