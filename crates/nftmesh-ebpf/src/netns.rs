//! Which network namespace a capture applies in: the programs compare each socket's namespace
//! cookie with the one the capture was installed for.
//!
//! A cgroup's processes may use sockets of several network namespaces (a process that entered
//! another one, a host-network helper in the pod's cgroup); nf_tables' capture applies in one
//! namespace only, so the eBPF capture does too when it is given one.

use crate::error::EbpfError;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// `SO_NETNS_COOKIE` (Linux 5.14): a socket's network namespace cookie.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// A network namespace as BPF programs tell namespaces apart: its cookie, a 64-bit number the
/// kernel gives each namespace once and never reuses while the system runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetnsCookie(u64);

impl NetnsCookie {
    /// The calling thread's network namespace.
    pub fn current() -> Result<Self, EbpfError> {
        cookie_here().map_err(|source| EbpfError::Netns { path: None, source })
    }

    /// The network namespace `path` names (`/var/run/netns/NAME`, `/proc/PID/ns/net`, ...),
    /// read from a thread that enters it for the purpose; the caller's threads stay where they
    /// are.
    pub fn of(path: &Path) -> Result<Self, EbpfError> {
        let err = |source| EbpfError::Netns {
            path: Some(path.to_path_buf()),
            source,
        };
        let ns = std::fs::File::open(path).map_err(err)?;
        let entered = std::thread::spawn(move || {
            // SAFETY: setns(2) with a descriptor this thread owns (it lives until the end of
            // the closure) and CLONE_NEWNET only changes this thread's network namespace, a
            // thread that exits right after; it reads no memory of ours. An fd that is not a
            // network namespace is refused with EINVAL.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            cookie_here()
        })
        .join()
        .map_err(|_| {
            err(std::io::Error::other(
                "the thread reading the cookie panicked",
            ))
        })?;
        entered.map_err(err)
    }

    /// A cookie as the kernel reported it.
    pub fn from_raw(cookie: u64) -> Self {
        NetnsCookie(cookie)
    }

    /// The number the programs compare.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// The cookie of the calling thread's network namespace, read from a socket made for it.
fn cookie_here() -> Result<NetnsCookie, std::io::Error> {
    // SAFETY: socket(2) takes no pointers; a negative result is an error, checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), is open and owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` (8) bytes into `cookie`, a live u64, and the
    // actual length into `len`, a live socklen_t; `fd` is an open socket.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<u64>() || cookie == 0 {
        return Err(std::io::Error::other(format!(
            "SO_NETNS_COOKIE gave {len} byte(s), cookie {cookie}"
        )));
    }
    Ok(NetnsCookie(cookie))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_namespace_has_a_stable_nonzero_cookie() {
        let a = NetnsCookie::current().expect("SO_NETNS_COOKIE (Linux 5.14+)");
        let b = NetnsCookie::current().unwrap();
        assert_eq!(a, b);
        assert_ne!(a.get(), 0);
        let by_path = NetnsCookie::of(Path::new("/proc/self/ns/net")).unwrap();
        assert_eq!(by_path, a);
    }

    #[test]
    fn a_path_that_is_not_a_namespace_is_an_error_naming_it() {
        let e = NetnsCookie::of(Path::new("/proc/self/status")).unwrap_err();
        assert!(e.to_string().contains("/proc/self/status"), "{e}");
        let e = NetnsCookie::of(Path::new("/nonexistent/ns")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ns"), "{e}");
    }
}
