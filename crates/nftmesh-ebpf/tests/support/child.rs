//! The child's side: in its own network namespace (made by `unshare --net`), with the peers'
//! addresses on `lo` and a listener for every destination, it connects and asserts which
//! listener each connection lands on and what `SO_ORIGINAL_DST` says there.
//!
//! The peers are addresses of the child's own namespace (10.77.0.x on `lo`): the BPF programs
//! decide at connect() from the destination alone, so for them a local 10.77.0.2 is as remote
//! as any (nf_tables would see it leave over `lo`; see the crate README on that difference).

use nftmesh_netlink::probe::{connect_as, original_dst};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a connect or an accept may take.
const WAIT: Duration = Duration::from_secs(3);

pub const PROXY_PORT: u16 = 15001;
pub const APP_PORT: u16 = 8080;
/// In `outbound_ports_exclude` of the "captured" phase.
pub const EXCLUDED_PORT: u16 = 9000;
/// In `outbound_ports_include` of the "include" phase.
pub const INCLUDED_PORT: u16 = 7000;
pub const PEER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// In `outbound_cidrs_exclude` of the "captured" phase.
pub const EXCLUDED_PEER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
/// Not in `outbound_cidrs_include` of the "include" phase.
pub const OTHER_PEER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 4);
pub const PROXY_UID: u32 = 1337;
pub const PROXY_GID: u32 = 1337;
pub const APP_UID: u32 = 1000;
pub const APP_GID: u32 = 1000;
/// In `owner_groups` (excluded) of the "include" phase.
pub const EXCLUDED_GID: u32 = 2000;

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

fn sh(args: &[&str]) {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Named non-blocking listeners.
struct Listeners(Vec<(&'static str, TcpListener)>);

/// Where a connection landed: the listener's name, `SO_ORIGINAL_DST` of the accepted socket,
/// and both ends.
struct Landing {
    name: &'static str,
    original: Option<SocketAddr>,
    client: TcpStream,
    server: TcpStream,
}

impl Listeners {
    fn add(&mut self, name: &'static str, at: SocketAddr) {
        let l = TcpListener::bind(at).unwrap_or_else(|e| panic!("bind {name} {at}: {e}"));
        l.set_nonblocking(true).expect("non-blocking listener");
        self.0.push((name, l));
    }

    /// Connect to `to` from a thread running as `uid`/`gid`; where it landed. Panics unless
    /// exactly one listener accepted within [`WAIT`].
    fn connect(&self, uid: u32, gid: u32, to: SocketAddr) -> Landing {
        let client = connect_as(uid, gid, to, WAIT)
            .unwrap_or_else(|e| panic!("connect to {to} as {uid}/{gid}: {e}"));
        let deadline = Instant::now() + WAIT;
        let (name, server) = 'found: loop {
            for (name, l) in &self.0 {
                if let Ok((s, _)) = l.accept() {
                    break 'found (*name, s);
                }
            }
            assert!(
                Instant::now() < deadline,
                "connect to {to} as {uid}/{gid}: no listener accepted within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        for (other, l) in &self.0 {
            assert!(
                l.accept().is_err(),
                "connect to {to}: {other} accepted a connection too"
            );
        }
        server.set_nonblocking(false).expect("blocking stream");
        Landing {
            name,
            original: original_dst(&server),
            client,
            server,
        }
    }

    /// Assert that a connect to `to` as `uid`/`gid` lands on `expect`; for the proxy, that
    /// `SO_ORIGINAL_DST` is `to` and that bytes go through.
    fn expect(&self, uid: u32, gid: u32, to: SocketAddr, expect: &str) {
        let mut got = self.connect(uid, gid, to);
        assert_eq!(
            got.name, expect,
            "connect to {to} as uid {uid} gid {gid} landed on {}",
            got.name
        );
        if expect == "proxy" {
            assert_eq!(
                got.original,
                Some(to),
                "SO_ORIGINAL_DST of the proxy's socket for a connect to {to}"
            );
            got.client.write_all(b"ping").expect("write");
            let mut buf = [0u8; 4];
            got.server
                .set_read_timeout(Some(WAIT))
                .expect("read timeout");
            got.server.read_exact(&mut buf).expect("read at the proxy");
            assert_eq!(&buf, b"ping");
        }
    }
}

/// Bring `lo` up with the peers' addresses, and listen on every destination the phases use
/// (not the proxy port: see [`join`]).
fn network() -> Listeners {
    sh(&["ip", "link", "set", "lo", "up"]);
    for peer in [PEER, EXCLUDED_PEER, OTHER_PEER] {
        sh(&["ip", "addr", "add", &format!("{peer}/32"), "dev", "lo"]);
    }
    let mut l = Listeners(Vec::new());
    l.add("peer", addr(PEER, APP_PORT));
    l.add("peer excluded port", addr(PEER, EXCLUDED_PORT));
    l.add("excluded peer", addr(EXCLUDED_PEER, APP_PORT));
    l.add("other peer", addr(OTHER_PEER, APP_PORT));
    l.add("other peer included port", addr(OTHER_PEER, INCLUDED_PORT));
    l.add("loopback", addr(Ipv4Addr::LOCALHOST, APP_PORT));
    l
}

/// Move this process into `cgroup`, then listen on the proxy port: the accepted sockets of a
/// listener belong to the listener's cgroup, and the getsockopt and sockops programs run only
/// for sockets of the cgroup they are attached to.
fn join(cgroup: &Path, l: &mut Listeners) {
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .unwrap_or_else(|e| panic!("join {}: {e}", procs.display()));
    l.add("proxy", addr(Ipv4Addr::LOCALHOST, PROXY_PORT));
}

/// Run one phase; `spec` is `phase:cgroup-directory`. Connections as root unless a uid is
/// named.
pub fn run(spec: &str) {
    let (phase, cgroup) = spec.split_once(':').expect("phase:cgroup");
    let cgroup = Path::new(cgroup);
    let mut l = network();
    match phase {
        // CaptureConfig::sidecar() with port 9000 and 10.77.0.3/32 excluded.
        "captured" => {
            // Not in the cgroup yet: untouched.
            l.expect(0, 0, addr(PEER, APP_PORT), "peer");
            join(cgroup, &mut l);
            l.expect(0, 0, addr(PEER, APP_PORT), "proxy");
            l.expect(APP_UID, APP_GID, addr(PEER, APP_PORT), "proxy");
            l.expect(PROXY_UID, APP_GID, addr(PEER, APP_PORT), "peer");
            l.expect(APP_UID, PROXY_GID, addr(PEER, APP_PORT), "peer");
            l.expect(0, 0, addr(PEER, EXCLUDED_PORT), "peer excluded port");
            l.expect(0, 0, addr(EXCLUDED_PEER, APP_PORT), "excluded peer");
            l.expect(0, 0, addr(OTHER_PEER, APP_PORT), "proxy");
            l.expect(0, 0, addr(Ipv4Addr::LOCALHOST, APP_PORT), "loopback");
        }
        // Only 10.77.0.2/32 and port 7000 included; gid 2000 excluded as an owner group.
        "include" => {
            join(cgroup, &mut l);
            l.expect(0, 0, addr(PEER, APP_PORT), "proxy");
            l.expect(0, 0, addr(OTHER_PEER, APP_PORT), "other peer");
            l.expect(0, 0, addr(OTHER_PEER, INCLUDED_PORT), "proxy");
            l.expect(APP_UID, EXCLUDED_GID, addr(PEER, APP_PORT), "peer");
            l.expect(APP_UID, APP_GID, addr(PEER, APP_PORT), "proxy");
        }
        // The programs were attached and removed: nothing is redirected.
        "removed" => {
            join(cgroup, &mut l);
            l.expect(0, 0, addr(PEER, APP_PORT), "peer");
            l.expect(APP_UID, APP_GID, addr(OTHER_PEER, APP_PORT), "other peer");
        }
        other => panic!("unknown phase {other}"),
    }
}
