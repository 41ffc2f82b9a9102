//! The sk_lookup inbound capture with real traffic: connections from a client namespace over a
//! veth to the pod (the child's own network namespace, its processes in the test's cgroup),
//! with `CaptureConfig::sidecar()` (every port but 15090/15021/15020 and the tunnel port 15008).
//!
//! - a captured port lands on the proxy's 15006 listener (opened by uid 1337), whose accepted
//!   socket's local address is the original destination, and `SO_ORIGINAL_DST` says so; IPv4
//!   and IPv6 (`IP6T_SO_ORIGINAL_DST`);
//! - excluded ports and 15008 reach the app; so do connections from inside the pod: the
//!   proxy's from 127.0.0.6, the app's own; the proxy calling its own pod goes to the inbound
//!   listener (`istio-output`'s self-call rule) but to 127.0.0.1 or the tunnel port;
//! - no proxy listener (before it listens, after it closes, or only a non-proxy uid's listener
//!   on 15006): the connection is refused and the app sees nothing (fail closed);
//! - a dual-stack `[::]:15006` listener alone takes IPv4 too (IPv4-mapped; `SO_ORIGINAL_DST` at
//!   `SOL_IP` answers the IPv4 destination);
//! - two listeners in a SO_REUSEPORT group both get steered connections; one closing leaves the
//!   other registered (unless their cookies hash to one slot); both closed: refused;
//! - with IPv6 capture off, IPv6 is steered all the same (nf_tables' `inet` table redirects
//!   it): to an IPv6 listener on 15006, refused without one;
//! - installed (pinned) beside the outbound capture, replaced in place (new ports, the listener
//!   still registered), removed before it;
//! - installed (pinned) by a process that then exits, steering goes on; removed, nothing is pinned and nothing
//!   is attached to the cgroup or the namespace (`BPF_PROG_QUERY`).
//!
//! Needs root: otherwise `SKIP: why` (a failure under `CI=true`).

mod inbound_support;
mod kernel_support;
mod support;

use inbound_support::*;
use nftmesh_ebpf::{InboundAttachment, InboundCapture};
use nftmesh_model::config::{CaptureConfig, InterceptionMode};
use nftmesh_netlink::probe::original_dst;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;
use support::{run_child, TestCgroup, CHILD_ENV};

const APP_PORT: u16 = 8080;
/// Attach types (`enum bpf_attach_type`).
const SOCK_OPS: u32 = 3;
const POST_BIND4: u32 = 12;
const GETSOCKOPT: u32 = 21;
const SK_LOOKUP: u32 = 36;

/// Not a test of its own: the children's entry point.
#[test]
fn child() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (phase, cgroup) = spec.split_once(':').expect("phase:cgroup");
        run_phase(phase, Path::new(cgroup));
    }
}

#[test]
fn captured_ports_reach_the_listener_others_the_app_and_no_listener_is_refused() {
    if let Some(why) = support::unavailable() {
        nftmesh_test_support::skip(&why);
        return;
    }
    let cgroup = TestCgroup::create("ebpf");
    run_child("steer", cgroup.path());
}

#[test]
fn with_ipv6_off_ipv6_is_still_steered_as_the_inet_table_redirects_it() {
    if let Some(why) = support::unavailable() {
        nftmesh_test_support::skip(&why);
        return;
    }
    let cgroup = TestCgroup::create("ebpf");
    run_child("ipv6off", cgroup.path());
}

#[test]
fn a_dual_stack_listener_takes_ipv4_too() {
    if let Some(why) = support::unavailable() {
        nftmesh_test_support::skip(&why);
        return;
    }
    let cgroup = TestCgroup::create("ebpf");
    run_child("dualstack", cgroup.path());
}

#[test]
fn a_reuseport_group_shares_the_connections_until_the_registered_listener_closes() {
    if let Some(why) = support::unavailable() {
        nftmesh_test_support::skip(&why);
        return;
    }
    let cgroup = TestCgroup::create("ebpf");
    let out = run_child("reuseport", cgroup.path());
    if let Some(line) = out.lines().find(|l| l.contains("reuseport slots")) {
        eprintln!("{line}");
    }
}

#[test]
fn a_pinned_install_outlives_the_installing_process_and_removal_leaves_nothing() {
    let Some(bpffs) = kernel_support::ready() else {
        return;
    };
    let cgroup = TestCgroup::create("ebpf");
    run_child(&format!("pinned@{}", bpffs.dir().display()), cgroup.path());
    assert_eq!(bpffs.contents(), Vec::<std::path::PathBuf>::new());
    for t in [SOCK_OPS, POST_BIND4, GETSOCKOPT] {
        assert_eq!(attached_count(cgroup.path(), t), 0, "attach type {t}");
    }
}

#[test]
fn beside_the_outbound_capture_replaced_in_place_and_removed_first() {
    let Some(bpffs) = kernel_support::ready() else {
        return;
    };
    let cgroup = TestCgroup::create("ebpf");
    run_child(&format!("beside@{}", bpffs.dir().display()), cgroup.path());
    assert_eq!(bpffs.contents(), Vec::<std::path::PathBuf>::new());
}

#[test]
fn settings_it_cannot_apply_are_refused_before_loading() {
    let cfg = CaptureConfig {
        mode: InterceptionMode::Tproxy,
        ..CaptureConfig::sidecar()
    };
    match InboundCapture::new(&cfg) {
        Err(nftmesh_ebpf::EbpfError::Unsupported { setting, .. }) => assert_eq!(setting, "mode"),
        other => panic!("TPROXY mode: {other:?}"),
    }
}

// ---- The child's side ----

/// Named listeners of the pod.
struct Pod(Vec<(&'static str, TcpListener)>);

impl Pod {
    fn add(&mut self, name: &'static str, uid: u32, at: SocketAddr) {
        self.0.push((name, listen_as(uid, at)));
    }

    fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| *n != name);
    }

    /// The listener that accepted a connection within [`WAIT`], with the accepted stream;
    /// asserts no other did.
    fn landing(&self, what: &str) -> (&'static str, std::net::TcpStream) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            for (name, l) in &self.0 {
                if let Some(s) = accept_within(l, Duration::ZERO) {
                    for (other, l) in &self.0 {
                        assert!(l.accept().is_err(), "{what}: {other} accepted one too");
                    }
                    return (name, s);
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: no listener accepted"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Assert nothing was accepted (after a short grace).
    fn nothing(&self, what: &str) {
        std::thread::sleep(Duration::from_millis(100));
        for (name, l) in &self.0 {
            assert!(l.accept().is_err(), "{what}: {name} accepted a connection");
        }
    }
}

/// A connection from the client to `to` lands on `expect`; on a proxy, the accepted socket's
/// local address and original destination are `to`, and bytes go through.
fn expect_client(client: &ClientNs, pod: &Pod, to: SocketAddr, expect: &str) {
    let mut c = client
        .connect(to)
        .unwrap_or_else(|e| panic!("client -> {to}: {e}"));
    check(pod, to, expect, &mut c);
}

fn check(pod: &Pod, to: SocketAddr, expect: &str, c: &mut std::net::TcpStream) {
    let what = format!("{:?} -> {to}", c.local_addr().ok());
    let (name, mut s) = pod.landing(&what);
    assert_eq!(name, expect, "{what} landed on {name}");
    if expect.starts_with("proxy") {
        assert_eq!(s.local_addr().ok(), Some(to), "{what}: local address");
        assert_eq!(original_dst(&s), Some(to), "{what}: SO_ORIGINAL_DST");
    }
    c.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"ping");
}

/// A connection from the client to `to` is refused and reaches no listener.
fn expect_refused(client: &ClientNs, pod: &Pod, to: SocketAddr, why: &str) {
    match client.connect(to) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
        other => panic!("{why}: client -> {to}: expected refused, got {other:?}"),
    }
    pod.nothing(&format!("{why}: -> {to}"));
}

/// `getsockopt(SOL_IP, SO_ORIGINAL_DST)` on `s` whatever its family (a dual-stack socket's
/// IPv4 connection answers at SOL_IP).
fn sol_ip_original_dst(s: &std::net::TcpStream) -> Option<SocketAddr> {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero bytes are a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: the buffer is a sockaddr_in of `len` bytes; the kernel (and the BPF program)
    // write at most `len` bytes into it and update `len`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&mut sa as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| {
        SocketAddr::from((
            std::net::Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
            u16::from_be(sa.sin_port),
        ))
    })
}

/// The socket cookie of `l` (`SO_COOKIE`), which picks its slot in the listener map.
fn socket_cookie(l: &TcpListener) -> u64 {
    use std::os::fd::AsRawFd;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the buffer is a live u64 of `len` bytes; the kernel writes at most that.
    let rc = unsafe {
        libc::getsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "SO_COOKIE: {}", std::io::Error::last_os_error());
    cookie
}

/// Run this test binary's child once more, in this network namespace, to install the inbound
/// steering pinned in the bpffs at `mount` and exit; panics unless it succeeds within 60 s.
fn install_from_another_process(mount: &Path, cgroup: &Path) {
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = std::process::Command::new(exe)
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(
            CHILD_ENV,
            format!("install-only@{}:{}", mount.display(), cgroup.display()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the installer");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        match child.try_wait().expect("wait for the installer") {
            Some(s) => break s,
            None if std::time::Instant::now() > deadline => {
                // Our own child, by its handle.
                let _ = child.kill();
                let _ = child.wait();
                panic!("the installer did not finish within 60 s");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    assert!(status.success(), "the installer failed: {status}");
}

/// Run `f` on a thread running as `uid` (gid `uid`).
fn as_user<T: Send + 'static>(
    uid: u32,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    std::thread::spawn(move || {
        nftmesh_netlink::probe::become_user(uid, uid)?;
        f()
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("thread panicked")))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(POD), port)
}

fn v6(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(POD6), port)
}

/// The app's listeners (dual-stack, as the app uid).
fn app(pod: &mut Pod) {
    let any = |p| SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), p);
    pod.add("app", APP_UID, any(APP_PORT));
    pod.add("app 15090", APP_UID, any(15090));
    pod.add("app 15008", APP_UID, any(15008));
}

/// The proxy's inbound listeners: IPv4 any, and IPv6 on the pod's address.
fn proxy(pod: &mut Pod) {
    pod.add("proxy", PROXY_UID, v4(INBOUND_PORT).with_any_ip());
    pod.add("proxy6", PROXY_UID, v6(INBOUND_PORT));
}

trait AnyIp {
    fn with_any_ip(self) -> SocketAddr;
}

impl AnyIp for SocketAddr {
    fn with_any_ip(self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), self.port())
    }
}

fn run_phase(phase: &str, cgroup: &Path) {
    if let Some(mount) = phase.strip_prefix("install-only@") {
        // A process of its own that installs in its (inherited) namespace and exits.
        let bpffs = nftmesh_ebpf::Bpffs::at(Path::new(mount)).expect("the test's bpffs");
        let mut capture = InboundCapture::new(&CaptureConfig::sidecar()).expect("load");
        let installed = capture
            .install(&bpffs, cgroup, Path::new("/proc/self/ns/net"))
            .expect("install");
        assert_eq!(installed.programs().len(), 5, "{:?}", installed.programs());
        return;
    }
    let client = ClientNs::create();
    pod_network(&client);
    let netns = Path::new("/proc/self/ns/net");
    let home = current_cgroup();
    let mut cfg = CaptureConfig::sidecar();
    cfg.ipv6 = phase != "ipv6off";
    let mut capture = InboundCapture::new(&cfg).expect("load the inbound capture");
    let mut pod = Pod(Vec::new());
    match phase {
        "steer" => {
            let attached = capture.attach(cgroup, netns).expect("attach");
            assert_eq!(attached_count(netns, SK_LOOKUP), 1);
            assert_eq!(attached_count(cgroup, SOCK_OPS), 1);
            // The pod's sockets are the cgroup's; the client's (made outside it) are not.
            join(cgroup);
            app(&mut pod);
            // Another uid's listener on 15006 is not the proxy's.
            pod.add("impostor", APP_UID, v4(INBOUND_PORT).with_any_ip());
            leave(&home);
            expect_refused(&client, &pod, v4(APP_PORT), "only a non-proxy listener");
            expect_refused(&client, &pod, v6(APP_PORT), "only a non-proxy listener");
            pod.remove("impostor");
            join(cgroup);
            proxy(&mut pod);
            // From inside the pod, as `istio-output` decides: the proxy's passthrough from
            // 127.0.0.6 and the app's own connections reach the app; the proxy calling its own
            // pod (not the host loopback 127.0.0.1, not the tunnel port) goes to the inbound
            // listener.
            let mut c = as_user(PROXY_UID, move || {
                connect_from(IpAddr::V4(PASSTHROUGH), v4(APP_PORT))
            })
            .expect("the proxy from .6");
            check(&pod, v4(APP_PORT), "app", &mut c);
            for (uid, to, expect) in [
                (APP_UID, v4(APP_PORT), "app"),
                (APP_UID, v6(APP_PORT), "app"),
                (PROXY_UID, v4(APP_PORT), "proxy"),
                (PROXY_UID, v6(APP_PORT), "proxy6"),
                (PROXY_UID, v4(15090), "proxy"),
                (PROXY_UID, v4(15008), "app 15008"),
                (PROXY_UID, loopback(APP_PORT), "app"),
                (
                    PROXY_UID,
                    SocketAddr::from(([127, 0, 0, 5], APP_PORT)),
                    "proxy",
                ),
            ] {
                let mut c = as_user(uid, move || std::net::TcpStream::connect_timeout(&to, WAIT))
                    .unwrap_or_else(|e| panic!("uid {uid} -> {to}: {e}"));
                check(&pod, to, expect, &mut c);
            }
            leave(&home);
            expect_client(&client, &pod, v4(APP_PORT), "proxy");
            expect_client(&client, &pod, v4(9999), "proxy");
            expect_client(&client, &pod, v4(15090), "app 15090");
            expect_client(&client, &pod, v4(15008), "app 15008");
            expect_client(&client, &pod, v6(APP_PORT), "proxy6");
            expect_client(&client, &pod, v6(15090), "app 15090");
            expect_client(&client, &pod, v6(15008), "app 15008");
            // The proxy goes away: refused again, never the app.
            pod.remove("proxy");
            pod.remove("proxy6");
            expect_refused(&client, &pod, v4(APP_PORT), "the proxy closed");
            expect_refused(&client, &pod, v6(APP_PORT), "the proxy closed");
            attached.remove().expect("remove");
            assert_eq!(attached_count(netns, SK_LOOKUP), 0);
            assert_eq!(attached_count(cgroup, SOCK_OPS), 0);
            assert_eq!(attached_count(cgroup, GETSOCKOPT), 0);
            expect_client(&client, &pod, v4(APP_PORT), "app");
        }
        "dualstack" => {
            // Only a dual-stack [::]:15006 listener (slot 1): IPv4 connections go to it too,
            // as IPv4-mapped sockets, and SO_ORIGINAL_DST (SOL_IP) answers the IPv4 address.
            let _attached = capture.attach(cgroup, netns).expect("attach");
            join(cgroup);
            app(&mut pod);
            pod.add(
                "proxy",
                PROXY_UID,
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), INBOUND_PORT),
            );
            leave(&home);
            let to = v4(APP_PORT);
            let mut c = client.connect(to).expect("client -> the pod");
            let (name, mut s) = pod.landing("dual-stack");
            assert_eq!(name, "proxy");
            let mapped = SocketAddr::new(IpAddr::V6(POD.to_ipv6_mapped()), APP_PORT);
            assert_eq!(s.local_addr().ok(), Some(mapped), "local address");
            assert_eq!(
                sol_ip_original_dst(&s),
                Some(to),
                "SO_ORIGINAL_DST at SOL_IP"
            );
            c.write_all(b"ping").expect("write");
            let mut buf = [0u8; 4];
            s.set_read_timeout(Some(WAIT)).expect("timeout");
            s.read_exact(&mut buf).expect("read");
            expect_client(&client, &pod, v6(APP_PORT), "proxy");
        }
        "reuseport" => {
            // Two proxy listeners in one SO_REUSEPORT group (Envoy's workers): each is in the
            // slot its socket cookie hashes to, sk_lookup takes the first occupied slot and the
            // kernel's reuseport selection spreads the steered connections over the group.
            // One closing leaves the other registered (unless both hashed to one slot: then
            // the later one replaced the earlier, and its closing leaves none: refused).
            let _attached = capture.attach(cgroup, netns).expect("attach");
            join(cgroup);
            app(&mut pod);
            let any = v4(INBOUND_PORT).with_any_ip();
            pod.0.push(("proxy a", listen_reuseport_as(PROXY_UID, any)));
            pod.0.push(("proxy b", listen_reuseport_as(PROXY_UID, any)));
            leave(&home);
            let slot = |name: &str| {
                let (_, l) = pod.0.iter().find(|(n, _)| *n == name).expect("listener");
                socket_cookie(l) % 8
            };
            let shared = slot("proxy a") == slot("proxy b");
            println!(
                "reuseport slots: a {}, b {} (shared: {shared})",
                slot("proxy a"),
                slot("proxy b")
            );
            let mut seen = std::collections::BTreeMap::new();
            for _ in 0..20 {
                let to = v4(APP_PORT);
                let _c = client.connect(to).expect("client -> the pod");
                let (name, s) = pod.landing("reuseport");
                assert!(name.starts_with("proxy"), "landed on {name}");
                assert_eq!(original_dst(&s), Some(to));
                *seen.entry(name).or_insert(0) += 1;
            }
            assert_eq!(
                seen.len(),
                2,
                "both listeners of the group got connections: {seen:?}"
            );
            pod.remove("proxy b");
            if shared {
                expect_refused(&client, &pod, v4(APP_PORT), "the one registered closed");
            } else {
                expect_client(&client, &pod, v4(APP_PORT), "proxy a");
            }
            pod.remove("proxy a");
            expect_refused(&client, &pod, v4(APP_PORT), "both closed");
        }
        "ipv6off" => {
            // nf_tables' `inet` tables REDIRECT IPv6 inbound with IPv6 capture off too: to an
            // IPv6 listener on 15006 if there is one, refused without one; never the app.
            let _attached = capture.attach(cgroup, netns).expect("attach");
            join(cgroup);
            app(&mut pod);
            pod.add("proxy", PROXY_UID, v4(INBOUND_PORT).with_any_ip());
            leave(&home);
            expect_client(&client, &pod, v4(APP_PORT), "proxy");
            expect_refused(
                &client,
                &pod,
                v6(APP_PORT),
                "IPv6 capture off, no IPv6 listener",
            );
            join(cgroup);
            pod.add("proxy6", PROXY_UID, v6(INBOUND_PORT));
            leave(&home);
            expect_client(&client, &pod, v6(APP_PORT), "proxy6");
        }
        p if p.starts_with("pinned@") => {
            let mount = Path::new(&p["pinned@".len()..]);
            let bpffs = nftmesh_ebpf::Bpffs::at(mount).expect("the test's bpffs");
            // Installed by another process (this binary again, in this namespace), which has
            // exited: only the pins hold the links.
            install_from_another_process(mount, cgroup);
            drop(capture);
            assert_eq!(attached_count(netns, SK_LOOKUP), 1);
            join(cgroup);
            app(&mut pod);
            proxy(&mut pod);
            leave(&home);
            expect_client(&client, &pod, v4(APP_PORT), "proxy");
            let found = InboundAttachment::open(&bpffs, cgroup)
                .expect("open")
                .expect("an installed inbound capture");
            found.remove().expect("remove");
            assert!(InboundAttachment::open(&bpffs, cgroup)
                .expect("open")
                .is_none());
            assert_eq!(attached_count(netns, SK_LOOKUP), 0);
            expect_client(&client, &pod, v4(APP_PORT), "app");
        }
        p if p.starts_with("beside@") => {
            // Beside the outbound capture in the same pin directory, as the eBPF backend will
            // install them: outbound first, then the inbound steering; replaced in place with
            // port 8080 excluded (the registered listener stays registered); removed inbound
            // first, then outbound.
            let mount = Path::new(&p["beside@".len()..]);
            let bpffs = nftmesh_ebpf::Bpffs::at(mount).expect("the test's bpffs");
            let mut outbound = nftmesh_ebpf::EbpfCapture::new(&cfg).expect("load outbound");
            outbound.install(&bpffs, cgroup).expect("install outbound");
            capture
                .install(&bpffs, cgroup, netns)
                .expect("install inbound");
            join(cgroup);
            app(&mut pod);
            proxy(&mut pod);
            leave(&home);
            expect_client(&client, &pod, v4(APP_PORT), "proxy");
            let mut excluded = cfg.clone();
            excluded.inbound_ports_exclude.push(APP_PORT);
            let mut replacement = InboundCapture::new(&excluded).expect("load the replacement");
            let replaced = replacement.install(&bpffs, cgroup, netns).expect("replace");
            assert_eq!(attached_count(netns, SK_LOOKUP), 1, "replaced in place");
            assert_eq!(
                attached_count(cgroup, SOCK_OPS),
                2,
                "outbound's and inbound's"
            );
            expect_client(&client, &pod, v4(APP_PORT), "app");
            expect_client(&client, &pod, v4(9999), "proxy");
            replaced.remove().expect("remove inbound");
            assert_eq!(attached_count(netns, SK_LOOKUP), 0);
            assert_eq!(attached_count(cgroup, SOCK_OPS), 1, "outbound's stays");
            nftmesh_ebpf::Attachment::open(&bpffs, cgroup)
                .expect("open outbound")
                .expect("the outbound capture")
                .remove()
                .expect("remove outbound");
            assert_eq!(attached_count(cgroup, SOCK_OPS), 0);
        }
        other => panic!("unknown phase {other}"),
    }
}
