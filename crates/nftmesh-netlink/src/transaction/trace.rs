//! The transaction that creates `nftmesh trace`'s own table: owned by the socket that sends
//! it (`NFT_TABLE_F_OWNER`, so the kernel deletes it when that socket closes, whatever ends
//! the process), with one filter chain per traced hook at a priority before every other
//! chain, whose one rule sets `meta nftrace set 1` on the packets the filter matches.

use super::{TableOwner, Transaction, Writer};
use crate::codec::expr::encode_all;
use crate::codec::ir::Expr;
use crate::codec::lower::lower_rule;
use crate::codec::numbers::{family_number, hook_number};
use crate::codec::sys::*;
use crate::error::{NetlinkError, Object};
use nftmesh_model::expr::Match;
use nftmesh_model::render::render_rule;
use nftmesh_model::ruleset::{Family, Hook, Rule};

/// Before raw (-300) and conntrack (-200): the trace starts ahead of every table's chains.
pub const TRACE_PRIORITY: i32 = -350;

impl Transaction {
    /// The batch that creates the owned `inet` table `name` with a chain `hook` (named after
    /// it) for each of `hooks`, each holding `matches` + `meta nftrace set 1`. Sequence numbers
    /// start at `first_seq`.
    pub fn trace_table(
        name: &str,
        hooks: &[Hook],
        matches: &[Match],
        first_seq: u32,
    ) -> Result<Transaction, NetlinkError> {
        let family = Family::Inet;
        let fam = family_number(family);
        let label = format!("inet {name}");
        let mut b = Writer::new(first_seq, None);
        let table_obj = || Object::Table {
            table: label.clone(),
        };
        b.emit(table_obj(), |w, seq| {
            w.table_flagged(
                NLM_F_CREATE | NLM_F_EXCL,
                fam,
                name,
                TableOwner::Owner.flags(),
                seq,
            )
        })?;
        let filter = Rule::new(matches.to_vec(), Vec::new());
        let mut set_id = 1;
        for hook in hooks {
            let chain = hook.keyword();
            let chain_obj = Object::Chain {
                table: label.clone(),
                chain: chain.to_string(),
            };
            let base = Some((
                hook_number(*hook),
                TRACE_PRIORITY,
                "filter",
                NF_ACCEPT as u32,
            ));
            b.emit(chain_obj, |w, seq| {
                w.chain(NFT_MSG_NEWCHAIN, NLM_F_CREATE, fam, name, chain, base, seq)
            })?;
            let rule_obj = Object::Rule {
                table: label.clone(),
                chain: chain.to_string(),
                index: 0,
                text: format!("{} meta nftrace set 1", render_rule(&filter)),
            };
            let mut lowered = lower_rule(family, &filter, &mut set_id)
                .map_err(|e| NetlinkError::lower(rule_obj.clone(), e))?;
            for ws in &lowered.sets {
                b.set(rule_obj.clone(), fam, name, ws)?;
            }
            lowered.exprs.push(Expr::Immediate {
                dreg: NFT_REG_1,
                data: vec![1],
            });
            lowered.exprs.push(Expr::MetaSet {
                key: NFT_META_NFTRACE,
                sreg: NFT_REG_1,
            });
            b.emit(rule_obj, |w, seq| {
                w.rule(
                    NLM_F_CREATE | NLM_F_APPEND,
                    fam,
                    name,
                    chain,
                    encode_all(&lowered.exprs)?,
                    None,
                    seq,
                )
            })?;
        }
        // Acknowledged last: a no-op re-declaration of the table (no flags attribute, so the
        // owner flag is left as it is; the kernel refuses changing it).
        let last_seq = b.seq;
        b.emit(table_obj(), |w, seq| {
            w.table(NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_ACK, fam, name, seq)
        })?;
        Ok(b.finish(last_seq, Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftmesh_model::expr::L4Proto;

    #[test]
    fn the_trace_table_reads_back_as_its_filter_chains() {
        let matches = vec![Match::L4Proto {
            negate: false,
            proto: L4Proto::Tcp,
        }];
        let tx =
            Transaction::trace_table("t", &[Hook::Prerouting, Hook::Output], &matches, 1).unwrap();
        // begin, table, 2 × (chain, rule), ack, end.
        assert_eq!(tx.messages, 8);
        let back = tx.read_back().unwrap_err().to_string();
        // The model has no nftrace statement: reading it back names the meta set it cannot
        // express, in the rule it is in.
        assert!(
            back.contains("meta") && back.contains("prerouting"),
            "{back}"
        );
    }

    #[test]
    fn an_oversized_filter_is_refused_before_anything_is_written() {
        let many = vec![
            Match::Mark {
                negate: false,
                mask: u32::MAX,
                value: 1,
            };
            200
        ];
        let e = Transaction::trace_table("t", &[Hook::Output], &many, 1).unwrap_err();
        assert!(matches!(e, NetlinkError::TooLarge { .. }), "{e}");
    }
}
