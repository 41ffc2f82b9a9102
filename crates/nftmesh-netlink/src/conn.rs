//! [`Connection`]: one netfilter netlink socket, kept open and reused for applies, listings and
//! cleanups in one network namespace.
//!
//! Closing a netfilter netlink socket costs milliseconds (the kernel waits out an RCU grace
//! period), so callers keep a `Connection` for as long as they manage the namespace.

use crate::bounds;
use crate::error::{errno_meaning, NetlinkError, Object};
use crate::ffi::{msg_type, BuildError, MsgWriter};
use crate::ir::WireSet;
use crate::lower::{lower_rule, lower_set};
use crate::objects;
use crate::sys::*;
use crate::wire;
use nftmesh_model::render::render_rule;
use nftmesh_model::ruleset::{Family, Hook, Policy, Ruleset, Table};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
/// Replies wait at most this long.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of an apply when concurrent writers keep changing the ruleset.
const MAX_ATTEMPTS: u32 = 50;

/// Wait before attempt `attempt` (from 2) after the kernel refused a batch because another
/// writer committed first: random, growing to at most ~13 ms, so a writer that must read the
/// state again is not starved by one that keeps committing on state it remembers. Bounded in
/// all to well under a second over `MAX_ATTEMPTS`.
fn contention_backoff(attempt: u32) {
    let cap_us = 100u64 << attempt.min(7);
    // Jitter from the clock's low bits: no shared state, no dependency.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    std::thread::sleep(Duration::from_micros(cap_us / 2 + nanos % (cap_us / 2 + 1)));
}

/// The netlink number of a family.
pub fn family_number(f: Family) -> u8 {
    match f {
        Family::Ip => NFPROTO_IPV4,
        Family::Ip6 => NFPROTO_IPV6,
        Family::Inet => NFPROTO_INET,
    }
}

pub(crate) fn family_of(n: u8) -> Option<Family> {
    match n {
        NFPROTO_IPV4 => Some(Family::Ip),
        NFPROTO_IPV6 => Some(Family::Ip6),
        NFPROTO_INET => Some(Family::Inet),
        _ => None,
    }
}

pub(crate) fn hook_number(h: Hook) -> u32 {
    match h {
        Hook::Prerouting => NF_INET_PRE_ROUTING,
        Hook::Input => NF_INET_LOCAL_IN,
        Hook::Forward => NF_INET_FORWARD,
        Hook::Output => NF_INET_LOCAL_OUT,
        Hook::Postrouting => NF_INET_POST_ROUTING,
    }
}

/// A table as listed by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTable {
    /// Family.
    pub family: Family,
    /// Name.
    pub name: String,
    /// Kernel handle.
    pub handle: u64,
}

/// A chain as listed by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveChain {
    /// Its table's name.
    pub table: String,
    /// Name.
    pub name: String,
    /// Kernel handle; unchanged while the chain exists (and, for base chains, stays hooked).
    pub handle: u64,
    /// Hook number and priority of a base chain.
    pub hook: Option<(u32, i32)>,
    /// Chain type of a base chain (`filter`, `nat`, `route`); empty for a regular chain.
    pub kind: String,
    /// Policy verdict of a base chain (`NF_ACCEPT` for a regular chain).
    pub policy: u32,
}

/// A named set as listed by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSet {
    /// Its table's name.
    pub table: String,
    /// Name.
    pub name: String,
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// nft's datatype id of the keys.
    pub key_type: u32,
    /// Key length in bytes.
    pub key_len: u32,
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyReport {
    /// Netlink messages in the one transaction (begin and end included).
    pub messages: usize,
    /// Bytes sent.
    pub bytes: usize,
    /// Chains deleted because the new ruleset no longer has them.
    pub deleted_chains: Vec<String>,
    /// Tables deleted in the same transaction (as `family name`).
    pub deleted_tables: Vec<String>,
    /// Attempts made (more than one when another writer changed the ruleset meanwhile).
    pub attempts: u32,
}

/// A batch ready to send: the bytes and, per sequence number, the object its message is about.
pub struct Batch {
    /// The messages, begin to end.
    pub bytes: Vec<u8>,
    /// (sequence number, object) of every message.
    pub objects: Vec<(u32, Object)>,
    /// Number of messages.
    pub messages: usize,
    /// The sequence number of the last message before the end (the one acknowledged).
    pub last_seq: u32,
    /// Chains the batch deletes.
    pub deleted_chains: Vec<String>,
    /// Tables the batch deletes (as `family name`).
    pub deleted_tables: Vec<String>,
}

/// The live state `plan_apply` replaces: chains and named sets of the tables it writes.
#[derive(Debug, Clone, Default)]
pub struct LiveState {
    /// Tables present (any family and name).
    pub tables: Vec<LiveTable>,
    /// Chains of the tables being written.
    pub chains: Vec<(Family, LiveChain)>,
    /// Named sets of the tables being written.
    pub sets: Vec<(Family, LiveSet)>,
}

/// The longest rule text an error carries; longer ones are cut and end in `…`.
const MAX_RULE_TEXT: usize = 512;

fn short_text(mut text: String) -> String {
    if text.len() > MAX_RULE_TEXT {
        let mut cut = MAX_RULE_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn table_label(t: &Table) -> String {
    format!("{} {}", t.family.keyword(), t.name)
}

/// Build the one transaction that makes `ruleset`'s tables exactly as given, in place:
/// create missing tables, flush existing rules, (re)declare chains (base chains keep their
/// hook and handle), replace named sets, add every rule with its anonymous sets, and delete
/// chains and named sets the live tables have but `ruleset` does not. `genid`, when given,
/// makes the kernel refuse the batch (`ERESTART`) if the ruleset changed since it was read.
pub fn plan_apply(
    ruleset: &Ruleset,
    live: &LiveState,
    genid: Option<u32>,
    first_seq: u32,
) -> Result<Batch, NetlinkError> {
    plan_apply_removing(ruleset, live, &[], genid, first_seq)
}

/// A batch being written: the messages, and per sequence number the object each is about.
/// Every error building a message names that object.
struct BatchWriter {
    w: MsgWriter,
    seq: u32,
    objects: Vec<(u32, Object)>,
}

impl BatchWriter {
    fn new(first_seq: u32, genid: Option<u32>) -> Self {
        let mut w = MsgWriter::new();
        w.batch_begin_genid(first_seq, genid);
        BatchWriter {
            w,
            seq: first_seq + 1,
            objects: vec![(first_seq, Object::Batch)],
        }
    }

    /// Write one message about `object` with the next sequence number.
    fn emit(
        &mut self,
        object: Object,
        f: impl FnOnce(&mut MsgWriter, u32) -> Result<(), BuildError>,
    ) -> Result<(), NetlinkError> {
        if let Err(e) = f(&mut self.w, self.seq) {
            return Err(e.at(object));
        }
        self.objects.push((self.seq, object));
        self.seq += 1;
        Ok(())
    }

    /// A set's declaration and its elements (as many messages as they need), all about
    /// `object`.
    fn set(
        &mut self,
        object: Object,
        fam: u8,
        table: &str,
        ws: &WireSet,
    ) -> Result<(), NetlinkError> {
        self.emit(object.clone(), |w, seq| {
            w.set(NFT_MSG_NEWSET, NLM_F_CREATE, fam, table, ws, seq)
        })?;
        match self.w.set_elements(fam, table, ws, &mut self.seq) {
            Ok(seqs) => {
                for sq in seqs {
                    self.objects.push((sq, object.clone()));
                }
                Ok(())
            }
            Err(e) => Err(e.at(object)),
        }
    }

    /// End the batch: `last_seq` is the acknowledged message's number.
    fn finish(mut self, last_seq: u32, deleted_chains: Vec<String>) -> Batch {
        self.w.batch_end(self.seq);
        self.objects.push((self.seq, Object::Batch));
        Batch {
            bytes: self.w.out,
            messages: self.objects.len(),
            objects: self.objects,
            last_seq,
            deleted_chains,
            deleted_tables: Vec::new(),
        }
    }
}

/// [`plan_apply`], plus deleting `removals` (objects outside the ruleset's tables, e.g. Istio's
/// iptables-nft rules, see [`crate::migrate`]) in the same transaction, after the ruleset's
/// messages.
pub fn plan_apply_removing(
    ruleset: &Ruleset,
    live: &LiveState,
    removals: &[crate::migrate::Removal],
    genid: Option<u32>,
    first_seq: u32,
) -> Result<Batch, NetlinkError> {
    let mut b = BatchWriter::new(first_seq, genid);
    let mut deleted_chains = Vec::new();
    let mut set_id = 1u32;
    for (i, t) in ruleset.tables.iter().enumerate() {
        let fam = family_number(t.family);
        let label = table_label(t);
        let object = || Object::Table {
            table: label.clone(),
        };
        let same_family = ruleset.tables[..=i].iter().filter(|o| o.family == t.family);
        bounds::unique("table", same_family.map(|o| o.name.as_str()))
            .and_then(|()| bounds::unique("chain", t.chains.iter().map(|c| c.name.as_str())))
            .and_then(|()| bounds::unique("set", t.sets.iter().map(|s| s.name.as_str())))
            .map_err(|e| e.at(object()))?;
        let table_obj = || Object::Table {
            table: label.clone(),
        };
        let chain_obj = |chain: &str| Object::Chain {
            table: label.clone(),
            chain: chain.to_string(),
        };
        let exists = live
            .tables
            .iter()
            .any(|l| l.family == t.family && l.name == t.name);
        b.emit(table_obj(), |w, seq| {
            w.table(NFT_MSG_NEWTABLE, NLM_F_CREATE, fam, &t.name, seq)
        })?;
        let live_chains: Vec<&LiveChain> = live
            .chains
            .iter()
            .filter(|(f, c)| *f == t.family && c.table == t.name)
            .map(|(_, c)| c)
            .collect();
        let live_sets: Vec<&LiveSet> = live
            .sets
            .iter()
            .filter(|(f, s)| *f == t.family && s.table == t.name)
            .map(|(_, s)| s)
            .collect();
        if exists {
            b.emit(table_obj(), |w, seq| w.flush_rules(fam, &t.name, None, seq))?;
            // Named sets are replaced whole: the flush above released their references.
            for s in live_sets
                .iter()
                .filter(|s| s.flags & NFT_SET_ANONYMOUS == 0)
            {
                let obj = Object::Set {
                    table: label.clone(),
                    set: s.name.clone(),
                };
                b.emit(obj, |w, seq| {
                    w.set_by_name(NFT_MSG_DELSET, fam, &t.name, &s.name, seq)
                })?;
            }
        }
        for c in &t.chains {
            let base = c.base.as_ref().map(|b| {
                let policy = match b.policy {
                    Policy::Accept => NF_ACCEPT as u32,
                    Policy::Drop => NF_DROP as u32,
                };
                (hook_number(b.hook), b.priority, b.kind.keyword(), policy)
            });
            // The kernel cannot re-hook a chain in place: a chain whose hook, priority, type or
            // base-ness changes is deleted and re-created in the same transaction (its rules
            // were flushed above; the new rules are added below).
            let rehook = live_chains.iter().any(|lc| {
                lc.name == c.name
                    && (lc.hook != base.map(|(h, p, _, _)| (h, p))
                        || base.is_some_and(|(_, _, k, _)| lc.kind != k))
            });
            if rehook {
                b.emit(chain_obj(&c.name), |w, seq| {
                    w.chain(NFT_MSG_DELCHAIN, 0, fam, &t.name, &c.name, None, seq)
                })?;
            }
            b.emit(chain_obj(&c.name), |w, seq| {
                w.chain(
                    NFT_MSG_NEWCHAIN,
                    NLM_F_CREATE,
                    fam,
                    &t.name,
                    &c.name,
                    base,
                    seq,
                )
            })?;
        }
        for s in &t.sets {
            let obj = Object::Set {
                table: label.clone(),
                set: s.name.clone(),
            };
            let ws = lower_set(s, set_id).map_err(|e| NetlinkError::lower(obj.clone(), e))?;
            set_id += 1;
            b.set(obj, fam, &t.name, &ws)?;
        }
        for c in &t.chains {
            for (index, rule) in c.rules.iter().enumerate() {
                // Rendered once per rule (a rule's sets may take many messages), and cut short:
                // an error names the rule, it need not list 10 000 set elements.
                let rule_obj = Object::Rule {
                    table: label.clone(),
                    chain: c.name.clone(),
                    index,
                    text: short_text(render_rule(rule)),
                };
                let lowered = lower_rule(t.family, rule, &mut set_id)
                    .map_err(|e| NetlinkError::lower(rule_obj.clone(), e))?;
                for ws in &lowered.sets {
                    b.set(rule_obj.clone(), fam, &t.name, ws)?;
                }
                b.emit(rule_obj, |w, seq| {
                    w.rule(
                        NLM_F_CREATE | NLM_F_APPEND,
                        fam,
                        &t.name,
                        &c.name,
                        &lowered.exprs,
                        rule.comment.as_deref(),
                        seq,
                    )
                })?;
            }
        }
        for lc in &live_chains {
            if !t.chains.iter().any(|c| c.name == lc.name) {
                b.emit(chain_obj(&lc.name), |w, seq| {
                    w.chain(NFT_MSG_DELCHAIN, 0, fam, &t.name, &lc.name, None, seq)
                })?;
                deleted_chains.push(format!("{label} {}", lc.name));
            }
        }
    }
    let mut deleted_tables = Vec::new();
    for r in removals {
        use crate::migrate::Removal;
        let (family, table, chain) = r.place();
        let fam = family_number(family);
        let label = format!("{} {table}", family.keyword());
        let Some(chain) = chain else {
            let obj = Object::Table {
                table: label.clone(),
            };
            b.emit(obj, |w, seq| w.table(NFT_MSG_DELTABLE, 0, fam, table, seq))?;
            deleted_tables.push(label);
            continue;
        };
        let obj = Object::Chain {
            table: label.clone(),
            chain: chain.to_string(),
        };
        b.emit(obj, |w, seq| match r {
            Removal::Rule { handle, .. } => w.delete_rule(fam, table, chain, *handle, seq),
            Removal::FlushChain { .. } => w.flush_rules(fam, table, Some(chain), seq),
            _ => w.chain(NFT_MSG_DELCHAIN, 0, fam, table, chain, None, seq),
        })?;
        if matches!(r, Removal::Chain { .. }) {
            deleted_chains.push(format!("{label} {chain}"));
        }
    }
    // The last message asks for an acknowledgement: a no-op re-declaration of the first table
    // (or of the batch when there are no tables), so success is confirmed after everything.
    let last_seq = b.seq;
    // An empty ruleset has nothing to acknowledge; `Connection::apply` sends no batch then.
    if let Some(t) = ruleset.tables.first() {
        let obj = Object::Table {
            table: table_label(t),
        };
        b.emit(obj, |w, seq| {
            w.table(
                NFT_MSG_NEWTABLE,
                NLM_F_CREATE | NLM_F_ACK,
                family_number(t.family),
                &t.name,
                seq,
            )
        })?;
    } else {
        b.seq += 1;
    }
    let mut batch = b.finish(last_seq, deleted_chains);
    batch.deleted_tables = deleted_tables;
    Ok(batch)
}

/// A one-message nf_tables request: netlink header, nfgenmsg for `family`, then `attrs`
/// (already encoded).
fn request(msg: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
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
fn str_attr(
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

/// One netfilter netlink socket in the namespace it was opened in.
pub struct Connection {
    sock: crate::ffi::NfSocket,
    seq: u32,
    buf: Vec<u8>,
    sndbuf: usize,
    /// What this connection's last apply committed: the generation after it and the live state
    /// of its tables. Valid while nobody else commits; the generation in the next batch makes
    /// the kernel refuse it otherwise (ERESTART), and the state is then read again.
    committed: Option<Committed>,
}

/// The state of the tables a committed apply wrote, as the kernel holds it right after.
struct Committed {
    genid: u32,
    tables: Vec<(Family, String)>,
    live: LiveState,
}

impl Committed {
    /// The state `ruleset` leaves once committed at generation `genid - 1`.
    fn after(ruleset: &Ruleset, genid: u32) -> Self {
        let mut live = LiveState::default();
        for t in &ruleset.tables {
            live.tables.push(LiveTable {
                family: t.family,
                name: t.name.clone(),
                handle: 0,
            });
            for c in &t.chains {
                live.chains.push((
                    t.family,
                    LiveChain {
                        table: t.name.clone(),
                        name: c.name.clone(),
                        handle: 0,
                        hook: c.base.map(|b| (hook_number(b.hook), b.priority)),
                        kind: c
                            .base
                            .map(|b| b.kind.keyword().to_string())
                            .unwrap_or_default(),
                        policy: match c.base.map(|b| b.policy) {
                            Some(Policy::Drop) => NF_DROP as u32,
                            _ => NF_ACCEPT as u32,
                        },
                    },
                ));
            }
            for set in &t.sets {
                live.sets.push((
                    t.family,
                    LiveSet {
                        table: t.name.clone(),
                        name: set.name.clone(),
                        flags: 0,
                        key_type: 0,
                        key_len: 0,
                    },
                ));
            }
        }
        Committed {
            genid,
            tables: ruleset
                .tables
                .iter()
                .map(|t| (t.family, t.name.clone()))
                .collect(),
            live,
        }
    }

    /// Whether this state can stand for the live one when applying `ruleset`: every table
    /// `ruleset` writes is one this knows.
    fn covers(&self, ruleset: &Ruleset) -> bool {
        ruleset.tables.iter().all(|t| {
            self.tables
                .iter()
                .any(|(f, n)| *f == t.family && *n == t.name)
        })
    }
}

impl Connection {
    /// Close the socket only after this process has exited (see
    /// [`crate::ffi::release_after_exit`]): for a command that is about to exit, so that the
    /// kernel's deferred cleanup of a committed transaction is not waited for. The transaction
    /// itself is complete (acknowledged) before this is called.
    pub fn close_after_exit(self) {
        let fd = crate::ffi::dup_owned(self.sock.as_raw_fd());
        drop(self);
        if let Ok(fd) = fd {
            crate::ffi::release_after_exit(fd);
        }
    }

    /// Open a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        let sock = crate::ffi::NfSocket::open().map_err(|e| NetlinkError::io("socket open", e))?;
        let fd = sock.as_raw_fd();
        crate::ffi::set_recv_timeout(fd, REPLY_TIMEOUT)
            .map_err(|e| NetlinkError::io("setsockopt SO_RCVTIMEO", e))?;
        // NETLINK_CAP_ACK keeps error replies short (no echoed request).
        crate::ffi::set_int_option(fd, libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1)
            .map_err(|e| NetlinkError::io("setsockopt NETLINK_CAP_ACK", e))?;
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Connection {
            sock,
            seq,
            buf: vec![0u8; 1 << 20],
            sndbuf: 0,
            committed: None,
        })
    }

    /// Size a socket buffer: the forced option (needs CAP_NET_ADMIN, passes the system's cap),
    /// else the capped one.
    fn set_buffer(
        &mut self,
        opt: libc::c_int,
        force: libc::c_int,
        size: usize,
        during: &'static str,
    ) -> Result<(), NetlinkError> {
        let v = size.min(i32::MAX as usize) as libc::c_int;
        let fd = self.sock.as_raw_fd();
        crate::ffi::set_int_option(fd, libc::SOL_SOCKET, force, v)
            .or_else(|_| crate::ffi::set_int_option(fd, libc::SOL_SOCKET, opt, v))
            .map_err(|e| NetlinkError::io(during, e))
    }

    /// The first of `n + 1` sequence numbers. Numbers restart at 1 well before `u32::MAX`, so
    /// a batch of any size (which numbers its messages consecutively) never overflows.
    fn next_seq(&mut self, n: usize) -> u32 {
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
            self.set_buffer(
                libc::SO_SNDBUF,
                libc::SO_SNDBUFFORCE,
                snd,
                "setsockopt SO_SNDBUF",
            )?;
            self.set_buffer(
                libc::SO_RCVBUF,
                libc::SO_RCVBUFFORCE,
                rcv,
                "setsockopt SO_RCVBUF",
            )?;
        }
        let n = self
            .sock
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
        match self.sock.recv(&mut self.buf) {
            Ok(n) => Ok(n),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN)) => {
                Err(NetlinkError::Timeout(REPLY_TIMEOUT))
            }
            Err(e) => Err(NetlinkError::io(during, e)),
        }
    }

    /// Send a batch and wait for its end: `Ok` when the kernel committed it, else the first
    /// error, mapped to the object of the failing message.
    pub fn send_batch(&mut self, batch: &Batch) -> Result<(), NetlinkError> {
        self.send(&batch.bytes, "sending the batch")?;
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
                let framing = batch
                    .objects
                    .iter()
                    .any(|(s, o)| *s == seq && *o == Object::Batch);
                if seq == batch.last_seq
                    || (errno != 0 && (framing || batch.objects.iter().all(|(s, _)| *s != seq)))
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
                if errno == libc::EPERM || errno == libc::EACCES {
                    return Err(NetlinkError::Permission {
                        during: "applying the batch".into(),
                    });
                }
                let object = batch
                    .objects
                    .iter()
                    .find(|(s, _)| *s == seq)
                    .map(|(_, o)| o.clone())
                    .unwrap_or(Object::Batch);
                Err(NetlinkError::Rejected {
                    object,
                    errno,
                    meaning: errno_meaning(errno),
                })
            }
        }
    }

    /// Dump request of `msg` for `family`; returns each reply message's attributes' owner bytes.
    fn dump(
        &mut self,
        msg: u16,
        family: u8,
        during: &'static str,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        self.dump_with(msg, family, &[], during)
    }

    /// A dump request carrying attributes (`extra`, already encoded).
    fn dump_with(
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
                    if m.flags & 0x10 != 0 {
                        interrupted = true; // NLM_F_DUMP_INTR
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
    pub fn generation(&mut self) -> Result<u32, NetlinkError> {
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
                    gen = wire::find(&at, NFTA_GEN_ID).and_then(wire::be32);
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

    /// Every table, of every owner.
    pub fn tables(&mut self) -> Result<Vec<LiveTable>, NetlinkError> {
        let during = "listing tables";
        let mut out = Vec::new();
        for m in self.dump(NFT_MSG_GETTABLE, NFPROTO_UNSPEC, during)? {
            let at =
                wire::attrs(&m[1..]).map_err(|what| NetlinkError::Malformed { during, what })?;
            let Some(family) = family_of(m[0]) else {
                continue;
            };
            out.push(LiveTable {
                family,
                name: wire::find(&at, NFTA_TABLE_NAME)
                    .map(wire::string)
                    .unwrap_or_default(),
                handle: wire::find(&at, NFTA_TABLE_HANDLE)
                    .and_then(wire::be64)
                    .unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// The attribute areas of the objects a dump of `msg` lists for one table (`table_attr`
    /// is the attribute holding the table's name, the first of every nf_tables object). The
    /// request names the table, which spares reading other tables' rules.
    fn table_objects(
        &mut self,
        msg: u16,
        family: Family,
        table: &str,
        table_attr: u16,
        during: &'static str,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        // The request names the table: the kernel then sends only that table's rules (seen
        // here), but chain dumps ignore it, so the check below stays for every kind.
        let mut filter = Vec::new();
        let label = || Object::Table {
            table: format!("{} {table}", family.keyword()),
        };
        str_attr(&mut filter, table_attr, "table", table, label)?;
        let mut out = Vec::new();
        for m in self.dump_with(msg, family_number(family), &filter, during)? {
            let at =
                wire::attrs(&m[1..]).map_err(|what| NetlinkError::Malformed { during, what })?;
            if wire::find(&at, table_attr).map(wire::string).as_deref() == Some(table) {
                out.push(m[1..].to_vec());
            }
        }
        Ok(out)
    }

    /// The attribute areas of one table's rules, as the kernel dumps them.
    pub(crate) fn rule_areas(
        &mut self,
        family: Family,
        table: &str,
        during: &'static str,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        self.table_objects(NFT_MSG_GETRULE, family, table, NFTA_RULE_TABLE, during)
    }

    /// The chains of one table.
    pub fn chains(&mut self, family: Family, table: &str) -> Result<Vec<LiveChain>, NetlinkError> {
        let during = "listing chains";
        self.table_objects(NFT_MSG_GETCHAIN, family, table, NFTA_CHAIN_TABLE, during)?
            .iter()
            .map(|area| {
                objects::chain_of(area, table)
                    .map_err(|what| NetlinkError::Malformed { during, what })
            })
            .collect()
    }

    /// The sets (named and anonymous) of one table.
    pub fn sets(&mut self, family: Family, table: &str) -> Result<Vec<LiveSet>, NetlinkError> {
        let during = "listing sets";
        self.table_objects(NFT_MSG_GETSET, family, table, NFTA_SET_TABLE, during)?
            .iter()
            .map(|area| {
                objects::set_of(area, table)
                    .map_err(|what| NetlinkError::Malformed { during, what })
            })
            .collect()
    }

    /// The elements of one set.
    fn set_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
    ) -> Result<Vec<(Vec<u8>, bool)>, NetlinkError> {
        let during = "listing set elements";
        let mut extra = Vec::new();
        let label = || Object::Set {
            table: format!("{} {table}", family.keyword()),
            set: set.to_string(),
        };
        str_attr(&mut extra, NFTA_SET_ELEM_LIST_TABLE, "table", table, label)?;
        str_attr(&mut extra, NFTA_SET_ELEM_LIST_SET, "set", set, label)?;
        let mut out = Vec::new();
        for m in self.dump_with(NFT_MSG_GETSETELEM, family_number(family), &extra, during)? {
            let els = objects::elements_of(&m[1..])
                .map_err(|what| NetlinkError::Malformed { during, what })?;
            out.extend(els);
        }
        Ok(out)
    }

    /// Read the given tables back from the kernel into the model (tables that do not exist are
    /// left out): chains with their hooks, named sets with their elements, and every rule
    /// decoded through [`crate::decode`] and [`crate::raise`] (the inverse of [`plan_apply`]'s
    /// encoding). Rules come back in [`nftmesh_model::canonical::canonical_rule`] form; an expression the
    /// model cannot express is [`NetlinkError::Unsupported`], naming it and its rule.
    pub fn dump_ruleset(&mut self, tables: &[(Family, String)]) -> Result<Ruleset, NetlinkError> {
        let live = self.tables()?;
        let mut out = Ruleset::default();
        for (family, name) in tables {
            if !live.iter().any(|l| l.family == *family && &l.name == name) {
                continue;
            }
            let during = "dumping the ruleset";
            let bad = |what: String| NetlinkError::Malformed { during, what };
            let mut parts = objects::TableParts::default();
            for ls in self.sets(*family, name)? {
                let els = self.set_elements(*family, name, &ls.name)?;
                parts.sets.push((ls, els));
            }
            parts.chains = self.chains(*family, name)?;
            for area in self.rule_areas(*family, name, during)? {
                parts.rules.push(objects::rule_of(&area).map_err(bad)?);
            }
            out.tables
                .push(objects::assemble(*family, name, parts, during)?);
        }
        // Hash sets list their elements in no particular order.
        Ok(nftmesh_model::canonical::canonical_ruleset(&out))
    }

    fn live_state(&mut self, ruleset: &Ruleset) -> Result<LiveState, NetlinkError> {
        let tables = self.tables()?;
        let mut live = LiveState {
            tables,
            ..LiveState::default()
        };
        for t in &ruleset.tables {
            if !live
                .tables
                .iter()
                .any(|l| l.family == t.family && l.name == t.name)
            {
                continue;
            }
            for c in self.chains(t.family, &t.name)? {
                live.chains.push((t.family, c));
            }
            for s in self.sets(t.family, &t.name)? {
                live.sets.push((t.family, s));
            }
        }
        Ok(live)
    }

    /// Make the tables of `ruleset` exactly as given, in ONE transaction (see [`plan_apply`]).
    /// Tables not in `ruleset` are not touched. If another writer commits between the read of
    /// the live state and the batch, the kernel refuses the batch and it is rebuilt and resent.
    pub fn apply(&mut self, ruleset: &Ruleset) -> Result<ApplyReport, NetlinkError> {
        self.apply_removing(ruleset, |_| Ok(Vec::new()))
    }

    /// [`Connection::apply`], deleting in the same transaction what `removals` finds (read
    /// again on every attempt, against the same generation as the batch).
    pub fn apply_removing(
        &mut self,
        ruleset: &Ruleset,
        mut removals: impl FnMut(&mut Self) -> Result<Vec<crate::migrate::Removal>, NetlinkError>,
    ) -> Result<ApplyReport, NetlinkError> {
        if ruleset.tables.is_empty() {
            return Ok(ApplyReport::default());
        }
        for attempt in 1..=MAX_ATTEMPTS {
            // After our own commit nothing needs reading: the batch carries the generation it
            // assumes, and the kernel refuses it if anyone committed since.
            let (gen, live) = match self.committed.take() {
                Some(c) if c.covers(ruleset) => (c.genid, c.live),
                _ => (self.generation()?, self.live_state(ruleset)?),
            };
            let extra = removals(self)?;
            let first = self.next_seq(0);
            let batch = plan_apply_removing(ruleset, &live, &extra, Some(gen), first)?;
            self.seq = batch.objects.last().map(|(s, _)| s + 1).unwrap_or(self.seq);
            match self.send_batch(&batch) {
                Ok(()) => {
                    self.committed = Some(Committed::after(ruleset, gen.wrapping_add(1)));
                    return Ok(ApplyReport {
                        messages: batch.messages,
                        bytes: batch.bytes.len(),
                        deleted_chains: batch.deleted_chains,
                        deleted_tables: batch.deleted_tables,
                        attempts: attempt,
                    });
                }
                Err(NetlinkError::Rejected { errno, .. }) if errno == libc::ERESTART => {
                    contention_backoff(attempt + 1);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(NetlinkError::Contended(MAX_ATTEMPTS))
    }

    /// Delete the given tables (those that exist) in one transaction; returns how many.
    /// Every other table is left alone.
    pub fn delete_tables(&mut self, tables: &[(Family, String)]) -> Result<usize, NetlinkError> {
        self.committed = None;
        for attempt in 1..=MAX_ATTEMPTS {
            let gen = self.generation()?;
            let live = self.tables()?;
            let mut doomed: Vec<&(Family, String)> = Vec::new();
            for t in tables {
                if live.iter().any(|l| l.family == t.0 && l.name == t.1) && !doomed.contains(&t) {
                    doomed.push(t);
                }
            }
            if doomed.is_empty() {
                return Ok(0);
            }
            let first = self.next_seq(doomed.len() + 2);
            let mut b = BatchWriter::new(first, Some(gen));
            for (i, (f, n)) in doomed.iter().enumerate() {
                let flags = if i + 1 == doomed.len() { NLM_F_ACK } else { 0 };
                let obj = Object::Table {
                    table: format!("{} {n}", f.keyword()),
                };
                b.emit(obj, |w, seq| {
                    w.table(NFT_MSG_DELTABLE, flags, family_number(*f), n, seq)
                })?;
            }
            let last_seq = b.seq - 1;
            self.seq = b.seq + 1;
            let batch = b.finish(last_seq, Vec::new());
            match self.send_batch(&batch) {
                Ok(()) => return Ok(doomed.len()),
                Err(NetlinkError::Rejected { errno, .. }) if errno == libc::ERESTART => {
                    contention_backoff(attempt + 1);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(NetlinkError::Contended(MAX_ATTEMPTS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftmesh_model::config::CaptureConfig;

    fn types(b: &Batch) -> Vec<u16> {
        wire::messages(&b.bytes)
            .unwrap()
            .iter()
            .map(|m| m.ty)
            .collect()
    }

    #[test]
    fn a_new_table_is_created_without_flush_and_only_the_last_message_asks_for_an_ack() {
        let rs = nftmesh_model::compile(&CaptureConfig::sidecar());
        let b = plan_apply(&rs, &LiveState::default(), Some(7), 100).unwrap();
        let msgs = wire::messages(&b.bytes).unwrap();
        assert_eq!(msgs.len(), b.messages);
        assert_eq!(msgs.first().unwrap().ty, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(msgs.last().unwrap().ty, NFNL_MSG_BATCH_END);
        assert!(!types(&b).contains(&msg_type(NFT_MSG_DELRULE)));
        let acked: Vec<u32> = msgs
            .iter()
            .filter(|m| m.flags & NLM_F_ACK != 0)
            .map(|m| m.seq)
            .collect();
        assert_eq!(acked, vec![b.last_seq]);
        let seqs: Vec<u32> = msgs.iter().map(|m| m.seq).collect();
        let want: Vec<u32> = (100..100 + msgs.len() as u32).collect();
        assert_eq!(seqs, want, "consecutive sequence numbers");
        let rules = types(&b)
            .iter()
            .filter(|t| **t == msg_type(NFT_MSG_NEWRULE))
            .count();
        assert_eq!(rules, rs.rule_count());
        // The generation id rides on the batch begin.
        let begin = msgs[0].payload;
        let at = wire::attrs(&begin[4..]).unwrap();
        assert_eq!(wire::find(&at, 1).and_then(wire::be32), Some(7));
    }

    #[test]
    fn an_existing_table_is_flushed_and_chains_it_no_longer_has_are_deleted() {
        let rs = nftmesh_model::compile(&CaptureConfig::sidecar());
        let t = &rs.tables[0];
        let live = LiveState {
            tables: vec![LiveTable {
                family: t.family,
                name: t.name.clone(),
                handle: 1,
            }],
            chains: vec![(
                t.family,
                LiveChain {
                    table: t.name.clone(),
                    name: "OLD".into(),
                    handle: 9,
                    hook: None,
                    kind: String::new(),
                    policy: NF_ACCEPT as u32,
                },
            )],
            sets: vec![(
                t.family,
                LiveSet {
                    table: t.name.clone(),
                    name: "old_set".into(),
                    flags: 0,
                    key_type: TYPE_IPADDR,
                    key_len: 4,
                },
            )],
        };
        let b = plan_apply(&rs, &live, None, 1).unwrap();
        let ty = types(&b);
        let flush = ty
            .iter()
            .position(|t| *t == msg_type(NFT_MSG_DELRULE))
            .expect("flush");
        let first_rule = ty
            .iter()
            .position(|t| *t == msg_type(NFT_MSG_NEWRULE))
            .unwrap();
        let del_chain = ty
            .iter()
            .position(|t| *t == msg_type(NFT_MSG_DELCHAIN))
            .expect("delete OLD");
        let del_set = ty
            .iter()
            .position(|t| *t == msg_type(NFT_MSG_DELSET))
            .expect("delete old_set");
        assert!(flush < del_set && del_set < first_rule && first_rule < del_chain);
        assert_eq!(
            b.deleted_chains,
            vec![format!("{} {} OLD", t.family.keyword(), t.name)]
        );
    }

    #[test]
    fn every_message_maps_to_the_object_it_is_about() {
        let rs = nftmesh_model::compile(&CaptureConfig::sidecar());
        let b = plan_apply(&rs, &LiveState::default(), None, 1).unwrap();
        let msgs = wire::messages(&b.bytes).unwrap();
        for m in &msgs {
            let obj = b
                .objects
                .iter()
                .find(|(s, _)| *s == m.seq)
                .map(|(_, o)| o)
                .expect("mapped");
            if m.ty == msg_type(NFT_MSG_NEWRULE) {
                assert!(matches!(obj, Object::Rule { .. }), "{obj}");
            }
        }
        let rule_texts: Vec<String> = b
            .objects
            .iter()
            .filter_map(|(_, o)| match o {
                Object::Rule { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect();
        assert!(
            rule_texts.iter().any(|t| t.contains("redirect to :15001")),
            "{rule_texts:?}"
        );
    }
}
