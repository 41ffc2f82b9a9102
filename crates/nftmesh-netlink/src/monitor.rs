//! Watching a namespace's nf_tables changes: a [`Monitor`] is a netfilter socket joined to
//! the `NFNLGRP_NFTABLES` group, on which the kernel announces every committed object change
//! (tables, chains, rules, sets, elements) followed by a `NEWGEN` message naming the
//! generation and the thread that committed it, sent with the committing socket's netlink
//! port id. [`Monitor::drain`] reads what is pending without blocking and reports which
//! tables commits of *other* committers touched, so a keeper of tables can tell tampering
//! from its own writes: by its sockets' port ids ([`Own::Ports`], right in a PID namespace
//! too) or by its thread ids ([`Own::Threads`], which the kernel reports from the initial PID
//! namespace: wrong inside another).

use crate::codec::nftnl::msg_type;
use crate::codec::sys::*;
use crate::codec::wire;
use crate::error::NetlinkError;
use crate::os::NfSocket;
use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// `NFNLGRP_NFTABLES`.
const NFNLGRP_NFTABLES: libc::c_int = 7;
const NFT_MSG_NEWGEN: u16 = 15;
const NFTA_GEN_PROC_PID: u16 = 2;
/// Reads per drain at most (each up to the buffer's size): a burst larger than this is
/// reported as an overrun, which asks for a full check.
const MAX_READS: usize = 256;

/// Whose commits are the keeper's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own<'a> {
    /// Commits sent through the netfilter sockets with these netlink port ids.
    Ports(&'a [u32]),
    /// Commits by these thread ids (`NFTA_GEN_PROC_PID`).
    Threads(&'a [u32]),
}

impl Own<'_> {
    fn is_own(&self, port: u32, tid: Option<u32>) -> bool {
        match self {
            Own::Ports(p) => p.contains(&port),
            Own::Threads(t) => tid.is_some_and(|tid| t.contains(&tid)),
        }
    }
}

/// What the pending notifications say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Tables that commits of other threads than the keeper's touched.
    pub foreign_tables: BTreeSet<String>,
    /// Commits by other threads.
    pub foreign_commits: u32,
    /// Commits by the keeper's own thread.
    pub own_commits: u32,
    /// Notifications were lost (`ENOBUFS`) or more were pending than one drain reads: what
    /// changed is unknown, check everything.
    pub overrun: bool,
}

impl Changes {
    /// Whether anything calls for a look at the tables.
    pub fn any(&self) -> bool {
        self.overrun || !self.foreign_tables.is_empty()
    }
}

/// A change notification listener in one network namespace.
pub struct Monitor {
    sock: NfSocket,
    buf: Vec<u8>,
    /// Tables named by the messages of the commit being read (until its `NEWGEN`).
    pending: BTreeSet<String>,
}

impl Monitor {
    /// Listen in the calling thread's network namespace (non-blocking).
    pub fn open() -> Result<Self, NetlinkError> {
        let sock = NfSocket::open().map_err(|e| NetlinkError::io("monitor socket open", e))?;
        let fd = sock.as_raw_fd();
        crate::os::set_int_option(
            fd,
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            NFNLGRP_NFTABLES,
        )
        .map_err(|e| NetlinkError::io("joining the nf_tables change group", e))?;
        let size = 4 << 20;
        crate::os::set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size)
            .or_else(|_| crate::os::set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, size))
            .map_err(|e| NetlinkError::io("setsockopt SO_RCVBUF", e))?;
        crate::os::set_nonblocking(fd).map_err(|e| NetlinkError::io("O_NONBLOCK", e))?;
        Ok(Monitor {
            sock,
            buf: vec![0u8; 64 * 1024],
            pending: BTreeSet::new(),
        })
    }

    /// Read every pending notification without blocking; the commits `own` names are the
    /// keeper's own.
    pub fn drain(&mut self, own: Own<'_>) -> Result<Changes, NetlinkError> {
        let mut out = Changes::default();
        for _ in 0..MAX_READS {
            match self.sock.recv(&mut self.buf) {
                Ok(0) => return Ok(out),
                Ok(n) => parse(&self.buf[..n], own, &mut self.pending, &mut out),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(out),
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        out.overrun = true;
                        self.pending.clear();
                    }
                    _ => return Err(NetlinkError::io("reading nf_tables notifications", e)),
                },
            }
        }
        out.overrun = true;
        Ok(out)
    }
}

impl AsFd for Monitor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// Fold the notifications in `buf` into `out`: each object message's table is remembered
/// until the `NEWGEN` that ends its commit says who committed. Malformed messages are
/// skipped (and make the result an overrun: something changed that could not be read).
pub fn parse(buf: &[u8], own: Own<'_>, pending: &mut BTreeSet<String>, out: &mut Changes) {
    let Ok(msgs) = wire::messages(buf) else {
        out.overrun = true;
        pending.clear();
        return;
    };
    for m in msgs {
        if nfnl_subsys_id(m.ty) != NFNL_SUBSYS_NFTABLES || m.payload.len() < 4 {
            continue;
        }
        let Ok(at) = wire::attrs(&m.payload[4..]) else {
            out.overrun = true;
            continue;
        };
        if m.ty == msg_type(NFT_MSG_NEWGEN) {
            let pid = at.be32(NFTA_GEN_PROC_PID);
            if own.is_own(m.pid, pid) {
                out.own_commits += 1;
            } else {
                out.foreign_commits += 1;
                out.foreign_tables.append(pending);
            }
            pending.clear();
        } else if let Some(table) = at.string(NFTA_TABLE_NAME) {
            // Attribute 1 is the table's name in every object message (NFTA_TABLE_NAME,
            // NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE, NFTA_SET_ELEM_LIST_TABLE).
            pending.insert(table);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::codec::wire::testing::attr;

    fn msg(ty: u16, attrs: &[u8]) -> Vec<u8> {
        let mut m = ((20 + attrs.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&msg_type(ty).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[NFPROTO_INET, 0, 0, 0]);
        m.extend_from_slice(attrs);
        m
    }

    fn gen(pid: u32) -> Vec<u8> {
        gen_from(0, pid)
    }

    /// A `NEWGEN` sent for the socket with port id `port` by thread `tid`.
    fn gen_from(port: u32, tid: u32) -> Vec<u8> {
        let mut a = attr(1, &7u32.to_be_bytes());
        a.extend(attr(NFTA_GEN_PROC_PID, &tid.to_be_bytes()));
        a.extend(attr(3, b"nft\0"));
        let mut m = msg(NFT_MSG_NEWGEN, &a);
        m[12..16].copy_from_slice(&port.to_ne_bytes());
        m
    }

    #[test]
    fn own_commits_are_told_by_port_id_whatever_thread_id_the_kernel_reports() {
        // In a PID namespace the kernel reports the global thread id (here 90210), which the
        // keeper cannot know; the port id of its socket (77) is what its commits carry.
        let mut buf = msg(NFT_MSG_NEWRULE, &attr(1, b"istio-proxy-nat\0"));
        buf.extend(gen_from(77, 90210));
        // Another process whose thread id happens to equal one of the keeper's.
        buf.extend(msg(NFT_MSG_DELRULE, &attr(1, b"istio-proxy-nat\0")));
        buf.extend(gen_from(5000, 100));
        let (mut pending, mut out) = (BTreeSet::new(), Changes::default());
        parse(&buf, Own::Ports(&[77]), &mut pending, &mut out);
        assert_eq!((out.own_commits, out.foreign_commits), (1, 1));
        let (mut pending, mut out) = (BTreeSet::new(), Changes::default());
        parse(&buf, Own::Threads(&[100]), &mut pending, &mut out);
        assert_eq!(
            (out.own_commits, out.foreign_commits),
            (1, 1),
            "by thread: the keeper's own commit looks foreign and the other one its own"
        );
    }

    #[test]
    fn foreign_commits_name_their_tables_and_own_commits_do_not() {
        // `nft flush table inet istio-proxy-nat` by pid 4242: DELRULE messages, then NEWGEN.
        let mut buf = msg(NFT_MSG_DELRULE, &attr(1, b"istio-proxy-nat\0"));
        buf.extend(msg(NFT_MSG_DELRULE, &attr(1, b"istio-proxy-nat\0")));
        buf.extend(gen(4242));
        // Our own apply (tid 100) of the same table.
        buf.extend(msg(NFT_MSG_NEWRULE, &attr(1, b"istio-proxy-nat\0")));
        buf.extend(gen(100));
        let (mut pending, mut out) = (BTreeSet::new(), Changes::default());
        parse(&buf, Own::Threads(&[100]), &mut pending, &mut out);
        assert_eq!(out.foreign_commits, 1);
        assert_eq!(out.own_commits, 1);
        assert_eq!(
            out.foreign_tables.into_iter().collect::<Vec<_>>(),
            ["istio-proxy-nat"]
        );
        assert!(!out.overrun && pending.is_empty());
    }

    #[test]
    fn a_commit_split_over_two_reads_is_joined() {
        let (mut pending, mut out) = (BTreeSet::new(), Changes::default());
        parse(
            &msg(NFT_MSG_NEWRULE, &attr(1, b"t\0")),
            Own::Threads(&[1]),
            &mut pending,
            &mut out,
        );
        assert!(!out.any());
        parse(&gen(2), Own::Threads(&[1]), &mut pending, &mut out);
        assert!(out.any() && out.foreign_tables.contains("t"));
    }

    #[test]
    fn garbage_is_an_overrun_never_a_panic() {
        for bytes in crate::codec::wire::testing::garbage(0x2545_f491, 400) {
            let (mut pending, mut out) = (BTreeSet::new(), Changes::default());
            parse(&bytes, Own::Ports(&[1]), &mut pending, &mut out);
        }
        let (mut pending, mut out) = (BTreeSet::new(), Changes::default());
        parse(&[0xff; 20], Own::Ports(&[1]), &mut pending, &mut out);
        assert!(out.overrun);
    }
}
