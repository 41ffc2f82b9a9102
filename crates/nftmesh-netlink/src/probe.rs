//! Real connections for checking capture, as `nftmesh verify` and the traffic tests do: connect
//! as a given uid/gid (the capture tells the proxy from applications by socket owner) and read
//! where a redirected connection was originally going.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Switch the calling thread, and only it, to `uid`/`gid`. Use on a thread of its own.
pub fn become_user(uid: u32, gid: u32) -> std::io::Result<()> {
    crate::os::set_thread_ids(uid, gid)
}

/// Connect to `to` within `wait` from a new thread running as `uid`/`gid`.
pub fn connect_as(
    uid: u32,
    gid: u32,
    to: SocketAddr,
    wait: Duration,
) -> std::io::Result<TcpStream> {
    std::thread::spawn(move || {
        become_user(uid, gid)?;
        TcpStream::connect_timeout(&to, wait)
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("client thread panicked")))
}

/// Where a connection accepted on a redirect target was going before NAT redirected it; `None`
/// when it was not redirected (or conntrack has no entry).
pub fn original_dst(s: &TcpStream) -> Option<SocketAddr> {
    let v6 = s.local_addr().ok()?.is_ipv6();
    crate::os::original_dst(s.as_raw_fd(), v6)
}

/// Accept one connection on a non-blocking or blocking listener within `wait` (polling every
/// 5 ms); the accepted stream.
pub fn accept_within(l: &TcpListener, wait: Duration) -> Option<TcpStream> {
    l.set_nonblocking(true).ok()?;
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Ok((s, _)) = l.accept() {
            let _ = s.set_nonblocking(false);
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}
