//! One of the two fenced modules with `unsafe` (the other is [`crate::os`]): nf_tables
//! netlink messages built by libnftnl (`nftnl-sys`). The crate root denies `unsafe_code`;
//! only these two allow it.
//!
//! Each message function checks its object against [`crate::codec::bounds`] first (names, values,
//! keys, expressions, the size of the whole message), then allocates the libnftnl object, sets
//! its attributes, lets libnftnl write the message into the scratch buffer of
//! [`bounds::SCRATCH_LEN`] bytes, copies the finished message into the batch and frees the
//! object. Nothing libnftnl allocates outlives the call, and libnftnl is never handed a value
//! longer than the field it copies it into, nor a message longer than the buffer.
#![allow(unsafe_code)]

use crate::codec::bounds::{self, Limit};
use crate::codec::ir::WireSet;
use crate::codec::sys::*;
use nftnl_sys as nft;
use std::ffi::CString;
use std::os::raw::{c_char, c_void};

pub use crate::codec::bounds::BuildError;

mod builder;
mod sets;

pub(crate) use builder::{attr, Built, ExprBuilder};

/// A checked name (see [`bounds::name`]) as a C string.
fn cname(what: &'static str, s: &str) -> Result<CString, BuildError> {
    bounds::name(what, s)?;
    CString::new(s).map_err(|_| BuildError::Nul {
        what,
        value: s.to_string(),
    })
}

/// A checked string of `limit` as a C string.
fn cstring(what: &'static str, s: &str, limit: Limit) -> Result<CString, BuildError> {
    bounds::string(what, s, limit)?;
    CString::new(s).map_err(|_| BuildError::Nul {
        what,
        value: s.to_string(),
    })
}

/// Writes nf_tables messages, one after another, into a byte buffer.
pub struct MsgWriter {
    scratch: Vec<u8>,
    /// The messages written so far.
    pub out: Vec<u8>,
}

impl Default for MsgWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl MsgWriter {
    /// A writer with a scratch buffer large enough for any single message
    /// ([`bounds::SCRATCH_LEN`]; the module doc of [`crate::codec::bounds`] says why).
    pub fn new() -> Self {
        MsgWriter {
            scratch: vec![0u8; bounds::SCRATCH_LEN],
            out: Vec::new(),
        }
    }

    fn hdr(&mut self, ty: u16, family: u8, flags: u16, seq: u32) -> *mut libc::nlmsghdr {
        // SAFETY: scratch holds SCRATCH_LEN (> 20) bytes; libnftnl writes the 16-byte netlink
        // header and the 4-byte nfgenmsg at its start and nothing else.
        unsafe {
            nft::nftnl_nlmsg_build_hdr(
                self.scratch.as_mut_ptr() as *mut c_char,
                ty,
                u16::from(family),
                flags,
                seq,
            )
        }
    }

    /// Copy the message libnftnl finished in scratch into the batch; returns its length.
    fn commit(&mut self) -> usize {
        let len = u32::from_ne_bytes([
            self.scratch[0],
            self.scratch[1],
            self.scratch[2],
            self.scratch[3],
        ]) as usize;
        let len = align4(len).min(self.scratch.len());
        self.out.extend_from_slice(&self.scratch[..len]);
        len
    }

    /// The batch begin message.
    pub fn batch_begin(&mut self, seq: u32) {
        // SAFETY: as in `hdr`: libnftnl writes a header and nfgenmsg, 20 bytes, into scratch.
        unsafe { nft::nftnl_batch_begin(self.scratch.as_mut_ptr() as *mut c_char, seq) };
        self.commit();
    }

    /// The batch begin message carrying the generation id the batch was prepared against
    /// (the kernel refuses the batch with `ERESTART` if the ruleset changed since).
    pub fn batch_begin_genid(&mut self, seq: u32, genid: Option<u32>) {
        let Some(genid) = genid else {
            self.batch_begin(seq);
            return;
        };
        let len: u32 = 16 + 4 + 8;
        self.out.extend_from_slice(&len.to_ne_bytes());
        self.out
            .extend_from_slice(&NFNL_MSG_BATCH_BEGIN.to_ne_bytes());
        self.out.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        self.out.extend_from_slice(&seq.to_ne_bytes());
        self.out.extend_from_slice(&0u32.to_ne_bytes());
        self.out.push(NFPROTO_UNSPEC);
        self.out.push(0);
        self.out
            .extend_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
        self.out.extend_from_slice(&8u16.to_ne_bytes());
        self.out.extend_from_slice(&1u16.to_ne_bytes()); // NFNL_BATCH_GENID
        self.out.extend_from_slice(&genid.to_be_bytes());
    }

    /// The batch end message.
    pub fn batch_end(&mut self, seq: u32) {
        // SAFETY: as in `batch_begin`.
        unsafe { nft::nftnl_batch_end(self.scratch.as_mut_ptr() as *mut c_char, seq) };
        self.commit();
    }

    /// A table message (`NEWTABLE`, `DELTABLE`).
    pub fn table(
        &mut self,
        msg: u16,
        flags: u16,
        family: u8,
        name: &str,
        seq: u32,
    ) -> Result<(), BuildError> {
        self.table_with(msg, flags, family, name, None, seq)
    }

    /// A `NEWTABLE` carrying table flags (`NFT_TABLE_F_OWNER`: only the declaring socket may
    /// change the table, and the kernel deletes it when that socket closes, unless it also has
    /// `NFT_TABLE_F_PERSIST`).
    pub fn table_flagged(
        &mut self,
        flags: u16,
        family: u8,
        name: &str,
        table_flags: u32,
        seq: u32,
    ) -> Result<(), BuildError> {
        self.table_with(
            NFT_MSG_NEWTABLE,
            flags,
            family,
            name,
            Some(table_flags),
            seq,
        )
    }

    fn table_with(
        &mut self,
        msg: u16,
        flags: u16,
        family: u8,
        name: &str,
        table_flags: Option<u32>,
        seq: u32,
    ) -> Result<(), BuildError> {
        let name = cname("table", name)?;
        let nlh = self.hdr(msg_type(msg), family, flags, seq);
        // SAFETY: the table is freshly allocated (checked for NULL), given a checked C string of
        // at most NAME_MAX bytes that outlives the call (libnftnl copies it) and up to two
        // u32s, serialized behind the header just built (at most 20 + 260 + 8 bytes), and freed.
        unsafe {
            let mut rc = 0;
            let t = nft::nftnl_table_alloc();
            if t.is_null() {
                return Err(BuildError::Alloc("a table"));
            }
            rc |= nft::nftnl_table_set_str(t, nft::NFTNL_TABLE_NAME as u16, name.as_ptr());
            nft::nftnl_table_set_u32(t, nft::NFTNL_TABLE_FAMILY as u16, u32::from(family));
            if let Some(f) = table_flags {
                nft::nftnl_table_set_u32(t, nft::NFTNL_TABLE_FLAGS as u16, f);
            }
            if rc != 0 {
                nft::nftnl_table_free(t);
                return Err(BuildError::Alloc("a table attribute"));
            }
            nft::nftnl_table_nlmsg_build_payload(nlh, t);
            nft::nftnl_table_free(t);
        }
        self.commit();
        Ok(())
    }

    /// A chain message; `base` = (hook number, priority, type, policy verdict).
    #[allow(clippy::too_many_arguments)]
    pub fn chain(
        &mut self,
        msg: u16,
        flags: u16,
        family: u8,
        table: &str,
        name: &str,
        base: Option<(u32, i32, &str, u32)>,
        seq: u32,
    ) -> Result<(), BuildError> {
        let (table, name) = (cname("table", table)?, cname("chain", name)?);
        let kind = match base {
            Some((_, _, k, _)) => Some(cname("chain type", k)?),
            None => None,
        };
        let nlh = self.hdr(msg_type(msg), family, flags, seq);
        // SAFETY: as in `table`: three checked C strings of at most NAME_MAX bytes kept alive
        // by this frame and four integers (a message of at most 20 + 3 * 260 + 48 bytes).
        unsafe {
            let mut rc = 0;
            let c = nft::nftnl_chain_alloc();
            if c.is_null() {
                return Err(BuildError::Alloc("a chain"));
            }
            rc |= nft::nftnl_chain_set_str(c, nft::NFTNL_CHAIN_TABLE as u16, table.as_ptr());
            rc |= nft::nftnl_chain_set_str(c, nft::NFTNL_CHAIN_NAME as u16, name.as_ptr());
            nft::nftnl_chain_set_u32(c, nft::NFTNL_CHAIN_FAMILY as u16, u32::from(family));
            if let (Some((hook, prio, _, policy)), Some(kind)) = (base, &kind) {
                nft::nftnl_chain_set_u32(c, nft::NFTNL_CHAIN_HOOKNUM as u16, hook);
                nft::nftnl_chain_set_s32(c, nft::NFTNL_CHAIN_PRIO as u16, prio);
                rc |= nft::nftnl_chain_set_str(c, nft::NFTNL_CHAIN_TYPE as u16, kind.as_ptr());
                nft::nftnl_chain_set_u32(c, nft::NFTNL_CHAIN_POLICY as u16, policy);
            }
            if rc != 0 {
                nft::nftnl_chain_free(c);
                return Err(BuildError::Alloc("a chain attribute"));
            }
            nft::nftnl_chain_nlmsg_build_payload(nlh, c);
            nft::nftnl_chain_free(c);
        }
        self.commit();
        Ok(())
    }

    /// `DELRULE` for every rule of a table (`flush table`), or of one chain.
    pub fn flush_rules(
        &mut self,
        family: u8,
        table: &str,
        chain: Option<&str>,
        seq: u32,
    ) -> Result<(), BuildError> {
        self.del_rule(family, table, chain, None, seq)
    }

    /// `DELRULE` of one rule, by its handle.
    pub fn delete_rule(
        &mut self,
        family: u8,
        table: &str,
        chain: &str,
        handle: u64,
        seq: u32,
    ) -> Result<(), BuildError> {
        self.del_rule(family, table, Some(chain), Some(handle), seq)
    }

    fn del_rule(
        &mut self,
        family: u8,
        table: &str,
        chain: Option<&str>,
        handle: Option<u64>,
        seq: u32,
    ) -> Result<(), BuildError> {
        let table = cname("table", table)?;
        let chain = chain.map(|c| cname("chain", c)).transpose()?;
        let nlh = self.hdr(msg_type(NFT_MSG_DELRULE), family, 0, seq);
        // SAFETY: as in `table`: two checked C strings of at most NAME_MAX bytes that outlive
        // the calls, a u64 and a u32 (a message of at most 20 + 2 * 260 + 12 bytes).
        unsafe {
            let mut rc = 0;
            let r = nft::nftnl_rule_alloc();
            if r.is_null() {
                return Err(BuildError::Alloc("a rule"));
            }
            rc |= nft::nftnl_rule_set_str(r, nft::NFTNL_RULE_TABLE as u16, table.as_ptr());
            if let Some(c) = &chain {
                rc |= nft::nftnl_rule_set_str(r, nft::NFTNL_RULE_CHAIN as u16, c.as_ptr());
            }
            if let Some(h) = handle {
                nft::nftnl_rule_set_u64(r, nft::NFTNL_RULE_HANDLE as u16, h);
            }
            nft::nftnl_rule_set_u32(r, nft::NFTNL_RULE_FAMILY as u16, u32::from(family));
            if rc != 0 {
                nft::nftnl_rule_free(r);
                return Err(BuildError::Alloc("a rule attribute"));
            }
            nft::nftnl_rule_nlmsg_build_payload(nlh, r);
            nft::nftnl_rule_free(r);
        }
        self.commit();
        Ok(())
    }

    /// A `NEWRULE` appending the built expressions `exprs` (and a comment) to a chain.
    /// Checked whole first ([`bounds::rule_message_len`]): too many expressions or a message
    /// over one attribute's payload is an error and nothing is written (each expression's own
    /// limits were checked as it was built).
    #[allow(clippy::too_many_arguments)]
    pub fn rule(
        &mut self,
        flags: u16,
        family: u8,
        table: &str,
        chain: &str,
        exprs: Vec<Built>,
        comment: Option<&str>,
        seq: u32,
    ) -> Result<(), BuildError> {
        let sizes: Vec<usize> = exprs.iter().map(Built::encoded_len).collect();
        let expected = bounds::rule_message_len(table, chain, &sizes, comment)?;
        let (table, chain) = (cname("table", table)?, cname("chain", chain)?);
        let udata = comment.map(comment_udata).transpose()?;
        let built = exprs;
        let nlh = self.hdr(msg_type(NFT_MSG_NEWRULE), family, flags, seq);
        // SAFETY: every expression was built through `ExprBuilder`, whose typed setters take
        // values of at most VALUE_MAX bytes (libnftnl copies them into 64-byte fields) and
        // names of at most NAME_MAX, and which counted the bytes of each attribute it set
        // (never fewer than libnftnl writes); `rule_message_len` checked those sizes, their
        // number and the whole message: at most RULE_MESSAGE_MAX <= SCRATCH_LEN bytes are
        // written behind `nlh`. The rule takes ownership of each expression added to it and
        // frees them with itself; strings and data are copied by libnftnl during the calls.
        unsafe {
            let mut rc = 0;
            let r = nft::nftnl_rule_alloc();
            if r.is_null() {
                return Err(BuildError::Alloc("a rule"));
            }
            rc |= nft::nftnl_rule_set_str(r, nft::NFTNL_RULE_TABLE as u16, table.as_ptr());
            rc |= nft::nftnl_rule_set_str(r, nft::NFTNL_RULE_CHAIN as u16, chain.as_ptr());
            nft::nftnl_rule_set_u32(r, nft::NFTNL_RULE_FAMILY as u16, u32::from(family));
            if let Some(u) = &udata {
                rc |= nft::nftnl_rule_set_data(
                    r,
                    nft::NFTNL_RULE_USERDATA as u16,
                    u.as_ptr() as *const c_void,
                    u.len() as u32,
                );
            }
            for e in built {
                // The rule takes ownership of the expression and frees it with itself.
                nft::nftnl_rule_add_expr(r, e.into_raw());
            }
            if rc != 0 {
                nft::nftnl_rule_free(r);
                return Err(BuildError::Alloc("a rule attribute"));
            }
            nft::nftnl_rule_nlmsg_build_payload(nlh, r);
            nft::nftnl_rule_free(r);
        }
        let written = self.commit();
        debug_assert_eq!(
            written, expected,
            "rule message size model is off: expressions of {sizes:?} bytes"
        );
        Ok(())
    }
}
/// The nf_tables message type for `msg`.
pub fn msg_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// Rule userdata holding a comment, as `nft` writes it (TLV type 0, NUL-terminated).
fn comment_udata(c: &str) -> Result<Vec<u8>, BuildError> {
    let bytes = cstring("comment", c, Limit::Comment)?.into_bytes_with_nul();
    // At most COMMENT_MAX + 1 = 129 bytes: the TLV length byte holds it.
    let mut v = vec![0u8, bytes.len() as u8];
    v.extend_from_slice(&bytes);
    Ok(v)
}
