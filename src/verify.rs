//! Checking capture with real connections, as Istio's validation container does: a
//! connection from an application uid to an address routed out of the namespace must land on
//! the proxy's outbound capture port with that address as its original destination, and one
//! from the proxy's uid must not be captured. Run it before the proxy listens on its port.

use crate::{Capture, CaptureError};
use nftmesh_netlink::probe::{accept_within, connect_as, original_dst};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Why uid `app`'s connection to `to` did not reach `:port`, from what its `connect` returned.
/// Routing is decided before the output hook, so a destination the namespace has no route to
/// fails whether or not capture is in place: that is said as such, not as "not captured".
fn not_captured(
    app: u32,
    to: SocketAddr,
    port: u16,
    connected: std::io::Result<TcpStream>,
) -> String {
    use nix::errno::Errno;
    let errno = connected
        .err()
        .and_then(|e| e.raw_os_error())
        .map(Errno::from_raw);
    match errno {
        Some(Errno::ENETUNREACH | Errno::EHOSTUNREACH) => format!(
            "the probe destination {to} is unreachable from the namespace (no route), so \
             capture could not be checked: add a route (e.g. a default route) or give --probe \
             an address the namespace routes out"
        ),
        Some(Errno::EPERM | Errno::EACCES) => format!(
            "uid {app}'s connection to {to} was refused locally (a filter drops it), so it \
             never reached :{port}"
        ),
        _ => format!("uid {app}'s connection to {to} was not captured to :{port}"),
    }
}

/// What [`crate::Namespace::verify`] connects to and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Destination of the probe connections: routed out of the namespace and not excluded
    /// from capture (nothing needs to answer there).
    pub destination: SocketAddr,
    /// The uid (and gid) of the connection that must be captured.
    pub app_uid: u32,
    /// The proxy's uid, whose connection must not be captured.
    pub proxy_uid: u32,
    /// The outbound capture port the application's connection must land on.
    pub proxy_port: u16,
    /// How long the captured connection may take to arrive.
    pub wait: Duration,
}

impl Probe {
    /// A probe of `capture` to `destination` from `app_uid`, which must not be a proxy uid.
    pub fn new(
        capture: &Capture,
        destination: SocketAddr,
        app_uid: u32,
    ) -> Result<Self, CaptureError> {
        if capture.proxy_uids().contains(&app_uid) {
            return Err(CaptureError::Verify(format!(
                "app uid {app_uid} is a proxy uid; pick another"
            )));
        }
        Ok(Probe {
            destination,
            app_uid,
            proxy_uid: capture.proxy_uids().first().copied().unwrap_or(1337),
            proxy_port: capture.proxy_port(),
            wait: Duration::from_secs(2),
        })
    }
}

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// One line saying so.
    pub summary: String,
}

/// Run `probe` in the calling thread's namespace.
pub(crate) fn run(probe: &Probe) -> Result<Verified, CaptureError> {
    let (to, app, proxy, port) = (
        probe.destination,
        probe.app_uid,
        probe.proxy_uid,
        probe.proxy_port,
    );
    let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).map_err(|e| {
        CaptureError::Verify(format!(
            "cannot listen on :{port} (is the proxy already running?): {e}"
        ))
    })?;
    // Client and server run at the same time, so a lost connection costs one wait.
    let wait = probe.wait;
    let client = std::thread::spawn(move || connect_as(app, app, to, wait));
    let got = accept_within(&l, wait).map(|s| original_dst(&s));
    let connected = client
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("client thread panicked")));
    match got {
        Some(Some(orig)) if orig == to => {}
        Some(orig) => {
            return Err(CaptureError::Verify(format!(
                "uid {app}'s connection to {to} landed on :{port} with original destination {orig:?}, not {to}"
            )))
        }
        None => return Err(CaptureError::Verify(not_captured(app, to, port, connected))),
    }
    let short = Duration::from_millis(500);
    let client = std::thread::spawn(move || connect_as(proxy, proxy, to, short));
    let got = accept_within(&l, short);
    let _ = client.join();
    if got.is_some() {
        return Err(CaptureError::Verify(format!(
            "the proxy uid {proxy}'s connection to {to} was captured to :{port}"
        )));
    }
    Ok(Verified {
        summary: format!(
            "verified: uid {app} to {to} is captured to :{port}; the proxy uid {proxy} is not"
        ),
    })
}

/// What Istio's validation (`istio-iptables --run-validation`, the istio-validation
/// container) checks: that connections are captured, without knowing the capture's settings
/// beyond its ports. It runs as the proxy's uid without any capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IstioValidation {
    /// The outbound capture port (`-p`), listened on at the loopback address.
    pub proxy_port: u16,
    /// The inbound capture port (`-z`), listened on at the loopback address.
    pub inbound_capture_port: u16,
    /// The port the probe connects to (`--iptables-probe-port`, 15002).
    pub probe_port: u16,
    /// How long to keep trying (`--probe-timeout`, 5 s).
    pub timeout: Duration,
    /// Probe over IPv6 (`::6` → `::1`) instead of IPv4 (`127.0.0.6` → `127.0.0.1`).
    pub ipv6: bool,
}

/// Istio's validation, exactly: listen on the loopback address (`127.0.0.1`, or `::1` with
/// IPv6) at the proxy port and the inbound capture port, connect from that address to the
/// passthrough address (`127.0.0.6`, `::6`) at the probe port once a second, and succeed when
/// a listener accepts a connection whose original destination port is the probe port: the
/// capture redirected it. Gives up after the timeout ([`CaptureError::Verify`]). Needs no
/// capability. Runs in the calling thread's network namespace; every loop is bounded by the
/// timeout.
pub fn istio_validation(v: &IstioValidation) -> Result<Verified, CaptureError> {
    use std::net::{IpAddr, Ipv6Addr};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;
    let (listen_ip, server_ip): (IpAddr, IpAddr) = if v.ipv6 {
        (
            Ipv6Addr::LOCALHOST.into(),
            crate::netlink::routes::LOOPBACK_V6.into(),
        )
    } else {
        (
            Ipv4Addr::LOCALHOST.into(),
            Ipv4Addr::new(127, 0, 0, 6).into(),
        )
    };
    let mut listeners = Vec::new();
    for port in [v.proxy_port, v.inbound_capture_port] {
        // A port already taken (the proxy running) leaves the other listener.
        if let Ok(l) = TcpListener::bind((listen_ip, port)) {
            if l.set_nonblocking(true).is_ok() {
                listeners.push(l);
            }
        }
    }
    if listeners.is_empty() {
        return Err(CaptureError::Verify(format!(
            "no listener available on {listen_ip} ports {} and {}",
            v.proxy_port, v.inbound_capture_port
        )));
    }
    let deadline = Instant::now() + v.timeout;
    let done = Arc::new(AtomicBool::new(false));
    let to = SocketAddr::new(server_ip, v.probe_port);
    let client = {
        let done = done.clone();
        std::thread::spawn(move || {
            // Once a second until found or the deadline, as Istio's client does; the source
            // is the loopback address (Istio binds it), so the capture sees lo traffic.
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = connect_from(listen_ip, to, left.min(Duration::from_secs(1)));
                let pause = Instant::now() + Duration::from_secs(1);
                while !done.load(Ordering::Relaxed) && Instant::now() < pause.min(deadline) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        })
    };
    let mut found = None;
    'poll: while Instant::now() < deadline {
        for l in &listeners {
            if let Ok((s, _)) = l.accept() {
                let _ = s.set_nonblocking(false);
                let orig = original_dst(&s);
                // Istio echoes the original port back for debugging.
                if let Some(o) = orig {
                    let _ = std::io::Write::write_all(&mut &s, o.port().to_string().as_bytes());
                }
                if orig.map(|o| o.port()) == Some(v.probe_port) {
                    found = Some(l.local_addr().map(|a| a.port()).unwrap_or(0));
                    break 'poll;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done.store(true, Ordering::Relaxed);
    let _ = client.join();
    match found {
        Some(port) => Ok(Verified {
            summary: format!(
                "validation passed: a connection to {to} was captured to :{port} with its original port {}",
                v.probe_port
            ),
        }),
        None => Err(CaptureError::Verify(format!(
            "no connection to {to} was captured to :{} or :{} within {:?}: capture is not in place",
            v.proxy_port, v.inbound_capture_port, v.timeout
        ))),
    }
}

/// Connect to `to` from `from` (any port) within `wait`.
fn connect_from(
    from: std::net::IpAddr,
    to: SocketAddr,
    wait: Duration,
) -> std::io::Result<std::net::TcpStream> {
    use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrStorage};
    let family = if from.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(SocketAddr::new(from, 0)),
    )?;
    let stream = std::net::TcpStream::from(fd);
    // A bound socket connects with a timeout through a non-blocking connect and a wait.
    stream.set_nonblocking(true)?;
    let _ = nix::sys::socket::connect(
        std::os::fd::AsRawFd::as_raw_fd(&stream),
        &SockaddrStorage::from(to),
    );
    let deadline = std::time::Instant::now() + wait;
    loop {
        match stream.peer_addr() {
            Ok(_) => break,
            Err(_) if std::time::Instant::now() < deadline => {
                if let Ok(Some(e)) = stream.take_error() {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}
