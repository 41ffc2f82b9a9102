//! nf_tables objects read from their netlink attributes, the same whether the bytes come from
//! a kernel dump or from a batch this crate wrote ([`crate::codec::readback::decode_transaction`]): chains,
//! sets, set elements and rules, and one table assembled from them into the model.

use super::numbers::hook_number;
use crate::codec::ir::Expr;
use crate::codec::raise::SetData;
use crate::codec::sys::*;
use crate::codec::wire;
use crate::error::{NetlinkError, Object};
use nftmesh_model::ruleset::{BaseChain, Chain, ChainType, Family, Hook, Policy, Table};
use std::collections::HashMap;

/// A table as listed by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTable {
    /// Family.
    pub family: Family,
    /// Name.
    pub name: String,
    /// Kernel handle.
    pub handle: u64,
    /// `NFT_TABLE_F_*` flags (`dormant` 0x1, `owner` 0x2, `persist` 0x4).
    pub flags: u32,
    /// The netlink port id of the socket that owns the table (`NFTA_TABLE_OWNER`), while it
    /// has the `owner` flag; `None` for a table anyone may change.
    pub owner: Option<u32>,
}

impl LiveTable {
    /// Whether the table is owned: only the socket with port id [`LiveTable::owner`] may
    /// change or delete it.
    pub fn is_owned(&self) -> bool {
        self.flags & NFT_TABLE_F_OWNER != 0
    }

    /// Whether the table has the `persist` flag: it stays when its owner's socket closes.
    pub fn is_persistent(&self) -> bool {
        self.flags & NFT_TABLE_F_PERSIST != 0
    }

    /// Whether the table is an orphan: persistent, its owner gone, so any socket may change
    /// it and a socket that declares it with `owner` + `persist` becomes its owner.
    pub fn is_orphan(&self) -> bool {
        self.is_persistent() && !self.is_owned()
    }
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

/// A chain from the attributes of a chain message (`NEWCHAIN` or a chain dump).
pub(crate) fn chain_of(area: &[u8], table: &str) -> Result<LiveChain, String> {
    let at = wire::attrs(area)?;
    let hook = match at.get(NFTA_CHAIN_HOOK) {
        Some(h) => {
            let h = wire::attrs(h)?;
            let num = h.be32(NFTA_HOOK_HOOKNUM);
            let prio = h.be32(NFTA_HOOK_PRIORITY);
            num.zip(prio).map(|(n, p)| (n, p as i32))
        }
        None => None,
    };
    Ok(LiveChain {
        table: table.to_string(),
        name: at.string(NFTA_CHAIN_NAME).unwrap_or_default(),
        handle: at.be64(NFTA_CHAIN_HANDLE).unwrap_or(0),
        hook,
        kind: at.string(NFTA_CHAIN_TYPE).unwrap_or_default(),
        policy: at.be32(NFTA_CHAIN_POLICY).unwrap_or(NF_ACCEPT as u32),
    })
}

/// A set from the attributes of a set message (`NEWSET` or a set dump).
pub(crate) fn set_of(area: &[u8], table: &str) -> Result<LiveSet, String> {
    let at = wire::attrs(area)?;
    let u32_at = |ty| at.be32(ty).unwrap_or(0);
    Ok(LiveSet {
        table: table.to_string(),
        name: at.string(NFTA_SET_NAME).unwrap_or_default(),
        flags: u32_at(NFTA_SET_FLAGS),
        key_type: u32_at(NFTA_SET_KEY_TYPE),
        key_len: u32_at(NFTA_SET_KEY_LEN),
    })
}

/// Set elements as the kernel holds them: (key, whether it ends an interval).
pub(crate) type Elements = Vec<(Vec<u8>, bool)>;

/// The elements of a set element message.
pub(crate) fn elements_of(area: &[u8]) -> Result<Elements, String> {
    let at = wire::attrs(area)?;
    let mut out = Vec::new();
    let Some(list) = at.get(NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return Ok(out);
    };
    for (_, elem) in wire::attrs(list)? {
        let e = wire::attrs(elem)?;
        let key = match e.get(NFTA_SET_ELEM_KEY) {
            Some(k) => {
                let k = wire::attrs(k)?;
                k.get(NFTA_DATA_VALUE)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default()
            }
            None => Vec::new(),
        };
        let end = e.be32(NFTA_SET_ELEM_FLAGS).unwrap_or(0) & NFT_SET_ELEM_INTERVAL_END != 0;
        out.push((key, end));
    }
    Ok(out)
}

/// A rule read from its message: its chain, handle, expressions, counts and comment.
pub(crate) struct RawRule {
    /// The chain's name.
    pub chain: String,
    /// The kernel's handle of the rule (0 in a batch, which has none).
    pub handle: u64,
    /// The packets and bytes of its `counter` expressions (summed), if it has any.
    pub counter: Option<nftmesh_model::stats::Counter>,
    /// The decoded expressions.
    pub exprs: Vec<Expr>,
    /// The comment from its user data.
    pub comment: Option<String>,
}

/// A rule from the attributes of a rule message (`NEWRULE` or a rule dump).
pub(crate) fn rule_of(area: &[u8]) -> Result<RawRule, String> {
    let at = wire::attrs(area)?;
    let chain = at.string(NFTA_RULE_CHAIN).unwrap_or_default();
    let list = at.get(NFTA_RULE_EXPRESSIONS).unwrap_or(&[]);
    let exprs = crate::codec::decode::decode_exprs(list)
        .map_err(|e| format!("rule in chain {chain}: {e}"))?;
    let handle = at.be64(NFTA_RULE_HANDLE).unwrap_or(0);
    let comment = at
        .get(NFTA_RULE_USERDATA)
        .and_then(crate::codec::decode::comment_of);
    Ok(RawRule {
        counter: crate::codec::decode::counter_of(list),
        chain,
        handle,
        exprs,
        comment,
    })
}

/// What one table holds, as read: chains in order, sets with their elements, rules in order.
#[derive(Default)]
pub(crate) struct TableParts {
    /// The chains.
    pub chains: Vec<LiveChain>,
    /// Every set (named and anonymous) by the name rules look it up by.
    pub sets: Vec<(LiveSet, Elements)>,
    /// The rules.
    pub rules: Vec<RawRule>,
}

/// One table of the model from its parts: named sets raised, chains with their base, each rule
/// raised (with the sets it looks up) into its chain. `during` names the operation in errors.
pub(crate) fn assemble(
    family: Family,
    name: &str,
    parts: TableParts,
    during: &'static str,
) -> Result<Table, NetlinkError> {
    let bad = |what: String| NetlinkError::Malformed { during, what };
    let label = format!("{} {name}", family.keyword());
    let mut table = Table::new(family, name.to_string());
    let mut sets = HashMap::new();
    let mut named = Vec::new();
    for (ls, elements) in parts.sets {
        if ls.flags & NFT_SET_ANONYMOUS == 0 {
            named.push(ls.name.clone());
        }
        let data = SetData {
            key_type: ls.key_type,
            key_len: ls.key_len,
            flags: ls.flags,
            elements,
        };
        sets.insert(ls.name, data);
    }
    for s in &named {
        let set =
            crate::codec::raise::raise_set(s, &sets[s]).map_err(|u| NetlinkError::Unsupported {
                name: u.name,
                object: Box::new(Object::Set {
                    table: label.clone(),
                    set: s.clone(),
                }),
                detail: u.detail,
            })?;
        table.sets.push(set);
    }
    for c in parts.chains {
        let base = match c.hook {
            Some((hook, priority)) => {
                let hook = Hook::ALL
                    .into_iter()
                    .find(|h| hook_number(*h) == hook)
                    .ok_or_else(|| bad(format!("chain {}: hook {hook}", c.name)))?;
                let kind = match c.kind.as_str() {
                    "filter" => ChainType::Filter,
                    "nat" => ChainType::Nat,
                    "route" => ChainType::Route,
                    k => return Err(bad(format!("chain {}: type {k:?}", c.name))),
                };
                let policy = if c.policy == NF_DROP as u32 {
                    Policy::Drop
                } else {
                    Policy::Accept
                };
                Some(BaseChain {
                    kind,
                    hook,
                    priority,
                    policy,
                })
            }
            None => None,
        };
        table.chains.push(Chain {
            name: c.name,
            base,
            rules: Vec::new(),
        });
    }
    for raw in parts.rules {
        let Some(ch) = table.chains.iter_mut().find(|c| c.name == raw.chain) else {
            return Err(bad(format!("rule of unknown chain {}", raw.chain)));
        };
        let index = ch.rules.len();
        let rule = crate::codec::raise::raise_rule(family, &raw.exprs, &sets, raw.comment)
            .map_err(|u| NetlinkError::Unsupported {
                name: u.name,
                object: Box::new(Object::Rule {
                    table: label.clone(),
                    chain: raw.chain.clone(),
                    index,
                    text: raw
                        .exprs
                        .iter()
                        .map(|e| e.name())
                        .collect::<Vec<_>>()
                        .join(" "),
                }),
                detail: u.detail,
            })?;
        ch.rules.push(rule);
    }
    Ok(table)
}
