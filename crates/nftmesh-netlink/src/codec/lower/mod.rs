//! Model → kernel expressions, emitting exactly the bytecode `nft` emits for the same text
//! (checked against `nft --debug=netlink`), so `nft list ruleset` prints our rules as it prints
//! its own.
//!
//! Protocol dependencies are added the way `nft` adds them: an `ip`/`ip6` match in an `inet`
//! table is preceded by `meta nfproto`, a `tcp`/`udp` port match by `meta l4proto` (by
//! `ip protocol` in an `ip` table), unless an earlier match of the rule already established it.

use crate::codec::ir::{interval_elements, Expr, WireSet};
use crate::codec::sys::*;
use ipnet::IpNet;
use nftmesh_model::expr::{
    Direction, IpVersion, L4Proto, MarkValue, Match, Owner, Statement, Values, Verdict,
};
use nftmesh_model::ruleset::{Family, Rule};
use std::net::IpAddr;

mod matches;
mod sets;
mod statements;

pub use sets::lower_set;

/// Something the kernel cannot be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} cannot be encoded: {why}")]
pub struct LowerError {
    /// The match or statement, rendered as nft text.
    pub what: String,
    /// Why.
    pub why: &'static str,
}

/// A rule lowered to expressions plus the anonymous sets it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoweredRule {
    /// The expressions in order.
    pub exprs: Vec<Expr>,
    /// Anonymous sets to create in the same batch, before the rule.
    pub sets: Vec<WireSet>,
}

struct Ctx<'a> {
    family: Family,
    l4: Option<L4Proto>,
    nf: Option<IpVersion>,
    next_set_id: &'a mut u32,
    out: Vec<Expr>,
    sets: Vec<WireSet>,
}

/// Lower one rule of a table of `family`. `next_set_id` numbers anonymous sets in the batch.
pub fn lower_rule(
    family: Family,
    rule: &Rule,
    next_set_id: &mut u32,
) -> Result<LoweredRule, LowerError> {
    let mut cx = Ctx {
        family,
        l4: None,
        nf: None,
        next_set_id,
        out: Vec::new(),
        sets: Vec::new(),
    };
    for m in &rule.matches {
        cx.lower_match(m)?;
    }
    for s in &rule.statements {
        cx.lower_statement(s)?;
    }
    Ok(LoweredRule {
        exprs: cx.out,
        sets: cx.sets,
    })
}

fn cmp_op(negate: bool) -> u32 {
    if negate {
        NFT_CMP_NEQ
    } else {
        NFT_CMP_EQ
    }
}

fn err(what: impl Into<String>, why: &'static str) -> LowerError {
    LowerError {
        what: what.into(),
        why,
    }
}

use nftmesh_model::limits::PORT_SET_EXACT_MAX;

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

fn prefix_interval(n: &IpNet) -> (Vec<u8>, Vec<u8>) {
    let n = n.trunc();
    (addr_bytes(n.network()), addr_bytes(n.broadcast()))
}

/// Interface name as the kernel compares it: IFNAMSIZ bytes, zero padded.
pub fn ifname_bytes(name: &str) -> Result<Vec<u8>, LowerError> {
    if name.len() >= IFNAMSIZ || name.contains('\0') {
        return Err(err(
            format!("interface {name:?}"),
            "names are at most 15 bytes without NUL",
        ));
    }
    let mut v = name.as_bytes().to_vec();
    v.resize(IFNAMSIZ, 0);
    Ok(v)
}

impl Ctx<'_> {
    fn push(&mut self, e: Expr) {
        self.out.push(e);
    }

    fn load_meta(&mut self, key: u32) {
        self.push(Expr::Meta {
            key,
            dreg: NFT_REG_1,
        });
    }

    fn cmp(&mut self, op: u32, data: Vec<u8>) {
        self.push(Expr::Cmp {
            sreg: NFT_REG_1,
            op,
            data,
        });
    }

    fn new_set(
        &mut self,
        key_type: u32,
        key_len: u32,
        interval: bool,
        elements: Vec<(Vec<u8>, bool)>,
    ) -> (String, u32) {
        let id = *self.next_set_id;
        *self.next_set_id += 1;
        let mut flags = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT;
        if interval {
            flags |= NFT_SET_INTERVAL;
        }
        let name = "__set%d".to_string();
        self.sets.push(WireSet {
            name: name.clone(),
            id,
            flags,
            key_type,
            key_len,
            elements,
        });
        (name, id)
    }

    fn lookup(&mut self, set: String, set_id: Option<u32>, invert: bool) {
        self.push(Expr::Lookup {
            sreg: NFT_REG_1,
            set,
            set_id,
            invert,
        });
    }

    fn nfproto(&mut self, v: IpVersion) {
        if self.family == Family::Inet && self.nf != Some(v) {
            self.load_meta(NFT_META_NFPROTO);
            self.cmp(NFT_CMP_EQ, vec![nfproto_of(v)]);
            self.nf = Some(v);
        }
    }

    fn l4(&mut self, p: L4Proto) {
        if self.l4 == Some(p) {
            return;
        }
        if self.family == Family::Ip {
            self.push(Expr::Payload {
                base: NFT_PAYLOAD_NETWORK_HEADER,
                offset: 9,
                len: 1,
                dreg: NFT_REG_1,
            });
        } else {
            self.load_meta(NFT_META_L4PROTO);
        }
        self.cmp(NFT_CMP_EQ, vec![p.number()]);
        self.l4 = Some(p);
    }
}

/// `NFPROTO_*` of an IP version.
pub fn nfproto_of(v: IpVersion) -> u8 {
    match v {
        IpVersion::V4 => NFPROTO_IPV4,
        IpVersion::V6 => NFPROTO_IPV6,
    }
}
