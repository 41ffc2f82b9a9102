//! One of the two fenced modules with `unsafe` (the other is [`crate::codec::nftnl`]): the
//! system calls the crate makes beyond what its dependencies wrap: the netfilter socket that
//! can move between threads, socket options, `dup`, `fork` for the socket hand-off,
//! per-thread `setresuid`/`setresgid`, and `SO_ORIGINAL_DST`.
#![allow(unsafe_code)]

/// A new descriptor of the same open file as `fd` (`dup`), owned by the caller.
pub fn dup_owned(fd: std::os::fd::RawFd) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: `dup` has no memory effects; on success it returns a fresh descriptor that
    // nothing else refers to, so it can be owned here.
    let new = unsafe { libc::dup(fd) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `new` is a valid descriptor owned by nobody else (see above).
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(new) })
}

/// Keep `fd` open in a child process until this process has exited, then close it there.
///
/// Closing the last descriptor of a netfilter socket that committed a transaction makes the
/// kernel wait for its deferred destruction work (an RCU grace period, ~10 ms here) before
/// `close` returns. A command-line process that is about to exit hands that wait to a child:
/// the child holds a duplicate, waits until the pipe to this process reads end-of-file (this
/// process has exited), then closes it. Falls back to closing here if the fork fails.
pub fn release_after_exit(fd: std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    let Ok((read_end, write_end)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
        return;
    };
    // SAFETY: the child only makes async-signal-safe system calls (close, read, _exit) before
    // exiting; it touches no lock, allocator or Rust state another thread could hold.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // SAFETY: plain system calls on descriptors this child owns; `_exit` never returns
            // and skips every destructor and atexit handler of the parent's state.
            unsafe {
                libc::close(0);
                libc::close(1);
                libc::close(2);
                libc::close(write_end.as_raw_fd());
                let mut b = 0u8;
                while libc::read(read_end.as_raw_fd(), (&mut b as *mut u8).cast(), 1) > 0 {}
                // Let the kernel's destruction work finish on its own first (a few RCU grace
                // periods): releasing the socket while it is pending makes the release flush it
                // under the commit mutex, which stalls the namespace's next transaction.
                let pause = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 100_000_000,
                };
                libc::nanosleep(&pause, std::ptr::null_mut());
                libc::close(fd.as_raw_fd());
                libc::_exit(0);
            }
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(read_end);
            drop(fd);
            // The write end closes when this process exits, which releases the child.
            std::mem::forget(write_end);
        }
        Err(_) => drop(fd),
    }
}

/// Switch the calling thread, and only it, to `uid`/`gid` (raw `setresgid`/`setresuid`
/// system calls; glibc's wrappers would change every thread of the process).
pub fn set_thread_ids(uid: u32, gid: u32) -> std::io::Result<()> {
    // SAFETY: the system calls take plain integers and touch no memory of ours.
    let rc = unsafe {
        if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0 {
            -1
        } else {
            libc::syscall(libc::SYS_setresuid, uid, uid, uid)
        }
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The original destination of a connection NAT redirected (`SO_ORIGINAL_DST`, or
/// `IP6T_SO_ORIGINAL_DST` for IPv6), read from the accepted socket `fd`.
pub fn original_dst(fd: std::os::fd::RawFd, ipv6: bool) -> Option<std::net::SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    if !ipv6 {
        // SAFETY: a zeroed sockaddr_in is a valid value of the type.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: the buffer is a sockaddr_in of the given length; the kernel writes at most
        // `len` bytes into it.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IP,
                libc::SO_ORIGINAL_DST,
                (&mut sa as *mut libc::sockaddr_in).cast(),
                &mut len,
            )
        };
        (rc == 0).then(|| {
            SocketAddr::from((
                Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
                u16::from_be(sa.sin_port),
            ))
        })
    } else {
        // SAFETY: a zeroed sockaddr_in6 is a valid value of the type.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        // SAFETY: as above, with a sockaddr_in6.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                libc::IP6T_SO_ORIGINAL_DST,
                (&mut sa as *mut libc::sockaddr_in6).cast(),
                &mut len,
            )
        };
        (rc == 0).then(|| {
            SocketAddr::from((
                Ipv6Addr::from(sa.sin6_addr.s6_addr),
                u16::from_be(sa.sin6_port),
            ))
        })
    }
}

/// Set a socket option of the open socket `fd` to `value` (of the C type the option takes).
fn set_option<T>(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    // SAFETY: `value` points to a live `T` and the length passed is its size, so the kernel
    // reads exactly that many bytes and writes none; a wrong fd, option or size is an error
    // return.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Set an `int`-valued socket option of the open socket `fd`.
pub fn set_int_option(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    set_option(fd, level, name, &value)
}

/// Make blocking receives on the open socket `fd` give up after `timeout` (`SO_RCVTIMEO`).
pub fn set_recv_timeout(
    fd: std::os::fd::RawFd,
    timeout: std::time::Duration,
) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    set_option(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
}

/// A netfilter netlink socket (libmnl's) that can move to another thread.
pub struct NfSocket(mnl::Socket);

// SAFETY: `mnl::Socket` is not `Send` only because it holds a raw pointer to libmnl's
// `struct mnl_socket` (a descriptor and its bound address), which it allocates and frees
// itself. libmnl keeps no thread-local or global state for it, and `NfSocket` owns it alone
// (no copy of the pointer exists elsewhere), so using and dropping it on another thread than
// the one that opened it is sound. It is not `Sync`: `&NfSocket` gives no access from two
// threads at once.
unsafe impl Send for NfSocket {}

impl NfSocket {
    /// Open and bind a netfilter netlink socket in the calling thread's network namespace,
    /// closed on exec: a child another thread spawns must not keep it (and with it the tables
    /// an owned install tied to it) alive. libmnl opens it without `SOCK_CLOEXEC`; the flag is
    /// set right after.
    pub fn open() -> std::io::Result<Self> {
        let s = mnl::Socket::new(mnl::Bus::Netfilter).map(NfSocket)?;
        set_cloexec(std::os::fd::AsRawFd::as_raw_fd(&s))?;
        Ok(s)
    }

    /// Send one buffer; the number of bytes sent.
    pub fn send(&self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.send(bytes)
    }

    /// Receive into `buf`; the number of bytes received.
    pub fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.recv(buf)
    }

    /// The socket's netlink port id (the address the kernel bound it to).
    pub fn port_id(&self) -> u32 {
        self.0.portid()
    }
}

impl std::os::fd::AsFd for NfSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsRawFd;
        // SAFETY: the mnl socket owns its descriptor and closes it only when dropped, so it
        // stays open for as long as `&self` (the borrow's lifetime) lives.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0.as_raw_fd()) }
    }
}

/// Close the open descriptor `fd` on exec (`FD_CLOEXEC`).
pub fn set_cloexec(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(std::io::Error::from)?;
    Ok(())
}

/// Make reads and writes of the open descriptor `fd` non-blocking (`O_NONBLOCK`).
pub fn set_nonblocking(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(std::io::Error::from)?;
    Ok(())
}

impl std::os::fd::AsRawFd for NfSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn netlink_sockets_are_closed_on_exec() {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        let s = NfSocket::open().expect("a netfilter netlink socket needs no privilege");
        let flags = fcntl(s.as_raw_fd(), FcntlArg::F_GETFD).unwrap();
        assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
    }
}
