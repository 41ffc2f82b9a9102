//! Watching a namespace's policy routing: a [`RouteMonitor`] is an rtnetlink socket joined to
//! the groups that announce rule, route and IPv6 address changes (`RTNLGRP_IPV4_RULE`,
//! `RTNLGRP_IPV6_RULE`, `RTNLGRP_IPV4_ROUTE`, `RTNLGRP_IPV6_ROUTE`, `RTNLGRP_IPV6_IFADDR`),
//! so a keeper of TPROXY or ambient routing (and of `::6` on `lo`) learns at once that it may
//! have changed, instead of at its next periodic check. It says only *that* something
//! changed: the keeper reads the routing back to see what.

use crate::error::NetlinkError;
use nix::sys::socket::{
    bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// The legacy group bits (`1 << (RTNLGRP_x - 1)`) of the groups watched.
const GROUPS: u32 = (1 << (7 - 1)) // RTNLGRP_IPV4_ROUTE
    | (1 << (8 - 1)) // RTNLGRP_IPV4_RULE
    | (1 << (9 - 1)) // RTNLGRP_IPV6_IFADDR
    | (1 << (11 - 1)) // RTNLGRP_IPV6_ROUTE
    | (1 << (19 - 1)); // RTNLGRP_IPV6_RULE
/// Reads per drain at most: past it, the rest is read next time (the keeper checks anyway).
const MAX_READS: usize = 256;

/// What the pending routing notifications say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteChanges {
    /// Notifications read (rules, routes, addresses added or deleted).
    pub events: u32,
    /// Notifications were lost (`ENOBUFS`): something changed.
    pub overrun: bool,
}

impl RouteChanges {
    /// Whether the routing may have changed.
    pub fn any(&self) -> bool {
        self.overrun || self.events > 0
    }
}

/// A routing change listener in one network namespace.
#[derive(Debug)]
pub struct RouteMonitor {
    sock: OwnedFd,
    buf: Vec<u8>,
}

impl RouteMonitor {
    /// Listen in the calling thread's network namespace (non-blocking).
    pub fn open() -> Result<Self, NetlinkError> {
        let io = |what: &'static str| {
            move |e: nix::errno::Errno| {
                NetlinkError::io(what, std::io::Error::from_raw_os_error(e as i32))
            }
        };
        let sock = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(io("route monitor socket"))?;
        bind(sock.as_raw_fd(), &NetlinkAddr::new(0, GROUPS))
            .map_err(io("joining the routing change groups"))?;
        Ok(RouteMonitor {
            sock,
            buf: vec![0u8; 32 * 1024],
        })
    }

    /// Read every pending notification without blocking.
    pub fn drain(&mut self) -> Result<RouteChanges, NetlinkError> {
        let mut out = RouteChanges::default();
        for _ in 0..MAX_READS {
            match recv(self.sock.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => break,
                Ok(n) => {
                    out.events += crate::codec::wire::messages(&self.buf[..n])
                        .map(|m| m.len() as u32)
                        .unwrap_or(1);
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::ENOBUFS) => out.overrun = true,
                Err(e) => {
                    return Err(NetlinkError::io(
                        "reading routing notifications",
                        std::io::Error::from_raw_os_error(e as i32),
                    ))
                }
            }
        }
        Ok(out)
    }
}

impl AsFd for RouteMonitor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_or_address_change_in_the_namespace_is_seen() {
        // A namespace of its own (root needed; the suite runs as root).
        let seen = crate::netns::run_in_new(|| {
            let mut m = RouteMonitor::open()?;
            assert!(!m.drain()?.any(), "nothing yet");
            let ip = |args: &[&str]| {
                std::process::Command::new("ip")
                    .args(args)
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            };
            assert!(ip(&["link", "set", "lo", "up"]));
            m.drain()?;
            assert!(ip(&["rule", "add", "fwmark", "1337", "lookup", "133"]));
            let rule = m.drain()?;
            assert!(ip(&["-6", "addr", "add", "::6/128", "dev", "lo"]));
            let addr = m.drain()?;
            Ok::<_, NetlinkError>((rule, addr))
        });
        match seen {
            Ok(Ok((rule, addr))) => {
                assert!(rule.any(), "{rule:?}");
                assert!(addr.any(), "{addr:?}");
            }
            Ok(Err(e)) | Err(e) => {
                let why = format!("cannot make a namespace: {e}");
                assert!(std::env::var_os("CI").is_none(), "{why}");
                eprintln!("SKIP: {why}");
            }
        }
    }
}
