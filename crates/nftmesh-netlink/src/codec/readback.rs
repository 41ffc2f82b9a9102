//! Reading a batch this crate wrote back into the model, without a kernel: what the kernel
//! would hold after committing it into a namespace without nftmesh's tables. The decoding
//! half is the one [`crate::Connection::dump_ruleset`] uses (the same `codec::objects`,
//! `codec::decode` and `codec::raise` code), so `Transaction::plan` → [`decode_transaction`] (of its bytes) checks the
//! codec end to end in a unit test or a fuzz target.

use crate::codec::ir::Expr;
use crate::codec::numbers::family_of;
use crate::codec::objects::{self, TableParts};
use crate::codec::sys::*;
use crate::codec::wire;
use crate::error::NetlinkError;
use nftmesh_model::ruleset::{Family, Rule, Ruleset};

const NFTA_SET_ID: u16 = 10;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;

/// The ruleset a transaction's messages (`bytes`, as [`crate::Transaction`] holds them) create: its tables, chains, sets and rules in batch order, rules in
/// canonical form (as [`crate::Connection::dump_ruleset`] returns them). Deletions and
/// flushes in the batch are skipped (against an empty namespace they remove nothing).
/// Anonymous sets are matched to their lookups by their batch id, as the kernel does.
pub fn decode_transaction(bytes: &[u8]) -> Result<Ruleset, NetlinkError> {
    let during = "reading a batch back";
    let bad = |what: String| NetlinkError::Malformed { during, what };
    let mut tables: Vec<(Family, String, TableParts)> = Vec::new();
    let messages = wire::messages(bytes).map_err(bad)?;
    for m in messages {
        if nfnl_subsys_id(m.ty) != NFNL_SUBSYS_NFTABLES {
            continue; // batch begin and end
        }
        let family = m
            .payload
            .first()
            .copied()
            .and_then(family_of)
            .ok_or_else(|| bad(format!("message {}: no family", m.seq)))?;
        let area = m
            .payload
            .get(4..)
            .ok_or_else(|| bad(format!("message {}: no nfgenmsg", m.seq)))?;
        let at = wire::attrs(area).map_err(bad)?;
        let str_at = |ty| at.string(ty).unwrap_or_default();
        let msg = nfnl_msg_type(m.ty);
        let table_attr = match msg {
            NFT_MSG_NEWTABLE => NFTA_TABLE_NAME,
            NFT_MSG_NEWCHAIN => NFTA_CHAIN_TABLE,
            NFT_MSG_NEWSET => NFTA_SET_TABLE,
            NFT_MSG_NEWSETELEM => NFTA_SET_ELEM_LIST_TABLE,
            NFT_MSG_NEWRULE => NFTA_RULE_TABLE,
            _ => continue,
        };
        let table = str_at(table_attr);
        let idx = match tables
            .iter()
            .position(|(f, n, _)| *f == family && *n == table)
        {
            Some(i) => i,
            None if msg == NFT_MSG_NEWTABLE => {
                tables.push((family, table.clone(), TableParts::default()));
                tables.len() - 1
            }
            None => return Err(bad(format!("message {}: table {table} not created", m.seq))),
        };
        let parts = &mut tables[idx].2;
        match msg {
            NFT_MSG_NEWCHAIN => parts
                .chains
                .push(objects::chain_of(area, &table).map_err(bad)?),
            NFT_MSG_NEWSET => {
                let mut set = objects::set_of(area, &table).map_err(bad)?;
                if set.flags & NFT_SET_ANONYMOUS != 0 {
                    let id = at.be32(NFTA_SET_ID).unwrap_or(0);
                    set.name = anonymous_name(id);
                }
                parts.sets.push((set, Vec::new()));
            }
            NFT_MSG_NEWSETELEM => {
                let name = str_at(NFTA_SET_ELEM_LIST_SET);
                let id = at.be32(NFTA_SET_ELEM_LIST_SET_ID);
                let els = objects::elements_of(area).map_err(bad)?;
                let set = parts.sets.iter_mut().find(|(s, _)| {
                    s.name == name || id.is_some_and(|id| s.name == anonymous_name(id))
                });
                match set {
                    Some((_, elements)) => elements.extend(els),
                    None => return Err(bad(format!("elements of unknown set {name}"))),
                }
            }
            NFT_MSG_NEWRULE => {
                let mut rule = objects::rule_of(area).map_err(bad)?;
                for e in &mut rule.exprs {
                    if let Expr::Lookup {
                        set,
                        set_id: Some(id),
                        ..
                    } = e
                    {
                        if set.contains('%') {
                            *set = anonymous_name(*id);
                        }
                    }
                }
                parts.rules.push(rule);
            }
            _ => {}
        }
    }
    let mut out = Ruleset::default();
    for (family, name, parts) in tables {
        out.tables
            .push(objects::assemble(family, &name, parts, during)?);
    }
    Ok(nftmesh_model::canonical::canonical_ruleset(&out))
}

/// The rules of a kernel reply to a rule dump (`NFT_MSG_GETRULE`), as captured bytes: every
/// message parsed, its expressions decoded and raised into the model (lookups of sets the
/// bytes do not carry are refused, as are expressions the model cannot express). An error
/// reply is the kernel error it carries. Never panics, whatever the bytes.
///
/// ```
/// use nftmesh_model::Family;
/// use nftmesh_netlink::readback::rules_from_dump;
///
/// // A message header claiming 48 bytes where 16 are: a typed error, not a panic.
/// let mut truncated = vec![48, 0, 0, 0];
/// truncated.resize(16, 0);
/// assert!(rules_from_dump(Family::Inet, &truncated).is_err());
/// assert!(rules_from_dump(Family::Inet, &[]).unwrap().is_empty());
/// ```
pub fn rules_from_dump(family: Family, bytes: &[u8]) -> Result<Vec<Rule>, NetlinkError> {
    let during = "reading a rule dump";
    let bad = |what: String| NetlinkError::Malformed { during, what };
    let mut out = Vec::new();
    for m in wire::messages(bytes).map_err(bad)? {
        if m.ty == NLMSG_ERROR {
            let (errno, _) = wire::error_payload(m.payload).map_err(bad)?;
            if errno != 0 {
                return Err(NetlinkError::kernel(during, errno));
            }
            continue;
        }
        let area = m
            .payload
            .get(4..)
            .ok_or_else(|| bad(format!("message {}: no nfgenmsg", m.seq)))?;
        let raw = objects::rule_of(area).map_err(bad)?;
        let index = out.len();
        out.push(rule_from(
            family,
            &raw.exprs,
            raw.comment,
            &raw.chain,
            index,
        )?);
    }
    Ok(out)
}

/// One rule from the bytes of its `NFTA_RULE_EXPRESSIONS` attribute (a list of expressions),
/// decoded and raised into the model. Never panics, whatever the bytes.
///
/// ```
/// use nftmesh_model::Family;
/// use nftmesh_netlink::readback::rule_from_expressions;
///
/// // An empty list is the empty rule; garbage is refused.
/// assert!(rule_from_expressions(Family::Inet, &[]).unwrap().matches.is_empty());
/// assert!(rule_from_expressions(Family::Inet, &[9, 0, 1, 0, 7]).is_err());
/// ```
pub fn rule_from_expressions(family: Family, list: &[u8]) -> Result<Rule, NetlinkError> {
    let exprs =
        crate::codec::decode::decode_exprs(list).map_err(|what| NetlinkError::Malformed {
            during: "decoding an expression list",
            what,
        })?;
    rule_from(family, &exprs, None, "", 0)
}

/// Raise one rule read from captured bytes; an error names it by its chain and position.
fn rule_from(
    family: Family,
    exprs: &[Expr],
    comment: Option<String>,
    chain: &str,
    index: usize,
) -> Result<Rule, NetlinkError> {
    crate::codec::raise::raise_rule(family, exprs, &std::collections::HashMap::new(), comment)
        .map_err(|u| NetlinkError::Unsupported {
            name: u.name,
            object: Box::new(crate::error::Object::Rule {
                table: format!("{} (captured bytes)", family.keyword()),
                chain: chain.to_string(),
                index,
                text: exprs.iter().map(|e| e.name()).collect::<Vec<_>>().join(" "),
            }),
            detail: u.detail,
        })
}

/// The name an anonymous set of batch id `id` goes by while a batch is read back.
fn anonymous_name(id: u32) -> String {
    format!("__set{id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::{LiveState, Transaction};
    use nftmesh_model::canonical::canonical_ruleset;
    use nftmesh_model::config::CaptureConfig;
    use nftmesh_model::{compile, render};

    fn round_trip(rs: &Ruleset) -> Ruleset {
        let tx = Transaction::plan(rs, &LiveState::default(), None, 1).expect("encodes");
        decode_transaction(&tx.bytes).expect("decodes")
    }

    #[test]
    fn compiled_captures_read_back_as_their_canonical_form() {
        let mut tproxy = CaptureConfig::sidecar();
        tproxy.mode = nftmesh_model::InterceptionMode::Tproxy;
        for cfg in [CaptureConfig::sidecar(), tproxy] {
            let rs = compile(&cfg);
            assert_eq!(
                render(&round_trip(&rs)),
                render(&canonical_ruleset(&rs)),
                "{cfg:?}"
            );
        }
    }
}
