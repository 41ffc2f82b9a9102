//! Real traffic through the applied capture (a first slice of the end-to-end checks): a "pod"
//! network namespace joined by a veth pair to a "peer" namespace, both created and deleted by
//! the test; clients run on threads with their own uid (raw `setresuid`, which changes only
//! the calling thread). Every wait is bounded.

mod support;

use nftmesh::model::compile;
use nftmesh::model::config::CaptureConfig;
use nftmesh::netlink::netns::{run_in_new, Netns};
use nftmesh::netlink::Connection;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

const APP_UID: u32 = 1000;
const PROXY_UID: u32 = 1337;
const PEER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const POD: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const WAIT: Duration = Duration::from_secs(3);

/// A named network namespace, deleted on drop.
struct Named(String);

impl Drop for Named {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn sh(args: &[&str]) {
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

/// Connect from a thread running as `uid`/`gid`; returns what the server answered.
fn connect_as(uid: u32, gid: u32, to: SocketAddr) -> std::io::Result<String> {
    std::thread::spawn(move || {
        // SAFETY: raw setresgid/setresuid change only this thread's credentials (glibc's
        // wrappers would change every thread of the test process).
        unsafe {
            if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
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
fn serve(l: TcpListener, name: &'static str, n: usize) -> std::thread::JoinHandle<()> {
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + 2 * WAIT;
        let mut served = 0;
        while served < n && std::time::Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, _)) => {
                    let orig = original_dst(&s)
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "-".into());
                    let _ = s.set_nonblocking(false);
                    let _ = write!(s, "{name} {orig}");
                    served += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

/// `SO_ORIGINAL_DST` of an accepted IPv4 socket.
fn original_dst(s: &TcpStream) -> Option<SocketAddrV4> {
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: the buffer is a sockaddr_in of the given length; the fd is open.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            &mut sa as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0).then(|| {
        SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
            u16::from_be(sa.sin_port),
        )
    })
}

#[test]
fn redirect_capture_of_real_connections_outbound_inbound_and_bypasses() {
    if let Some(why) = support::netns::oracle_unavailable() {
        eprintln!("SKIP: {why}");
        return;
    }
    let peer = Named(format!("nftmesh-peer-{}", std::process::id()));
    sh(&["ip", "netns", "add", &peer.0]);
    let peer_path = format!("/var/run/netns/{}", peer.0);
    let peer_name = peer.0.clone();
    let peer_path2 = peer_path.clone();
    let (app, proxy, app_in, tunnel_in) = run_in_new(move || {
        // The pod namespace (this thread's) and its link to the peer.
        sh(&["ip", "link", "set", "lo", "up"]);
        sh(&[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p", "netns",
            &peer_name,
        ]);
        sh(&["ip", "addr", "add", &format!("{POD}/24"), "dev", "eth0"]);
        sh(&["ip", "link", "set", "eth0", "up"]);
        // The peer: address and a listener on 8080.
        let peer_listener = Netns::new(&peer_path)
            .run(|| {
                sh(&["ip", "link", "set", "lo", "up"]);
                sh(&["ip", "addr", "add", &format!("{PEER}/24"), "dev", "eth0p"]);
                sh(&["ip", "link", "set", "eth0p", "up"]);
                TcpListener::bind((PEER, 8080)).expect("peer listener")
            })
            .expect("enter peer netns");
        let peer_srv = serve(peer_listener, "peer", 1);
        let outbound = serve(
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, 15001)).unwrap(),
            "outbound",
            1,
        );
        let inbound = serve(
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, 15006)).unwrap(),
            "inbound",
            1,
        );
        let tunnel = serve(
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, 15008)).unwrap(),
            "tunnel",
            1,
        );
        let mut cfg = CaptureConfig::sidecar();
        cfg.ipv6 = false;
        Connection::open()
            .unwrap()
            .apply(&compile(&cfg))
            .expect("apply");
        let target = SocketAddr::from((PEER, 8080));
        let app = connect_as(APP_UID, APP_UID, target);
        let proxy = connect_as(PROXY_UID, PROXY_UID, target);
        // Inbound, from the peer's namespace: to the app port (captured) and to the tunnel
        // port 15008 (never captured).
        let from_peer = |port: u16| {
            Netns::new(&peer_path2)
                .run(move || {
                    connect_as(0, 0, SocketAddr::from((POD, port))).map_err(|e| e.to_string())
                })
                .expect("enter peer netns")
        };
        let app_in = from_peer(8080);
        let tunnel_in = from_peer(15008);
        for h in [outbound, inbound, tunnel, peer_srv] {
            h.join().unwrap();
        }
        (app, proxy, app_in, tunnel_in)
    })
    .expect("pod netns");
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
}
