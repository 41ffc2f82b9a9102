//! What the inbound tests and the inbound bench share: a pod network (the child's own network
//! namespace, made by `unshare --net`) with a veth to a client namespace of its own, so inbound
//! connections arrive at the pod over `nm0` as a remote peer's do (connections over `lo` are
//! decided by nf_tables' output chain, never by its inbound chain), and sockets made in that
//! client namespace.
//!
//! The client namespace is held by a file descriptor only (never named, nothing in
//! /var/run/netns); a socket is made in it by a short-lived thread that `setns`-es itself there
//! (a thread's network namespace is its own), so the rest of the process stays in the pod's.
//! Both go when the child exits.
#![allow(dead_code)]

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

/// The pod's address on `nm0`, and its IPv6 twin.
pub const POD: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
pub const POD6: Ipv6Addr = Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 1);
/// The client's address on `nm1`, in the client namespace.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 2);
/// Istio's inbound passthrough source.
pub const PASSTHROUGH: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
pub const INBOUND_PORT: u16 = 15006;
pub const PROXY_UID: u32 = 1337;
pub const APP_UID: u32 = 1000;
/// How long a connect or accept may take.
pub const WAIT: Duration = Duration::from_secs(3);

/// Run a command; panics with its error output unless it succeeds.
pub fn sh(args: &[&str]) {
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

/// A network namespace held by a file descriptor.
pub struct ClientNs {
    ns: File,
}

impl ClientNs {
    /// A new, empty network namespace (made by a thread that unshares itself into it).
    pub fn create() -> Self {
        let ns = std::thread::spawn(|| -> io::Result<File> {
            // SAFETY: unshare takes a flag word and touches no memory of ours; CLONE_NEWNET
            // moves only the calling thread (this one, which exits right after) into a new
            // network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            File::open("/proc/thread-self/ns/net")
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("unshare thread panicked")))
        .expect("a client network namespace");
        ClientNs { ns }
    }

    /// Run `f` on a thread in this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let fd = self.ns.try_clone().expect("dup the namespace's fd");
        std::thread::spawn(move || {
            // SAFETY: `fd` is an open nsfs file of a network namespace (ours, kept alive by
            // `fd`); setns with CLONE_NEWNET moves only the calling thread, which ends after
            // `f`.
            let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", io::Error::last_os_error());
            f()
        })
        .join()
        .expect("the client thread")
    }

    /// `/proc/PID/fd/N` of the namespace: a path `ip ... netns` accepts.
    pub fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.ns.as_raw_fd())
    }

    /// Connect to `to` from this namespace within [`WAIT`].
    pub fn connect(&self, to: SocketAddr) -> io::Result<TcpStream> {
        self.run(move || TcpStream::connect_timeout(&to, WAIT))
    }
}

/// Bring up the pod's side (this namespace: `lo`, `nm0` with [`POD`] and [`POD6`]) and the
/// client's (`nm1` with [`CLIENT`] and [`CLIENT6`] in `client`).
pub fn pod_network(client: &ClientNs) {
    sh(&["ip", "link", "set", "lo", "up"]);
    sh(&[
        "ip", "link", "add", "nm0", "type", "veth", "peer", "name", "nm1",
    ]);
    sh(&["ip", "link", "set", "nm1", "netns", &client.path()]);
    sh(&["ip", "addr", "add", &format!("{POD}/24"), "dev", "nm0"]);
    sh(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{POD6}/64"),
        "dev",
        "nm0",
        "nodad",
    ]);
    sh(&["ip", "link", "set", "nm0", "up"]);
    client.run(|| {
        sh(&["ip", "link", "set", "lo", "up"]);
        sh(&["ip", "addr", "add", &format!("{CLIENT}/24"), "dev", "nm1"]);
        sh(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{CLIENT6}/64"),
            "dev",
            "nm1",
            "nodad",
        ]);
        sh(&["ip", "link", "set", "nm1", "up"]);
    });
}

/// Move this process into `cgroup` (before its listeners are made: the cgroup's programs see
/// only its own sockets).
pub fn join(cgroup: &std::path::Path) {
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .unwrap_or_else(|e| panic!("join {}: {e}", procs.display()));
}

/// Move this process back to the cgroup it started in (its sockets made meanwhile stay the
/// cgroup's): connections from the client namespace must not look like the pod's own connects,
/// which the cgroup's sockops program records.
pub fn leave(original: &std::path::Path) {
    let procs = original.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .unwrap_or_else(|e| panic!("leave to {}: {e}", procs.display()));
}

/// The cgroup v2 directory this process is in now.
pub fn current_cgroup() -> std::path::PathBuf {
    let text = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line");
    let mount = crate::support::cgroup2_mount().expect("a cgroup2 mount");
    mount.join(rel.trim_start_matches('/'))
}

/// Listen on `at` from a thread running as `uid` (gid `uid`), non-blocking.
pub fn listen_as(uid: u32, at: SocketAddr) -> TcpListener {
    let l = std::thread::spawn(move || {
        nftmesh_netlink::probe::become_user(uid, uid)?;
        TcpListener::bind(at)
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("listener thread panicked")))
    .unwrap_or_else(|e| panic!("listen on {at} as {uid}: {e}"));
    l.set_nonblocking(true).expect("non-blocking listener");
    l
}

/// Listen on `at` with SO_REUSEPORT from a thread running as `uid` (gid `uid`), non-blocking:
/// several such listeners form one reuseport group.
pub fn listen_reuseport_as(uid: u32, at: SocketAddr) -> TcpListener {
    let l = std::thread::spawn(move || -> io::Result<TcpListener> {
        nftmesh_netlink::probe::become_user(uid, uid)?;
        let family = match at {
            SocketAddr::V4(_) => libc::AF_INET,
            SocketAddr::V6(_) => libc::AF_INET6,
        };
        // SAFETY: socket takes integers only; a non-negative result is a new descriptor.
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        // SAFETY: `one` is a live c_int and its size is passed; the kernel only reads it.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEPORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let len = match at {
            SocketAddr::V4(_) => std::mem::size_of::<libc::sockaddr_in>(),
            SocketAddr::V6(_) => std::mem::size_of::<libc::sockaddr_in6>(),
        };
        let len = libc::socklen_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        let raw = sockaddr(at);
        // SAFETY: `raw` holds a sockaddr of the socket's family, `len` bytes; bind reads it.
        if unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw as *const libc::sockaddr_storage).cast(),
                len,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: listen takes integers only.
        if unsafe { libc::listen(fd.as_raw_fd(), 128) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TcpListener::from(fd))
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("listener thread panicked")))
    .unwrap_or_else(|e| panic!("listen with SO_REUSEPORT on {at} as {uid}: {e}"));
    l.set_nonblocking(true).expect("non-blocking listener");
    l
}

/// Connect to `to` from the local address `src` (port chosen by the kernel), in this
/// namespace.
pub fn connect_from(src: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let (family, len) = match to {
        SocketAddr::V4(_) => (libc::AF_INET, std::mem::size_of::<libc::sockaddr_in>()),
        SocketAddr::V6(_) => (libc::AF_INET6, std::mem::size_of::<libc::sockaddr_in6>()),
    };
    // SAFETY: socket takes integers only; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (from, to_raw) = (sockaddr(SocketAddr::new(src, 0)), sockaddr(to));
    let len = libc::socklen_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `from` is a sockaddr_storage holding a sockaddr of the socket's family, at least
    // `len` bytes long; bind only reads it.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&from as *const libc::sockaddr_storage).cast(),
            len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above for `to_raw`; a blocking connect, bounded by the kernel's SYN retries
    // (the callers connect within the namespaces they made, where a SYN is answered or reset).
    if unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&to_raw as *const libc::sockaddr_storage).cast(),
            len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpStream::from(fd))
}

/// `a` as a sockaddr_in or sockaddr_in6 in a sockaddr_storage.
fn sockaddr(a: SocketAddr) -> libc::sockaddr_storage {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
        }
    }
    ss
}

/// Accept on `l` (non-blocking) within `wait`.
pub fn accept_within(l: &TcpListener, wait: Duration) -> Option<TcpStream> {
    let deadline = Instant::now() + wait;
    loop {
        if let Ok((s, _)) = l.accept() {
            s.set_nonblocking(false).expect("blocking stream");
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Pin the calling thread to CPU `cpu`.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it; the call reads
    // `size_of::<cpu_set_t>()` bytes of it and applies to the calling thread (0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The namespace's `nf_conntrack_count` (0 when conntrack is not loaded).
pub fn conntrack_count() -> u64 {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// How many programs are attached to `target` (a cgroup directory or a network namespace file)
/// for `attach_type` (`enum bpf_attach_type`), by `BPF_PROG_QUERY`.
pub fn attached_count(target: &std::path::Path, attach_type: u32) -> u32 {
    /// The `query` member of `union bpf_attr`, up to `prog_cnt`.
    #[repr(C)]
    #[derive(Default)]
    struct QueryAttr {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        pad: u32,
    }
    const BPF_PROG_QUERY: libc::c_long = 16;
    let file = File::open(target).unwrap_or_else(|e| panic!("open {}: {e}", target.display()));
    let mut attr = QueryAttr {
        target_fd: u32::try_from(file.as_raw_fd()).expect("a descriptor"),
        attach_type,
        ..QueryAttr::default()
    };
    // SAFETY: `attr` is a live, zero-initialised `repr(C)` prefix of `union bpf_attr` for
    // BPF_PROG_QUERY, of the size passed; with `prog_ids` null the kernel writes only
    // `attach_flags` and `prog_cnt` into it, and keeps no reference after the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &mut attr as *mut QueryAttr,
            std::mem::size_of::<QueryAttr>() as libc::c_uint,
        )
    };
    assert!(
        r == 0,
        "BPF_PROG_QUERY {} type {attach_type}: {}",
        target.display(),
        io::Error::last_os_error()
    );
    attr.prog_cnt
}
