//! What the pinning, IPv6 and getpeername tests add to `support`: a BPF file system of the
//! test's own, and the child's side of the phases they run (listeners on IPv4 and IPv6
//! addresses of the child's network namespace, connects that assert where they land).
#![allow(dead_code)]

use crate::support::child::{APP_PORT, PEER, PROXY_PORT};
use nftmesh_ebpf::Bpffs;
use nftmesh_netlink::probe::{connect_as, original_dst};
use nftmesh_test_support::skip;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a connect or an accept may take.
pub const WAIT: Duration = Duration::from_secs(3);
/// The IPv6 peer, on the child namespace's `lo` (a ULA, `nodad`).
pub const PEER6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
/// An IPv6 peer in `outbound_cidrs_exclude` of the IPv6 phases.
pub const EXCLUDED_PEER6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 3);
/// The proxy port a replace switches to.
pub const OTHER_PROXY_PORT: u16 = 15002;

/// A BPF file system mounted for one test (a fresh instance at a temporary directory, shared
/// with the test's children, which run in the same mount namespace); unmounting it on drop
/// drops whatever is still pinned there.
pub struct TestBpffs {
    dir: PathBuf,
    bpffs: Bpffs,
}

impl TestBpffs {
    /// Mount one; `Err(why)` when that cannot be done here.
    pub fn mount() -> Result<Self, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nftmesh-test-bpffs-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(format!(
                    "mount -t bpf fails: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(format!("cannot run mount: {e}"));
            }
        }
        match Bpffs::at(&dir) {
            Ok(bpffs) => Ok(TestBpffs { dir, bpffs }),
            Err(e) => {
                unmount(&dir);
                Err(e.to_string())
            }
        }
    }

    /// The file system, for the library.
    pub fn bpffs(&self) -> &Bpffs {
        &self.bpffs
    }

    /// Its mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every path under the mount point but the kernel's own (`maps.debug`, `progs.debug`, the
    /// iterators a new bpffs instance comes with): empty when nothing is pinned.
    pub fn contents(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "debug") {
                    continue;
                }
                out.push(p.clone());
                if p.is_dir() {
                    walk(&p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir, &mut out);
        out
    }
}

impl Drop for TestBpffs {
    fn drop(&mut self) {
        unmount(&self.dir);
    }
}

/// Unmount the test's bpffs at `dir` and remove the directory.
fn unmount(dir: &Path) {
    match Command::new("umount").arg(dir).output() {
        Ok(o) if o.status.success() => {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(o) => eprintln!(
            "umount {}: {}",
            dir.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("umount {}: {e}", dir.display()),
    }
}

/// A test's BPF file system, or `None` after printing SKIP (failing under `CI=true`) when the
/// kernel tests cannot run here.
pub fn ready() -> Option<TestBpffs> {
    if let Some(why) = crate::support::unavailable() {
        skip(&why);
        return None;
    }
    match TestBpffs::mount() {
        Ok(b) => Some(b),
        Err(why) => {
            skip(&why);
            None
        }
    }
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

/// Bring the child namespace's `lo` up with the IPv4 peer and the IPv6 peers (`nodad`: usable
/// at once).
pub fn network() {
    sh(&["ip", "link", "set", "lo", "up"]);
    sh(&["ip", "addr", "add", &format!("{PEER}/32"), "dev", "lo"]);
    for p in [PEER6, EXCLUDED_PEER6] {
        sh(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{p}/128"),
            "dev",
            "lo",
            "nodad",
        ]);
    }
}

/// Move this process into `cgroup` (see `support::child::join`: listen on the proxy ports
/// only after this).
pub fn join(cgroup: &Path) {
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .unwrap_or_else(|e| panic!("join {}: {e}", procs.display()));
}

/// Named non-blocking listeners.
#[derive(Default)]
pub struct Listeners(Vec<(&'static str, TcpListener)>);

/// Where a connection landed: the listener's name, `SO_ORIGINAL_DST` (or
/// `IP6T_SO_ORIGINAL_DST`) of the accepted socket, and both ends.
pub struct Landing {
    pub name: &'static str,
    pub original: Option<SocketAddr>,
    pub client: TcpStream,
    pub server: TcpStream,
}

impl Listeners {
    /// Listen on `at` as `name`.
    pub fn add(&mut self, name: &'static str, at: SocketAddr) {
        let l = TcpListener::bind(at).unwrap_or_else(|e| panic!("bind {name} {at}: {e}"));
        l.set_nonblocking(true).expect("non-blocking listener");
        self.0.push((name, l));
    }

    /// Listen on both proxies: `proxy` on `127.0.0.1:15001` and `[::1]:15001`, `proxy2` on
    /// port 15002 of both.
    pub fn add_proxies(&mut self) {
        self.add("proxy", (Ipv4Addr::LOCALHOST, PROXY_PORT).into());
        self.add("proxy", (Ipv6Addr::LOCALHOST, PROXY_PORT).into());
        self.add("proxy2", (Ipv4Addr::LOCALHOST, OTHER_PROXY_PORT).into());
        self.add("proxy2", (Ipv6Addr::LOCALHOST, OTHER_PROXY_PORT).into());
    }

    /// Connect to `to` from a thread running as `uid`/`gid`; where it landed. Panics unless
    /// exactly one listener accepted within [`WAIT`].
    pub fn connect(&self, uid: u32, gid: u32, to: SocketAddr) -> Landing {
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
            std::thread::sleep(Duration::from_millis(1));
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

    /// Assert that a connect to `to` as `uid`/`gid` lands on `expect`; on a proxy, that the
    /// original destination is `to` and that bytes go through. The landing, for more checks.
    pub fn expect(&self, uid: u32, gid: u32, to: SocketAddr, expect: &str) -> Landing {
        let mut got = self.connect(uid, gid, to);
        assert_eq!(
            got.name, expect,
            "connect to {to} as uid {uid} gid {gid} landed on {}",
            got.name
        );
        if expect.starts_with("proxy") {
            assert_eq!(
                got.original,
                Some(to),
                "original destination of the proxy's socket for a connect to {to}"
            );
            got.client.write_all(b"ping").expect("write");
            let mut buf = [0u8; 4];
            got.server
                .set_read_timeout(Some(WAIT))
                .expect("read timeout");
            got.server.read_exact(&mut buf).expect("read at the proxy");
            assert_eq!(&buf, b"ping");
        }
        got
    }
}

/// The app's port for `ip`.
pub fn app(ip: impl Into<IpAddr>) -> SocketAddr {
    SocketAddr::new(ip.into(), APP_PORT)
}
