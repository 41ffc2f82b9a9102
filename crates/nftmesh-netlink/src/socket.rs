//! The netfilter netlink conversation over a [`Transport`]: sequence numbers, requests, buffers
//! sized for the batch at hand, the reply to a batch correlated with the object of each
//! message, and dumps (retried when the kernel interrupts them). It knows bytes and objects,
//! not how a transaction is planned.

use crate::codec::bounds;
use crate::codec::nftnl::msg_type;
use crate::codec::sys::*;
use crate::codec::wire;
use crate::error::{errno_meaning, NetlinkError, Object, OWNED_ELSEWHERE};
use crate::retry::MAX_ATTEMPTS;
use crate::transport::Transport;
use std::time::{Duration, Instant};

const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
/// Replies wait at most this long.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A one-message nf_tables request: netlink header, nfgenmsg for `family`, then `attrs`
/// (already encoded).
pub(crate) fn request(msg: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    let mut req = Vec::with_capacity(20 + attrs.len());
    req.extend_from_slice(&(20 + attrs.len() as u32).to_ne_bytes());
    req.extend_from_slice(&msg_type(msg).to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    req.extend_from_slice(&seq.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[family, 0, 0, 0]);
    req.extend_from_slice(attrs);
    req
}

/// Append a NUL-terminated string attribute holding the name `v` of `object` (checked as
/// [`bounds::name`], so its length fits the attribute's 16-bit length field).
pub(crate) fn str_attr(
    out: &mut Vec<u8>,
    ty: u16,
    what: &'static str,
    v: &str,
    object: impl FnOnce() -> Object,
) -> Result<(), NetlinkError> {
    bounds::name(what, v).map_err(|e| e.at(object()))?;
    let len = 4 + v.len() + 1;
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(v.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    Ok(())
}

/// One netfilter netlink conversation with the kernel (or a stand-in for it).
pub(crate) struct Socket {
    pub(crate) transport: Box<dyn Transport>,
    pub(crate) seq: u32,
    buf: Vec<u8>,
    sndbuf: usize,
}

impl Socket {
    /// Open a socket in the calling thread's network namespace.
    pub(crate) fn open() -> Result<Self, NetlinkError> {
        let sock = crate::transport::kernel_socket()?;
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Socket::over(Box::new(sock), seq))
    }

    /// A conversation over `transport` whose first sequence number is `seq`.
    pub(crate) fn over(transport: Box<dyn Transport>, seq: u32) -> Self {
        Socket {
            transport,
            seq,
            buf: vec![0u8; 1 << 20],
            sndbuf: 0,
        }
    }

    /// The first of `n + 1` sequence numbers. Numbers restart at 1 well before `u32::MAX`, so
    /// a batch of any size (which numbers its messages consecutively) never overflows.
    pub(crate) fn next_seq(&mut self, n: usize) -> u32 {
        if self.seq == 0 || self.seq >= 0x8000_0000 {
            self.seq = 1;
        }
        let s = self.seq;
        self.seq = self.seq.saturating_add(n as u32 + 1);
        s
    }

    fn send(&mut self, bytes: &[u8], during: &'static str) -> Result<(), NetlinkError> {
        if bytes.len() + 4096 > self.sndbuf {
            self.sndbuf = (bytes.len() + 4096).next_power_of_two();
            let (snd, rcv) = (self.sndbuf, self.sndbuf.max(1 << 20));
            self.transport
                .size_buffers(snd, rcv)
                .map_err(|e| NetlinkError::io("setsockopt SO_SNDBUF/SO_RCVBUF", e))?;
        }
        let n = self
            .transport
            .send(bytes)
            .map_err(|e| NetlinkError::io(during, e))?;
        if n != bytes.len() {
            return Err(NetlinkError::Malformed {
                during,
                what: format!("sent {n} of {} bytes", bytes.len()),
            });
        }
        Ok(())
    }

    fn recv(&mut self, during: &'static str) -> Result<usize, NetlinkError> {
        match self.transport.recv(&mut self.buf) {
            Ok(n) => Ok(n),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN)) => {
                Err(NetlinkError::Timeout(REPLY_TIMEOUT))
            }
            Err(e) => Err(NetlinkError::io(during, e)),
        }
    }

    /// Send a batch (`bytes`; `objects` names what each sequence number is about, `last_seq`
    /// is the one acknowledged last) and wait for its end: `Ok` when the kernel committed it,
    /// else the first error, mapped to the object of the failing message.
    pub(crate) fn send_batch(
        &mut self,
        bytes: &[u8],
        objects: &[(u32, Object)],
        last_seq: u32,
    ) -> Result<(), NetlinkError> {
        self.send(bytes, "sending the batch")?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut first_err: Option<(i32, u32)> = None;
        loop {
            if Instant::now() > deadline {
                return Err(NetlinkError::Timeout(REPLY_TIMEOUT));
            }
            let n = self.recv("reading the batch reply")?;
            let msgs = wire::messages(&self.buf[..n]).map_err(|what| NetlinkError::Malformed {
                during: "reading the batch reply",
                what,
            })?;
            let mut done = false;
            for m in msgs {
                if m.ty != NLMSG_ERROR {
                    continue;
                }
                let (errno, seq) =
                    wire::error_payload(m.payload).map_err(|what| NetlinkError::Malformed {
                        during: "reading the batch reply",
                        what,
                    })?;
                if errno != 0 && first_err.is_none() {
                    first_err = Some((errno, seq));
                }
                // The acknowledged last message ends the reply; an error on the batch framing
                // (a stale generation id) means nothing after it was processed.
                let framing = objects
                    .iter()
                    .any(|(s, o)| *s == seq && *o == Object::Batch);
                if seq == last_seq
                    || (errno != 0 && (framing || objects.iter().all(|(s, _)| *s != seq)))
                {
                    done = true;
                }
            }
            if done {
                break;
            }
        }
        match first_err {
            None => Ok(()),
            Some((errno, seq)) => {
                let object = objects
                    .iter()
                    .find(|(s, _)| *s == seq)
                    .map(|(_, o)| o.clone())
                    .unwrap_or(Object::Batch);
                // Without CAP_NET_ADMIN the kernel refuses the batch framing itself; `EPERM`
                // on one object is a table another socket owns (`nft_table_lookup`).
                if object == Object::Batch && (errno == libc::EPERM || errno == libc::EACCES) {
                    return Err(NetlinkError::Permission {
                        during: "applying the batch".into(),
                    });
                }
                let meaning = match errno {
                    libc::EPERM => OWNED_ELSEWHERE,
                    _ => errno_meaning(errno),
                };
                Err(NetlinkError::Rejected {
                    object,
                    errno,
                    meaning,
                })
            }
        }
    }

    /// Dump request of `msg` for `family`; returns each reply message's attributes' owner bytes.
    pub(crate) fn dump(
        &mut self,
        msg: u16,
        family: u8,
        during: &'static str,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        self.dump_with(msg, family, &[], during)
    }

    /// A dump request carrying attributes (`extra`, already encoded).
    pub(crate) fn dump_with(
        &mut self,
        msg: u16,
        family: u8,
        extra: &[u8],
        during: &'static str,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        for _ in 0..MAX_ATTEMPTS {
            let seq = self.next_seq(1);
            let req = request(msg, NLM_F_DUMP | NLM_F_ACK, seq, family, extra);
            self.send(&req, during)?;
            let mut out = Vec::new();
            let mut interrupted = false;
            'recv: loop {
                let n = self.recv(during)?;
                let msgs = wire::messages(&self.buf[..n])
                    .map_err(|what| NetlinkError::Malformed { during, what })?;
                for m in msgs {
                    if m.seq != seq {
                        continue;
                    }
                    if m.flags & NLM_F_DUMP_INTR != 0 {
                        interrupted = true;
                    }
                    match m.ty {
                        NLMSG_DONE => break 'recv,
                        NLMSG_ERROR => {
                            let (errno, _) = wire::error_payload(m.payload)
                                .map_err(|what| NetlinkError::Malformed { during, what })?;
                            if errno == 0 {
                                continue;
                            }
                            if errno == libc::EINTR {
                                interrupted = true;
                                break 'recv;
                            }
                            return Err(NetlinkError::kernel(during, errno));
                        }
                        _ => {
                            if m.payload.len() < 4 {
                                return Err(NetlinkError::Malformed {
                                    during,
                                    what: format!(
                                        "reply of {} bytes lacks the nfgenmsg header",
                                        m.payload.len()
                                    ),
                                });
                            }
                            let mut v = vec![m.payload[0]];
                            v.extend_from_slice(&m.payload[4..]);
                            out.push(v);
                        }
                    }
                }
            }
            if !interrupted {
                return Ok(out);
            }
        }
        Err(NetlinkError::Contended(MAX_ATTEMPTS))
    }

    /// The ruleset generation id (changes with every committed transaction).
    pub(crate) fn generation(&mut self) -> Result<u32, NetlinkError> {
        let during = "reading the ruleset generation";
        let seq = self.next_seq(1);
        let req = request(NFT_MSG_GETGEN, NLM_F_ACK, seq, NFPROTO_UNSPEC, &[]);
        self.send(&req, during)?;
        let mut gen = None;
        loop {
            let n = self.recv(during)?;
            let msgs = wire::messages(&self.buf[..n])
                .map_err(|what| NetlinkError::Malformed { during, what })?;
            for m in msgs {
                if m.seq != seq {
                    continue;
                }
                if m.ty == msg_type(NFT_MSG_NEWGEN) && m.payload.len() >= 4 {
                    let at = wire::attrs(&m.payload[4..])
                        .map_err(|what| NetlinkError::Malformed { during, what })?;
                    gen = at.be32(NFTA_GEN_ID);
                } else if m.ty == NLMSG_ERROR {
                    let (errno, _) = wire::error_payload(m.payload)
                        .map_err(|what| NetlinkError::Malformed { during, what })?;
                    if errno != 0 {
                        return Err(NetlinkError::kernel(during, errno));
                    }
                    return gen.ok_or_else(|| NetlinkError::Malformed {
                        during,
                        what: "no NFTA_GEN_ID in the reply".into(),
                    });
                }
            }
        }
    }
}
