//! Connections per second through the outbound redirect: a client (root, not the proxy uid)
//! connects to 10.77.0.2:8080, routed out of a veth inside the namespace; the capture redirects
//! it to a listener on 15001 in the same namespace. Bounded: a fixed number of connections, each
//! connect with a timeout; the listener stops when the client is done.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Give the calling thread's namespace `lo` and a veth with 10.77.0.1/24 (so 10.77.0.2 routes).
pub fn topology() -> Result<(), String> {
    for args in [
        &["link", "set", "lo", "up"][..],
        &["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
        &["addr", "add", "10.77.0.1/24", "dev", "v0"],
        &["link", "set", "v0", "up"],
        &["link", "set", "v1", "up"],
    ] {
        let o = std::process::Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!(
                "ip {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
    }
    Ok(())
}

/// Connections per second over `count` connections.
pub fn rate(count: usize) -> Result<f64, String> {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 15001)).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (s2, a2) = (stop.clone(), accepted.clone());
    let acceptor = std::thread::spawn(move || {
        for c in listener.incoming() {
            if s2.load(Ordering::Relaxed) {
                break;
            }
            if c.is_ok() {
                a2.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let dst = SocketAddr::from((Ipv4Addr::new(10, 77, 0, 2), 8080));
    let t = Instant::now();
    let mut failed = None;
    for _ in 0..count {
        match TcpStream::connect_timeout(&dst, Duration::from_secs(2)) {
            Ok(s) => {
                // Reset instead of TIME_WAIT, so thousands of connections do not exhaust ports.
                let _ = nix::sys::socket::setsockopt(
                    &s,
                    nix::sys::socket::sockopt::Linger,
                    &libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    },
                );
            }
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    let elapsed = t.elapsed();
    // Connections complete in the kernel before they are accepted: wait (bounded) until the
    // listener has taken every one, then stop it with one last connection.
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted.load(Ordering::Relaxed) < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, 15001)),
        Duration::from_secs(1),
    );
    acceptor.join().map_err(|_| "acceptor panicked")?;
    let accepted = accepted.load(Ordering::Relaxed);
    if let Some(e) = failed {
        return Err(format!("connect through the redirect: {e}"));
    }
    if accepted < count {
        return Err(format!("{accepted} of {count} connections reached :15001"));
    }
    Ok(count as f64 / elapsed.as_secs_f64())
}
