//! sk_msg acceleration (`bpf/accel.c`, `nftmesh_ebpf::Acceleration`) with real connections:
//! each test loads the capture and the acceleration, attaches them to a cgroup v2 directory it
//! creates (and, for pinning, a BPF file system it mounts), and runs a child process (this
//! binary again) in a network namespace of its own that joins the cgroup, listens as the proxy
//! and connects as the app.
//!
//! Whether a connection is accelerated is read from the app socket's `TCP_INFO`: bytes that
//! `sk_msg` hands to the peer's receive queue never go through TCP, so `tcpi_bytes_acked` stays
//! near 0 however much is sent. The half-close bug of the acceleration is reproduced and
//! asserted as present: on a kernel that fixes it, `accelerated_traffic_and_the_half_close_bug`
//! fails and says so. Needs root; otherwise `SKIP: why` (failing under `CI=true`).

mod kernel_support;
mod support;

use ipnet::IpNet;
use kernel_support::{Landing, Listeners, PEER6};
use nftmesh_ebpf::{Accelerated, Acceleration, Attachment, Bpffs, EbpfCapture};
use nftmesh_model::config::CaptureConfig;
use nftmesh_test_support::skip;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::child::{
    APP_GID, APP_PORT, APP_UID, EXCLUDED_PEER, EXCLUDED_PORT, PEER, PROXY_GID, PROXY_UID,
};
use support::{run_child, TestCgroup, CHILD_ENV};

/// How long a read may wait.
const WAIT: Duration = Duration::from_secs(3);
/// How many half-closes each phase tries (the probe: 20 of 20 failed).
const HALF_CLOSES: usize = 20;
/// How long the proxy waits after the app's FIN before it answers: a blocking `recv()` that
/// returns before that returned without the answer.
const ANSWER_DELAY: Duration = Duration::from_millis(200);
/// The sizes sent through and back (the largest over 64 KiB, the size of one sk_msg scatter
/// list and of a loopback segment).
const SIZES: [usize; 4] = [1, 1500, 65_537, 1 << 20];
/// `tcpi_bytes_acked` under this after a megabyte went through: the bytes did not go over TCP.
const ACCELERATED_ACKED: u64 = 4096;

/// Not a test of its own: the entry point of the child processes; does nothing unless
/// [`CHILD_ENV`] names a phase (`phase:cgroup`, or `pinned=BPFFS:cgroup`).
#[test]
fn child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (phase, cgroup) = spec.split_once(':').expect("phase:cgroup");
    let cgroup = Path::new(cgroup);
    let l = setup(cgroup);
    match phase.split_once('=') {
        None if phase == "accelerated" => accelerated(&l),
        None if phase == "unaccelerated" => unaccelerated(&l),
        Some(("pinned", bpffs)) => pinned(&l, Path::new(bpffs), cgroup),
        _ => panic!("unknown phase {phase}"),
    }
}

/// `CaptureConfig::sidecar()` with IPv6 capture on, port 9000 and 10.77.0.3/32 excluded.
fn config() -> CaptureConfig {
    CaptureConfig {
        ipv6: true,
        outbound_ports_exclude: vec![EXCLUDED_PORT],
        outbound_cidrs_exclude: vec![IpNet::new(IpAddr::V4(EXCLUDED_PEER), 32).expect("prefix")],
        ..CaptureConfig::sidecar()
    }
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

// ---- The parent's side ----

#[test]
fn accelerated_traffic_and_the_half_close_bug() {
    let Some(()) = ready() else { return };
    let cgroup = TestCgroup::create("ebpf");
    let cfg = config();
    let mut capture = EbpfCapture::new(&cfg).unwrap_or_else(|e| panic!("load the capture: {e}"));
    let captured = capture
        .attach(cgroup.path())
        .unwrap_or_else(|e| panic!("attach the capture: {e}"));
    let mut accel =
        Acceleration::for_capture(&cfg).unwrap_or_else(|e| panic!("load the acceleration: {e}"));
    assert_eq!(accel.proxy_port(), 15001);
    let accelerated = accel
        .attach(cgroup.path())
        .unwrap_or_else(|e| panic!("attach the acceleration: {e}"));
    assert_eq!(accelerated.pin_dir(), None);
    let out = run_child("accelerated", cgroup.path());
    print!("{out}");
    // Every socket of the child closed: the kernel took them out of the map.
    wait_until("the SOCKHASH is empty after every socket closed", || {
        accel.sockets().expect("read the SOCKHASH") == 0
    });
    let eagain = half_close_failures(&out);
    println!(
        "half-close with sk_msg acceleration on this kernel: {eagain} of {HALF_CLOSES} blocking \
         recv() after shutdown(SHUT_WR) returned EAGAIN"
    );
    assert!(
        eagain > 0,
        "the half-close bug did not show ({eagain} of {HALF_CLOSES}): this kernel may have fixed \
         it; check and update the crate README and the documentation of nftmesh_ebpf::Acceleration \
         (and consider turning acceleration on by default)"
    );
    accelerated.remove().expect("detach the acceleration");
    // The capture alone: captured, not accelerated, half-close right.
    let out = run_child("unaccelerated", cgroup.path());
    print!("{out}");
    assert_eq!(half_close_failures(&out), 0);
    captured.remove().expect("remove the capture");
}

#[test]
fn installed_acceleration_outlives_its_process_and_removal_leaves_nothing() {
    let Some(bpffs) = kernel_support::ready() else {
        return;
    };
    let cgroup = TestCgroup::create("ebpf");
    let cfg = config();
    let mut accel = Acceleration::for_capture(&cfg).expect("load the acceleration");
    // No capture installed there: refused, nothing pinned.
    let refused = accel.install(bpffs.bpffs(), cgroup.path());
    assert!(refused.is_err(), "install without a capture: {refused:?}");
    assert_eq!(bpffs.contents(), Vec::<PathBuf>::new());

    let mut capture = EbpfCapture::new(&cfg).expect("load the capture");
    capture
        .install(bpffs.bpffs(), cgroup.path())
        .expect("install the capture");
    let accelerated = accel
        .install(bpffs.bpffs(), cgroup.path())
        .expect("install the acceleration");
    let dir = accelerated.pin_dir().expect("pinned").to_path_buf();
    // Installing again replaces the programs in place.
    let again = accel
        .install(bpffs.bpffs(), cgroup.path())
        .expect("install again");
    assert_eq!(again.pin_dir(), Some(dir.as_path()));
    let mut pinned: Vec<String> = std::fs::read_dir(&dir)
        .expect("the accel directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    pinned.sort();
    assert_eq!(pinned, ["accel_socks", "link_sockops", "prog_sk_msg"]);
    // Only the pins hold it from here on.
    drop((accel, accelerated, again, capture));
    let spec = format!("pinned={}", bpffs.dir().display());
    let out = run_child(&spec, cgroup.path());
    print!("{out}");
    // The child removed the acceleration: nothing of it is left, the capture still is.
    assert!(!dir.exists(), "{} is gone", dir.display());
    assert!(Accelerated::open(bpffs.bpffs(), cgroup.path())
        .expect("open")
        .is_none());
    Attachment::open(bpffs.bpffs(), cgroup.path())
        .expect("open the capture")
        .expect("the capture is still installed")
        .remove()
        .expect("remove the capture");
    assert_eq!(bpffs.contents(), Vec::<PathBuf>::new());
}

/// The count the child printed as `HALFCLOSE eagain=N`.
fn half_close_failures(out: &str) -> usize {
    out.lines()
        .find_map(|l| l.strip_prefix("HALFCLOSE eagain="))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no HALFCLOSE line in the child's output:\n{out}"))
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- The child's side ----

fn addr(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// The child's network (`lo` with the peers), its cgroup joined, and listeners for the peers
/// and (after joining, so accepted sockets are the cgroup's) the proxies.
fn setup(cgroup: &Path) -> Listeners {
    kernel_support::network();
    let o = std::process::Command::new("ip")
        .args(["addr", "add", &format!("{EXCLUDED_PEER}/32"), "dev", "lo"])
        .output()
        .expect("ip");
    assert!(o.status.success(), "ip addr add {EXCLUDED_PEER}");
    let mut l = Listeners::default();
    l.add("peer", addr(PEER, APP_PORT));
    l.add("peer", addr(PEER6, APP_PORT));
    l.add("peer excluded port", addr(PEER, EXCLUDED_PORT));
    l.add("excluded peer", addr(EXCLUDED_PEER, APP_PORT));
    kernel_support::join(cgroup);
    l.add_proxies();
    l
}

/// `tcpi_bytes_acked` of `s`: how many bytes it sent over TCP and got acknowledged.
fn bytes_acked(s: &TcpStream) -> u64 {
    // SAFETY: tcp_info is plain data (all zeroes is a valid value); getsockopt writes at most
    // `len` bytes, its size, into it, and the fd is the stream's, open for the call.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let r = libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        assert_eq!(r, 0, "getsockopt TCP_INFO");
        info.tcpi_bytes_acked
    }
}

fn pattern(size: usize, seed: usize) -> Vec<u8> {
    (0..size).map(|i| ((i * 7 + seed) % 251) as u8).collect()
}

/// Send `size` bytes from the app to the proxy, which reads them all and sends them back;
/// assert both arrive intact. How many bytes the app's socket got acknowledged meanwhile.
fn round_trip(got: &mut Landing, size: usize) -> u64 {
    let data = pattern(size, size);
    let before = bytes_acked(&got.client);
    got.client.set_read_timeout(Some(WAIT)).expect("timeout");
    got.server.set_read_timeout(Some(WAIT)).expect("timeout");
    let server = &mut got.server;
    let client = &mut got.client;
    std::thread::scope(|s| {
        let echo = s.spawn(move || {
            let mut buf = vec![0u8; size];
            read_all(server, &mut buf).map(|()| {
                server.write_all(&buf).expect("the proxy's echo");
                buf
            })
        });
        client.write_all(&data).expect("the app's write");
        let mut back = vec![0u8; size];
        let read = read_all(client, &mut back);
        let at_proxy = echo.join().expect("the proxy thread");
        let at_proxy = at_proxy.unwrap_or_else(|e| panic!("{size} bytes at the proxy: {e}"));
        assert!(at_proxy == data, "{size} bytes reached the proxy altered");
        read.unwrap_or_else(|e| panic!("{size} bytes back at the app: {e}"));
        assert!(back == data, "{size} bytes came back to the app altered");
    });
    bytes_acked(&got.client) - before
}

/// `read_exact`, but retrying what the half-close bug's cousin can do to any blocking read of
/// an accelerated socket (an `EAGAIN` before the timeout), within [`WAIT`]; how many such
/// early returns it saw is printed.
fn read_all(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<()> {
    let deadline = Instant::now() + WAIT;
    let (mut at, mut early) = (0, 0);
    while at < buf.len() {
        match s.read(&mut buf[at..]) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => early += 1,
            Err(e) => return Err(e),
        }
    }
    if early > 0 {
        println!("read of {} bytes: {early} early EAGAIN", buf.len());
    }
    Ok(())
}

/// One half-close as a request/response client does it: the app sends, shuts its side down,
/// and waits for the answer in a blocking `recv()`; the proxy reads to the end, waits
/// [`ANSWER_DELAY`] and answers. `Ok` with the answer, or the error `recv()` returned and
/// after how long.
fn half_close(got: Landing) -> Result<(), (std::io::Error, Duration)> {
    let Landing {
        mut client,
        mut server,
        ..
    } = got;
    let proxy = std::thread::spawn(move || {
        server.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut request = Vec::new();
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + WAIT;
        loop {
            match server.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {}
                Err(e) => panic!("the proxy's read of the request: {e}"),
            }
        }
        assert_eq!(request, b"request", "the request at the proxy");
        std::thread::sleep(ANSWER_DELAY);
        // The app may have given up (the bug): then this write may fail.
        let _ = server.write_all(b"response");
    });
    client.write_all(b"request").expect("the app's request");
    client.shutdown(Shutdown::Write).expect("shutdown(SHUT_WR)");
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    let start = Instant::now();
    let mut answer = Vec::new();
    let result = client.read_to_end(&mut answer);
    let took = start.elapsed();
    drop(client);
    proxy.join().expect("the proxy thread");
    match result {
        Ok(_) => {
            assert_eq!(answer, b"response", "the answer at the app");
            Ok(())
        }
        Err(e) => Err((e, took)),
    }
}

/// [`HALF_CLOSES`] half-closes of captured connections; prints `HALFCLOSE eagain=N` and what
/// each failure was; the count.
fn half_closes(l: &Listeners, to: SocketAddr) -> usize {
    let mut failures = Vec::new();
    for _ in 0..HALF_CLOSES {
        let got = l.expect(APP_UID, APP_GID, to, "proxy");
        if let Err(failure) = half_close(got) {
            failures.push(failure);
        }
    }
    for (e, took) in &failures {
        println!("  half-close to {to}: recv() failed after {took:?}: {e}");
    }
    // The bug: EAGAIN before the answer could come (a timeout is EAGAIN too, but after WAIT).
    let eagain = failures
        .iter()
        .filter(|(e, took)| e.raw_os_error() == Some(libc::EAGAIN) && *took < ANSWER_DELAY)
        .count();
    assert_eq!(
        eagain,
        failures.len(),
        "half-close failures other than an early EAGAIN: {failures:?}"
    );
    println!("HALFCLOSE eagain={eagain} of={HALF_CLOSES} to={to}");
    eagain
}

/// Captured connections to `to` carry every size intact and are accelerated (or not).
fn sizes_through(l: &Listeners, to: SocketAddr, accelerated: bool) {
    for size in SIZES {
        let mut got = l.expect(APP_UID, APP_GID, to, "proxy");
        let acked = round_trip(&mut got, size);
        println!("captured {to}: {size} bytes there and back, app's tcpi_bytes_acked +{acked}");
        if size == 1 << 20 {
            if accelerated {
                assert!(
                    acked < ACCELERATED_ACKED,
                    "accelerated: {acked} of {size} bytes went over TCP"
                );
            } else {
                assert!(
                    acked >= size as u64,
                    "not accelerated: only {acked} of {size} bytes went over TCP"
                );
            }
        }
    }
}

/// Connections the capture leaves alone (the proxy's uid, an excluded port, an excluded
/// peer) reach their peer, over TCP, with their data intact.
fn uncaptured_untouched(l: &Listeners) {
    for (uid, gid, to, name) in [
        (PROXY_UID, PROXY_GID, addr(PEER, APP_PORT), "peer"),
        (
            APP_UID,
            APP_GID,
            addr(PEER, EXCLUDED_PORT),
            "peer excluded port",
        ),
        (
            APP_UID,
            APP_GID,
            addr(EXCLUDED_PEER, APP_PORT),
            "excluded peer",
        ),
    ] {
        let mut got = l.expect(uid, gid, to, name);
        assert_eq!(
            got.original, None,
            "SO_ORIGINAL_DST of an uncaptured connection"
        );
        let acked = round_trip(&mut got, 1 << 20);
        println!("uncaptured {to} as {uid}: 1 MiB there and back, tcpi_bytes_acked +{acked}");
        assert!(
            acked >= 1 << 20,
            "uncaptured {to}: only {acked} bytes went over TCP"
        );
    }
}

/// Capture and acceleration attached.
fn accelerated(l: &Listeners) {
    sizes_through(l, addr(PEER, APP_PORT), true);
    sizes_through(l, addr(PEER6, APP_PORT), true);
    uncaptured_untouched(l);
    half_closes(l, addr(PEER, APP_PORT));
}

/// The capture alone (the acceleration removed).
fn unaccelerated(l: &Listeners) {
    sizes_through(l, addr(PEER, APP_PORT), false);
    uncaptured_untouched(l);
    assert_eq!(half_closes(l, addr(PEER, APP_PORT)), 0);
}

/// Capture and acceleration pinned in the bpffs at `mount` by a process that has exited: this
/// one sees it work, counts the sockets in the pinned map, removes it, and sees connections
/// keep working.
fn pinned(l: &Listeners, mount: &Path, cgroup: &Path) {
    let bpffs = Bpffs::at(mount).expect("the test's bpffs");
    let open = || {
        Accelerated::open(&bpffs, cgroup)
            .expect("open")
            .expect("the acceleration is pinned")
    };
    let sockets = || {
        open()
            .sockets()
            .expect("read the pinned map")
            .expect("pinned")
    };
    // Not captured: not in the map.
    let uncaptured = l.expect(PROXY_UID, PROXY_GID, addr(PEER, APP_PORT), "peer");
    assert_eq!(sockets(), 0, "an uncaptured connection in the SOCKHASH");
    drop(uncaptured);
    // Captured: both ends in the map, accelerated, gone when closed.
    let mut got = l.expect(APP_UID, APP_GID, addr(PEER, APP_PORT), "proxy");
    assert_eq!(sockets(), 2, "both ends of a captured connection");
    let acked = round_trip(&mut got, 1 << 20);
    assert!(acked < ACCELERATED_ACKED, "pinned: {acked} bytes over TCP");
    drop(got);
    wait_until("the closed sockets leave the SOCKHASH", || sockets() == 0);
    // One connection open across the removal.
    let mut before = l.expect(APP_UID, APP_GID, addr(PEER, APP_PORT), "proxy");
    round_trip(&mut before, 65_537);
    open().remove().expect("remove the acceleration");
    assert!(Accelerated::open(&bpffs, cgroup).expect("open").is_none());
    let acked = round_trip(&mut before, 1 << 20);
    println!("a connection accelerated before the removal, after it: tcpi_bytes_acked +{acked}");
    drop(before);
    // New connections: captured (SO_ORIGINAL_DST right, checked by expect), not accelerated.
    sizes_through(l, addr(PEER, APP_PORT), false);
    assert_eq!(half_closes(l, addr(PEER, APP_PORT)), 0);
    println!("pinned phase: done");
}

#[test]
fn removing_the_capture_takes_its_acceleration_with_it() {
    let Some(bpffs) = kernel_support::ready() else {
        return;
    };
    let cgroup = TestCgroup::create("ebpf");
    let cfg = config();
    EbpfCapture::new(&cfg)
        .and_then(|mut c| c.install(bpffs.bpffs(), cgroup.path()))
        .expect("install the capture");
    let accelerated = Acceleration::for_capture(&cfg)
        .and_then(|mut a| a.install(bpffs.bpffs(), cgroup.path()))
        .expect("install the acceleration");
    drop(accelerated);
    Attachment::open(bpffs.bpffs(), cgroup.path())
        .expect("open the capture")
        .expect("installed")
        .remove()
        .expect("remove the capture, acceleration and all");
    assert_eq!(bpffs.contents(), Vec::<PathBuf>::new());
    assert!(Accelerated::open(bpffs.bpffs(), cgroup.path())
        .expect("open")
        .is_none());
    // Unpinned with nothing else holding them, its links are released and so detached.
}
