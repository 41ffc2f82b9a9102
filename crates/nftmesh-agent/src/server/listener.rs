//! The API socket: bound (mode 0600) before the registry is adopted, listening only after.

use super::*;

/// The API socket: a stale socket file replaced, created with mode 0600.
pub(super) fn bind(path: &Path) -> Result<UnixListener, AgentError> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(setup(
                format!("socket {}", path.display()),
                "exists and is not a socket",
            ));
        }
        // The state dir's lock is held: a socket left here is a dead agent's (or one of
        // another state dir's agent, which must not share the socket path).
        if UnixStream::connect(path).is_ok() {
            return Err(setup(
                format!("socket {}", path.display()),
                "another agent (of another state dir) is listening there",
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let err = |e: nix::errno::Errno| setup(format!("socket {}", path.display()), e);
    // Bound now, listening only once the registry's pods are adopted ([`listen`]): until
    // then a client's connect is refused, so a socket that answers has its pods back.
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(err)?;
    let addr = UnixAddr::new(path).map_err(err)?;
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr);
    nix::sys::stat::umask(old);
    bound.map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| setup(format!("socket {}", path.display()), e))?;
    Ok(UnixListener::from(fd))
}

/// Start accepting on the socket [`bind`] made.
pub(super) fn listen(l: &UnixListener, path: &Path) -> Result<(), AgentError> {
    let backlog =
        nix::sys::socket::Backlog::new(1024).unwrap_or(nix::sys::socket::Backlog::MAXCONN);
    nix::sys::socket::listen(l, backlog).map_err(|e| setup(format!("socket {}", path.display()), e))
}
