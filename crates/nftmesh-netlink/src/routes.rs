//! TPROXY policy routing over rtnetlink (`neli`): packets carrying the TPROXY mark look up a
//! dedicated table whose `local default dev lo` route delivers them to the local socket, for
//! IPv4 and IPv6; and `::6/128` on `lo` (the IPv6 twin of 127.0.0.6) when IPv6 is on. This is
//! what Istio sets up for TPROXY, also over netlink. Every call is idempotent.

use crate::codec::wire::{self, field};
use crate::error::NetlinkError;
use neli::consts::nl::{NlmF, NlmFFlags};
use neli::consts::rtnl::{
    Ifa, IfaF, IfaFFlags, RtAddrFamily, RtScope, RtTable, Rta, Rtm, RtmFFlags, Rtn, Rtprot,
};
use neli::consts::socket::NlFamily;
use neli::nl::{NlPayload, Nlmsghdr};
use neli::rtnl::{Ifaddrmsg, Rtattr, Rtmsg};
use neli::socket::NlSocket;
use neli::types::RtBuffer;
use neli::ToBytes;
use std::net::Ipv6Addr;

const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_TABLE: u16 = 15;
const FRA_FWMASK: u16 = 16;
const FR_ACT_TO_TBL: u8 = 1;
/// Priority of the fwmark rule (below the main table's 32766, as `ip rule` would pick).
pub const RULE_PRIORITY: u32 = 32765;
/// The IPv6 inbound-passthrough source Istio adds to `lo`.
pub const LOOPBACK_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// The policy routing that delivers marked packets to local transparent sockets: `ip rule
/// fwmark MARK[/MASK] pref PRIORITY lookup TABLE` and `local default dev lo table TABLE`, per
/// family. Sidecar TPROXY mode: mark 1337, table 133 ([`TproxyRouting::sidecar`]); ambient:
/// 0x111/0xfff, table 100, preference 32764 ([`TproxyRouting::ambient`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TproxyRouting {
    /// The packet mark the rule selects (Istio sidecar: 1337; ambient: 0x111).
    pub mark: u32,
    /// The bits of the mark that count (`u32::MAX`: all; ambient: 0xfff).
    pub mask: u32,
    /// The route table the mark selects (Istio sidecar: 133; ambient: 100).
    pub table: u32,
    /// The rule's preference (sidecar: [`RULE_PRIORITY`]; ambient: 32764).
    pub priority: u32,
    /// Whether to set up IPv6 too.
    pub ipv6: bool,
    /// Whether `::6` goes on `lo` with IPv6 (sidecar mode, as Istio adds it; not ambient).
    pub loopback_v6: bool,
}

impl TproxyRouting {
    /// Sidecar TPROXY routing: `fwmark MARK lookup TABLE` at [`RULE_PRIORITY`], and `::6` on
    /// `lo` with IPv6.
    pub fn sidecar(mark: u32, table: u32, ipv6: bool) -> Self {
        TproxyRouting {
            mark,
            mask: u32::MAX,
            table,
            priority: RULE_PRIORITY,
            ipv6,
            loopback_v6: ipv6,
        }
    }

    /// Ambient's in-pod routing for ztunnel's transparent sockets: `fwmark MARK/MASK pref 32764
    /// lookup TABLE` (Istio: 0x111/0xfff, table 100).
    pub fn ambient(mark: u32, mask: u32, table: u32, ipv6: bool) -> Self {
        TproxyRouting {
            mark,
            mask,
            table,
            priority: 32764,
            ipv6,
            loopback_v6: false,
        }
    }
}

/// What the kernel has of a [`TproxyRouting`], read back over rtnetlink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingState {
    /// Families (`4`, `6`) with a rule `fwmark MARK lookup TABLE`.
    pub rules: Vec<u8>,
    /// Families with a `local default dev lo` route in TABLE.
    pub local_routes: Vec<u8>,
    /// Whether `lo` has `::6/128`.
    pub loopback_v6: bool,
}

fn fam(v6: bool) -> RtAddrFamily {
    if v6 {
        RtAddrFamily::Inet6
    } else {
        RtAddrFamily::Inet
    }
}

fn ser(during: &str, e: impl std::fmt::Display) -> NetlinkError {
    NetlinkError::Malformed {
        during: "building an rtnetlink request",
        what: format!("{during}: {e}"),
    }
}

fn lo_index() -> Result<i32, NetlinkError> {
    nix::net::if_::if_nametoindex("lo")
        .map(|i| i as i32)
        .map_err(|e| NetlinkError::kernel("looking up interface lo", e as i32))
}

fn table_byte(table: u32) -> RtTable {
    if table < 256 {
        RtTable::UnrecognizedConst(table as u8)
    } else {
        RtTable::Unspec
    }
}

/// A route or rule message of one family, for all destinations (prefix lengths 0).
fn rtmsg(
    v6: bool,
    table: RtTable,
    protocol: Rtprot,
    scope: RtScope,
    kind: Rtn,
    attrs: RtBuffer<Rta, neli::types::Buffer>,
) -> Rtmsg {
    Rtmsg {
        rtm_family: fam(v6),
        rtm_dst_len: 0,
        rtm_src_len: 0,
        rtm_tos: 0,
        rtm_table: table,
        rtm_protocol: protocol,
        rtm_scope: scope,
        rtm_type: kind,
        rtm_flags: RtmFFlags::empty(),
        rtattrs: attrs,
    }
}

/// An empty route/rule message of one family: a dump request.
fn dump_request(v6: bool) -> Rtmsg {
    rtmsg(
        v6,
        RtTable::Unspec,
        Rtprot::Unspec,
        RtScope::Universe,
        Rtn::Unspec,
        RtBuffer::new(),
    )
}

/// One rtnetlink socket for routing changes. Requests are serialized by `neli`; replies are
/// parsed by the bounds-checked `codec::wire` reader (never by code that may panic on them).
///
/// ```no_run
/// use nftmesh_netlink::routes::{Routing, TproxyRouting};
///
/// let r = TproxyRouting::sidecar(1337, 133, false);
/// let mut routing = Routing::open()?;
/// routing.ensure(&r)?; // fwmark 1337 lookup 133; local default dev lo table 133
/// assert_eq!(routing.state(&r)?.rules, vec![4]);
/// routing.remove(&r)?;
/// # Ok::<(), nftmesh_netlink::NetlinkError>(())
/// ```
pub struct Routing {
    sock: NlSocket,
    seq: u32,
    buf: Vec<u8>,
}

impl Routing {
    /// Open an rtnetlink socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        let sock = NlSocket::connect(NlFamily::Route, None, &[])
            .map_err(|e| NetlinkError::io("rtnetlink open", e))?;
        // Not inherited by children other threads spawn (neli opens it without the flag).
        crate::os::set_cloexec(std::os::fd::AsRawFd::as_raw_fd(&sock))
            .map_err(|e| NetlinkError::io("rtnetlink FD_CLOEXEC", e))?;
        crate::os::set_recv_timeout(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            std::time::Duration::from_secs(10),
        )
        .map_err(|e| NetlinkError::io("rtnetlink setsockopt SO_RCVTIMEO", e))?;
        Ok(Routing {
            sock,
            seq: 1,
            buf: vec![0u8; 1 << 16],
        })
    }

    /// Serialize and send one message; returns its sequence number.
    fn send<P>(
        &mut self,
        ty: Rtm,
        flags: &[NlmF],
        payload: P,
        during: &str,
    ) -> Result<u32, NetlinkError>
    where
        P: neli::Size + neli::ToBytes + std::fmt::Debug,
    {
        self.seq = self.seq.wrapping_add(1);
        let msg = Nlmsghdr::new(
            None,
            ty,
            NlmFFlags::new(flags),
            Some(self.seq),
            None,
            NlPayload::Payload(payload),
        );
        let mut cur = std::io::Cursor::new(Vec::new());
        msg.to_bytes(&mut cur).map_err(|e| ser(during, e))?;
        let bytes = cur.into_inner();
        self.sock
            .send(&bytes[..], 0)
            .map_err(|e| NetlinkError::io("rtnetlink send", e))?;
        Ok(self.seq)
    }

    /// Read replies to `seq` until its ACK/error (`dump`: until DONE), collecting payloads.
    fn replies(
        &mut self,
        seq: u32,
        dump: bool,
        during: &str,
    ) -> Result<(i32, Vec<Vec<u8>>), NetlinkError> {
        let mut out = Vec::new();
        for _ in 0..100_000 {
            let n = match self.sock.recv(&mut self.buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(NetlinkError::Timeout(std::time::Duration::from_secs(10)))
                }
                Err(e) => return Err(NetlinkError::io("rtnetlink recv", e)),
            };
            let msgs = crate::codec::wire::messages(&self.buf[..n]).map_err(|what| {
                NetlinkError::Malformed {
                    during: "reading an rtnetlink reply",
                    what: format!("{during}: {what}"),
                }
            })?;
            for m in msgs {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    t if t == libc::NLMSG_DONE as u16 => return Ok((0, out)),
                    t if t == libc::NLMSG_ERROR as u16 => {
                        let (errno, _) =
                            crate::codec::wire::error_payload(m.payload).map_err(|what| {
                                NetlinkError::Malformed {
                                    during: "reading an rtnetlink reply",
                                    what: format!("{during}: {what}"),
                                }
                            })?;
                        if !dump || errno != 0 {
                            return Ok((errno, out));
                        }
                    }
                    _ => out.push(m.payload.to_vec()),
                }
            }
        }
        Err(NetlinkError::Malformed {
            during: "reading an rtnetlink reply",
            what: format!("{during}: no end after 100000 reads"),
        })
    }

    /// Send one request with ACK; errnos in `ok` count as success. Returns the errno seen.
    fn request<P>(
        &mut self,
        ty: Rtm,
        flags: &[NlmF],
        payload: P,
        ok: &[i32],
        during: &str,
    ) -> Result<i32, NetlinkError>
    where
        P: neli::Size + neli::ToBytes + std::fmt::Debug,
    {
        let mut f = vec![NlmF::Request, NlmF::Ack];
        f.extend_from_slice(flags);
        let seq = self.send(ty, &f, payload, during)?;
        let (errno, _) = self.replies(seq, false, during)?;
        if errno == 0 || ok.contains(&errno) {
            Ok(errno)
        } else {
            Err(NetlinkError::kernel(during, errno))
        }
    }

    fn rule_msg(&self, r: &TproxyRouting, v6: bool) -> Result<Rtmsg, NetlinkError> {
        let mut attrs = RtBuffer::new();
        let mut values = vec![
            (FRA_FWMARK, r.mark),
            (FRA_TABLE, r.table),
            (FRA_PRIORITY, r.priority),
        ];
        if r.mask != u32::MAX {
            values.push((FRA_FWMASK, r.mask));
        }
        for (ty, v) in values {
            attrs.push(
                Rtattr::new(None, Rta::UnrecognizedConst(ty), v)
                    .map_err(|e| ser("rule attribute", e))?,
            );
        }
        Ok(rtmsg(
            v6,
            table_byte(r.table),
            Rtprot::Unspec,
            RtScope::Universe,
            Rtn::UnrecognizedConst(FR_ACT_TO_TBL),
            attrs,
        ))
    }

    fn route_msg(&self, r: &TproxyRouting, v6: bool) -> Result<Rtmsg, NetlinkError> {
        let mut attrs = RtBuffer::new();
        attrs.push(Rtattr::new(None, Rta::Oif, lo_index()?).map_err(|e| ser("route oif", e))?);
        attrs.push(Rtattr::new(None, Rta::Table, r.table).map_err(|e| ser("route table", e))?);
        Ok(rtmsg(
            v6,
            table_byte(r.table),
            Rtprot::Boot,
            RtScope::Host,
            Rtn::Local,
            attrs,
        ))
    }

    fn addr_msg(&self) -> Result<Ifaddrmsg, NetlinkError> {
        let mut attrs = RtBuffer::new();
        let octets = LOOPBACK_V6.octets().to_vec();
        attrs.push(Rtattr::new(None, Ifa::Local, octets.clone()).map_err(|e| ser("address", e))?);
        attrs.push(Rtattr::new(None, Ifa::Address, octets).map_err(|e| ser("address", e))?);
        Ok(Ifaddrmsg {
            ifa_family: RtAddrFamily::Inet6,
            ifa_prefixlen: 128,
            ifa_flags: IfaFFlags::new(&[IfaF::Nodad]),
            ifa_scope: 0,
            ifa_index: lo_index()?,
            rtattrs: attrs,
        })
    }

    /// Install the rule, the local route and `::6` (idempotent: what exists is kept).
    pub fn ensure(&mut self, r: &TproxyRouting) -> Result<(), NetlinkError> {
        for v6 in [false, true] {
            if v6 && !r.ipv6 {
                continue;
            }
            let msg = self.rule_msg(r, v6)?;
            self.request(
                Rtm::Newrule,
                &[NlmF::Create, NlmF::Excl],
                msg,
                &[libc::EEXIST],
                "adding the TPROXY fwmark rule",
            )?;
            let msg = self.route_msg(r, v6)?;
            self.request(
                Rtm::Newroute,
                &[NlmF::Create, NlmF::Replace],
                msg,
                &[],
                "adding the TPROXY local route",
            )?;
        }
        if r.ipv6 && r.loopback_v6 {
            self.ensure_loopback_v6()?;
        }
        Ok(())
    }

    /// Add `::6/128` to `lo` (idempotent): the source of the proxy's IPv6 inbound passthrough,
    /// which the capture rules exempt. Needed in both capture modes when IPv6 is on.
    pub fn ensure_loopback_v6(&mut self) -> Result<(), NetlinkError> {
        let msg = self.addr_msg()?;
        self.request(
            Rtm::Newaddr,
            &[NlmF::Create, NlmF::Replace],
            msg,
            &[],
            "adding ::6/128 to lo",
        )?;
        Ok(())
    }

    /// Remove what [`Routing::ensure`] installs (absent pieces are fine).
    pub fn remove(&mut self, r: &TproxyRouting) -> Result<(), NetlinkError> {
        self.remove_tproxy(r)?;
        self.remove_loopback_v6()
    }

    /// Remove the fwmark rules and local routes of `r` in both families, keeping `::6` on `lo`
    /// (which REDIRECT mode needs too when IPv6 is on). Absent pieces are fine.
    pub fn remove_tproxy(&mut self, r: &TproxyRouting) -> Result<(), NetlinkError> {
        for v6 in [false, true] {
            // Duplicates (from other tools) go too: delete until none is left, bounded.
            for _ in 0..16 {
                let msg = self.rule_msg(r, v6)?;
                let e = self.request(
                    Rtm::Delrule,
                    &[],
                    msg,
                    &[libc::ENOENT, libc::EAFNOSUPPORT],
                    "removing the TPROXY fwmark rule",
                )?;
                if e != 0 {
                    break;
                }
            }
            let msg = self.route_msg(r, v6)?;
            self.request(
                Rtm::Delroute,
                &[],
                msg,
                &[libc::ESRCH, libc::ENOENT, libc::EAFNOSUPPORT],
                "removing the TPROXY local route",
            )?;
        }
        Ok(())
    }

    /// Remove `::6/128` from `lo` (absent is fine).
    pub fn remove_loopback_v6(&mut self) -> Result<(), NetlinkError> {
        let msg = self.addr_msg()?;
        self.request(
            Rtm::Deladdr,
            &[],
            msg,
            &[libc::EADDRNOTAVAIL, libc::ENOENT, libc::EAFNOSUPPORT],
            "removing ::6/128 from lo",
        )?;
        Ok(())
    }

    fn dump<P>(&mut self, ty: Rtm, payload: P) -> Result<Vec<Vec<u8>>, NetlinkError>
    where
        P: neli::Size + neli::ToBytes + std::fmt::Debug,
    {
        let during = "dumping routing state";
        let seq = self.send(ty, &[NlmF::Request, NlmF::Dump], payload, during)?;
        let (errno, out) = self.replies(seq, true, during)?;
        if errno != 0 {
            return Err(NetlinkError::kernel(during, errno));
        }
        Ok(out)
    }

    /// Whether a `fwmark MARK lookup TABLE` rule of `r` exists in either family: one rule dump
    /// of all families. (Its local route without the rule routes nothing; [`Routing::state`]
    /// reports both.)
    pub fn has_tproxy_rule(&mut self, r: &TproxyRouting) -> Result<bool, NetlinkError> {
        let bad = |what: String| NetlinkError::Malformed {
            during: "parsing routing rules",
            what,
        };
        let mut all = dump_request(false);
        all.rtm_family = RtAddrFamily::Unspecified;
        for p in self.dump(Rtm::Getrule, all)? {
            let at = wire::attrs(p.get(field::RTMSG_LEN..).unwrap_or(&[])).map_err(bad)?;
            if at.ne32(FRA_FWMARK) == Some(r.mark) && at.ne32(FRA_TABLE) == Some(r.table) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Read back what the kernel has of `r`.
    pub fn state(&mut self, r: &TproxyRouting) -> Result<RoutingState, NetlinkError> {
        let bad = |what: String| NetlinkError::Malformed {
            during: "parsing routing state",
            what,
        };
        let mut st = RoutingState::default();
        let lo = lo_index()?;
        for v6 in [false, true] {
            let family_num = if v6 { 6 } else { 4 };
            let empty = dump_request(v6);
            for p in self.dump(Rtm::Getrule, empty)? {
                let at = wire::attrs(p.get(field::RTMSG_LEN..).unwrap_or(&[])).map_err(bad)?;
                if at.ne32(FRA_FWMARK) == Some(r.mark)
                    && at.ne32(FRA_TABLE) == Some(r.table)
                    && !st.rules.contains(&family_num)
                {
                    st.rules.push(family_num);
                }
            }
            let empty = dump_request(v6);
            for p in self.dump(Rtm::Getroute, empty)? {
                if p.len() < field::RTMSG_LEN {
                    return Err(bad(format!("route message of {} bytes", p.len())));
                }
                let (dst_len, rtype) = (p[field::RTM_DST_LEN], p[field::RTM_TYPE]);
                let at = wire::attrs(&p[field::RTMSG_LEN..]).map_err(bad)?;
                let table = at
                    .ne32(libc::RTA_TABLE)
                    .unwrap_or(u32::from(p[field::RTM_TABLE]));
                if table == r.table
                    && dst_len == 0
                    && rtype == libc::RTN_LOCAL
                    && at.ne32(libc::RTA_OIF) == Some(lo as u32)
                    && !st.local_routes.contains(&family_num)
                {
                    st.local_routes.push(family_num);
                }
            }
        }
        let empty = Ifaddrmsg {
            ifa_family: RtAddrFamily::Inet6,
            ifa_prefixlen: 0,
            ifa_flags: IfaFFlags::empty(),
            ifa_scope: 0,
            ifa_index: 0,
            rtattrs: RtBuffer::new(),
        };
        for p in self.dump(Rtm::Getaddr, empty)? {
            if p.len() < field::IFADDRMSG_LEN {
                return Err(bad(format!("address message of {} bytes", p.len())));
            }
            let index = wire::u32_at(&p, field::IFA_INDEX) as i32;
            let at = wire::attrs(&p[field::IFADDRMSG_LEN..]).map_err(bad)?;
            let addr = at
                .get(libc::IFA_ADDRESS)
                .or_else(|| at.get(libc::IFA_LOCAL));
            if index == lo
                && p[field::IFA_FAMILY] == libc::AF_INET6 as u8
                && addr == Some(&LOOPBACK_V6.octets()[..])
            {
                st.loopback_v6 = true;
            }
        }
        Ok(st)
    }
}
