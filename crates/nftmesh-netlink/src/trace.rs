//! Live packet tracing with nf_tables' own tracing: a [`Tracer`] adds a table of its own
//! whose one rule per hook sets `meta nftrace set 1` on the packets a filter matches, listens
//! on the nf_tables trace group (`NFNLGRP_NFTRACE`) and decodes each trace event
//! ([`TraceEvent::parse`]): table, chain, rule handle, verdict, and the packet's addresses and
//! ports.
//!
//! The table is created with the kernel's owner flag (`NFT_TABLE_F_OWNER`) by a socket the
//! tracer keeps: the kernel deletes the table when that socket closes, so a tracer that is
//! dropped, or a process killed with `SIGKILL`, leaves nothing behind. [`Tracer::stop`] deletes
//! it explicitly and reports an error doing so.

use crate::codec::numbers::family_of;
use crate::codec::sys::*;
use crate::codec::wire;
use crate::connection::Connection;
use crate::error::NetlinkError;
use crate::os::NfSocket;
use crate::transaction::Transaction;
use nftmesh_model::expr::Match;
use nftmesh_model::ruleset::{Family, Hook};
use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// What a trace event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceKind {
    /// A rule matched (its statements ran; `verdict` is what it decided, `continue` if
    /// nothing).
    Rule,
    /// The end of a regular chain: back to the chain that jumped to it.
    Return,
    /// The end of a base chain: its policy decided.
    Policy,
    /// A type this crate does not know, kept as the kernel sent it.
    Other(u32),
}

/// The verdict of a trace event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceVerdict {
    /// `accept`.
    Accept,
    /// `drop`.
    Drop,
    /// `continue`: the next rule runs.
    Continue,
    /// `return`.
    Return,
    /// `jump CHAIN`.
    Jump(String),
    /// `goto CHAIN`.
    Goto(String),
    /// `queue`.
    Queue,
    /// `stolen`: a statement took the packet.
    Stolen,
    /// A code this crate does not know.
    Other(i32),
}

impl fmt::Display for TraceVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceVerdict::Accept => f.write_str("accept"),
            TraceVerdict::Drop => f.write_str("drop"),
            TraceVerdict::Continue => f.write_str("continue"),
            TraceVerdict::Return => f.write_str("return"),
            TraceVerdict::Jump(c) => write!(f, "jump {c}"),
            TraceVerdict::Goto(c) => write!(f, "goto {c}"),
            TraceVerdict::Queue => f.write_str("queue"),
            TraceVerdict::Stolen => f.write_str("stolen"),
            TraceVerdict::Other(c) => write!(f, "verdict {c}"),
        }
    }
}

impl TraceVerdict {
    fn of(code: i32, chain: Option<String>) -> Self {
        const NF_STOLEN: i32 = 2;
        const NF_QUEUE: i32 = 3;
        const NFT_CONTINUE: i32 = -1;
        match (code, chain) {
            (NF_ACCEPT, _) => TraceVerdict::Accept,
            (NF_DROP, _) => TraceVerdict::Drop,
            (NF_STOLEN, _) => TraceVerdict::Stolen,
            (NF_QUEUE, _) => TraceVerdict::Queue,
            (NFT_CONTINUE, _) => TraceVerdict::Continue,
            (NFT_RETURN, _) => TraceVerdict::Return,
            (NFT_JUMP, Some(c)) => TraceVerdict::Jump(c),
            (NFT_GOTO, Some(c)) => TraceVerdict::Goto(c),
            (c, _) => TraceVerdict::Other(c),
        }
    }
}

/// The packet a trace event is about, read from the headers the kernel sends with the first
/// event of each hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TracedPacket {
    /// The IP protocol number (6 TCP, 17 UDP, ...).
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (TCP and UDP).
    pub sport: Option<u16>,
    /// Destination port (TCP and UDP).
    pub dport: Option<u16>,
    /// TCP flags (`0x02` SYN, `0x10` ACK, ...).
    pub tcp_flags: Option<u8>,
}

impl TracedPacket {
    /// Read the network header (IPv4 or IPv6, by its version nibble) and, when given, the
    /// transport header. `None` when the network header is too short.
    pub fn parse(network: &[u8], transport: Option<&[u8]>) -> Option<Self> {
        let (proto, src, dst): (u8, IpAddr, IpAddr) = match network.first()? >> 4 {
            4 if network.len() >= 20 => {
                let a: [u8; 4] = network[12..16].try_into().ok()?;
                let b: [u8; 4] = network[16..20].try_into().ok()?;
                (network[9], a.into(), b.into())
            }
            6 if network.len() >= 40 => {
                let a: [u8; 16] = network[8..24].try_into().ok()?;
                let b: [u8; 16] = network[24..40].try_into().ok()?;
                (network[6], a.into(), b.into())
            }
            _ => return None,
        };
        let ports = transport
            .filter(|t| t.len() >= 4 && (proto == 6 || proto == 17))
            .map(|t| {
                (
                    u16::from_be_bytes([t[0], t[1]]),
                    u16::from_be_bytes([t[2], t[3]]),
                )
            });
        let tcp_flags = transport
            .filter(|t| proto == 6 && t.len() >= 14)
            .map(|t| t[13]);
        Some(TracedPacket {
            proto,
            src,
            dst,
            sport: ports.map(|p| p.0),
            dport: ports.map(|p| p.1),
            tcp_flags,
        })
    }
}

impl fmt::Display for TracedPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            6 => "tcp".to_string(),
            17 => "udp".to_string(),
            1 => "icmp".to_string(),
            58 => "icmpv6".to_string(),
            p => format!("proto {p}"),
        };
        let addr = |a: IpAddr, p: Option<u16>| match (a, p) {
            (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
            (a, Some(p)) => format!("{a}:{p}"),
            (a, None) => a.to_string(),
        };
        write!(
            f,
            "{proto} {} -> {}",
            addr(self.src, self.sport),
            addr(self.dst, self.dport)
        )?;
        if let Some(flags) = self.tcp_flags {
            let names: Vec<&str> = [
                (0x02, "syn"),
                (0x10, "ack"),
                (0x01, "fin"),
                (0x04, "rst"),
                (0x08, "psh"),
            ]
            .into_iter()
            .filter(|(bit, _)| flags & bit != 0)
            .map(|(_, n)| n)
            .collect();
            write!(f, " [{}]", names.join(","))?;
        }
        Ok(())
    }
}

/// One nf_tables trace event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// The packet's trace id: the same for every event of one packet.
    pub id: u32,
    /// The family of the table (`None` for one this crate does not know).
    pub family: Option<Family>,
    /// What the event reports.
    pub kind: TraceKind,
    /// The table.
    pub table: String,
    /// The chain.
    pub chain: String,
    /// The handle of the rule that matched (rule events).
    pub handle: Option<u64>,
    /// The verdict (rule and return events).
    pub verdict: Option<TraceVerdict>,
    /// The base chain's policy (policy events: `NF_ACCEPT` 1, `NF_DROP` 0).
    pub policy: Option<u32>,
    /// The packet, on the first event of each hook.
    pub packet: Option<TracedPacket>,
    /// Input interface index.
    pub iif: Option<u32>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// The packet mark.
    pub mark: Option<u32>,
}

impl TraceEvent {
    /// Decode the payload of an `NFT_MSG_TRACE` message (after the netlink header: the
    /// nfgenmsg, then the attributes). Malformed bytes are an error naming what is wrong.
    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        if payload.len() < 4 {
            return Err(format!("trace event of {} bytes", payload.len()));
        }
        let at = wire::attrs(&payload[4..])?;
        let str_of = |ty| at.string(ty).unwrap_or_default();
        let u32_of = |ty| at.be32(ty);
        let id = u32_of(NFTA_TRACE_ID).ok_or("trace event without an id")?;
        let kind = match u32_of(NFTA_TRACE_TYPE) {
            Some(1) => TraceKind::Policy,
            Some(2) => TraceKind::Return,
            Some(3) => TraceKind::Rule,
            Some(t) => TraceKind::Other(t),
            None => return Err("trace event without a type".into()),
        };
        let verdict = match at.get(NFTA_TRACE_VERDICT) {
            Some(v) => {
                let v = wire::attrs(v).map_err(|e| format!("verdict: {e}"))?;
                let code = v.be32(NFTA_VERDICT_CODE).ok_or("verdict without a code")? as i32;
                let chain = v.string(NFTA_VERDICT_CHAIN);
                Some(TraceVerdict::of(code, chain))
            }
            None => None,
        };
        let packet = at
            .get(NFTA_TRACE_NETWORK_HEADER)
            .and_then(|n| TracedPacket::parse(n, at.get(NFTA_TRACE_TRANSPORT_HEADER)));
        Ok(TraceEvent {
            id,
            family: family_of(payload[0]),
            kind,
            table: str_of(NFTA_TRACE_TABLE),
            chain: str_of(NFTA_TRACE_CHAIN),
            handle: at.be64(NFTA_TRACE_RULE_HANDLE),
            verdict,
            policy: u32_of(NFTA_TRACE_POLICY),
            packet,
            iif: u32_of(NFTA_TRACE_IIF),
            oif: u32_of(NFTA_TRACE_OIF),
            mark: u32_of(NFTA_TRACE_MARK),
        })
    }

    /// The trace events in a buffer received from the trace group (other messages skipped).
    pub fn parse_all(buf: &[u8]) -> Result<Vec<TraceEvent>, String> {
        let ty = crate::codec::nftnl::msg_type(NFT_MSG_TRACE);
        wire::messages(buf)?
            .into_iter()
            .filter(|m| m.ty == ty)
            .map(|m| TraceEvent::parse(m.payload))
            .collect()
    }
}

/// How long one receive on the trace socket waits before the caller's deadline is checked.
const POLL: Duration = Duration::from_millis(50);

/// A live trace in one network namespace: its owned table and the trace group listener.
pub struct Tracer {
    owner: Connection,
    events: NfSocket,
    buf: Vec<u8>,
    table: String,
    queue: VecDeque<TraceEvent>,
    lost: u64,
}

impl Tracer {
    /// Start tracing in the calling thread's network namespace: subscribe to the trace group,
    /// then create the owned `inet` table `table` with a chain for each of `hooks` (at
    /// priority [`crate::transaction::TRACE_PRIORITY`], before every other chain) setting
    /// `meta nftrace set 1` on the packets `matches` selects. The socket that created the
    /// table stays open inside the tracer; the kernel deletes the table when it closes.
    pub fn start(table: &str, hooks: &[Hook], matches: &[Match]) -> Result<Self, NetlinkError> {
        let events = NfSocket::open().map_err(|e| NetlinkError::io("trace socket open", e))?;
        let fd = events.as_raw_fd();
        crate::os::set_int_option(
            fd,
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            NFNLGRP_NFTRACE as libc::c_int,
        )
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM) => NetlinkError::Permission {
                during: "joining the nf_tables trace group".into(),
            },
            _ => NetlinkError::io("joining the nf_tables trace group", e),
        })?;
        let size = 8 << 20;
        crate::os::set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size)
            .or_else(|_| crate::os::set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, size))
            .map_err(|e| NetlinkError::io("setsockopt SO_RCVBUF", e))?;
        crate::os::set_recv_timeout(fd, POLL)
            .map_err(|e| NetlinkError::io("setsockopt SO_RCVTIMEO", e))?;
        let mut owner = Connection::open()?;
        let first = owner.socket.next_seq(2 * hooks.len() + 3);
        let tx = Transaction::trace_table(table, hooks, matches, first)?;
        owner.send(&tx)?;
        Ok(Tracer {
            owner,
            events,
            buf: vec![0u8; 1 << 16],
            table: table.to_string(),
            queue: VecDeque::new(),
            lost: 0,
        })
    }

    /// The tracer's own table (in family `inet`).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The connection that owns the table, for reading the ruleset meanwhile (rule texts).
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.owner
    }

    /// Times the kernel dropped trace events because they came faster than they were read
    /// (`ENOBUFS` on the trace socket).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// The next trace event, waiting at most `wait`; `None` when none came in time.
    pub fn next_event(&mut self, wait: Duration) -> Result<Option<TraceEvent>, NetlinkError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Ok(Some(e));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            let during = "reading trace events";
            let n = match self.events.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        self.lost += 1;
                        continue;
                    }
                    _ => return Err(NetlinkError::io(during, e)),
                },
            };
            let events = TraceEvent::parse_all(&self.buf[..n])
                .map_err(|what| NetlinkError::Malformed { during, what })?;
            self.queue.extend(events);
        }
    }

    /// Delete the tracer's table and close its sockets.
    pub fn stop(mut self) -> Result<(), NetlinkError> {
        let table = (Family::Inet, self.table.clone());
        self.owner.delete_tables(&[table])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
