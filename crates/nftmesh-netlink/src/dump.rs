//! Reading tables back from the kernel into the model ([`Connection::dump_ruleset`]), with
//! each rule's handle and counter when asked ([`Connection::dump_counted`]).

use crate::codec::objects;
use crate::codec::sys::*;
use crate::codec::wire;
use crate::connection::Connection;
use crate::error::NetlinkError;
use nftmesh_model::ruleset::{Family, Ruleset};
use nftmesh_model::stats::{Counter, Place};

/// One rule of a table and the chains its verdicts jump or go to
/// ([`Connection::rule_jumps`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleJumps {
    /// The chain holding the rule.
    pub chain: String,
    /// The rule's handle (`None` in a malformed reply).
    pub handle: Option<u64>,
    /// The chains it jumps or goes to.
    pub targets: Vec<String>,
}

/// One rule as the kernel holds it: where it is in the dumped ruleset, its handle, its
/// counter and the names of its expressions (for rules the model cannot express).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRule {
    /// Family, table, chain and index in the chain (the index of the dumped ruleset's rule).
    pub place: Place,
    /// The kernel's rule handle (what trace events name).
    pub handle: u64,
    /// Packets and bytes of its `counter` expression; `None` without one.
    pub counter: Option<Counter>,
    /// Its expressions' kernel names, in order (`meta cmp counter immediate`).
    pub expressions: String,
}

impl Connection {
    /// Read the given tables back from the kernel into the model (tables that do not exist are
    /// left out): chains with their hooks, named sets with their elements, and every rule
    /// decoded through `codec::decode` and `codec::raise` (the inverse of [`crate::Transaction::plan`]'s
    /// encoding). Rules come back in [`nftmesh_model::canonical::canonical_rule`] form; an expression the
    /// model cannot express is [`NetlinkError::Unsupported`], naming it and its rule.
    pub fn dump_ruleset(&mut self, tables: &[(Family, String)]) -> Result<Ruleset, NetlinkError> {
        Ok(self.dump_counted(tables)?.0)
    }

    /// [`Connection::dump_ruleset`], and every dumped rule's handle and counter, read in the
    /// same dump (so the counts belong to exactly the rules returned).
    pub fn dump_counted(
        &mut self,
        tables: &[(Family, String)],
    ) -> Result<(Ruleset, Vec<LiveRule>), NetlinkError> {
        let live = self.tables()?;
        let mut out = Ruleset::default();
        let mut rules = Vec::new();
        for (family, name) in tables {
            if !live.iter().any(|l| l.family == *family && &l.name == name) {
                continue;
            }
            let during = "dumping the ruleset";
            let mut parts = objects::TableParts::default();
            for ls in self.sets(*family, name)? {
                let els = self.set_elements(*family, name, &ls.name)?;
                parts.sets.push((ls, els));
            }
            parts.chains = self.chains(*family, name)?;
            parts.rules = self.raw_rules(*family, name, during)?;
            rules.extend(live_rules(*family, name, &parts.rules));
            out.tables
                .push(objects::assemble(*family, name, parts, during)?);
        }
        // Hash sets list their elements in no particular order.
        Ok((nftmesh_model::canonical::canonical_ruleset(&out), rules))
    }

    /// The rules of one table with their handles, counters and expression names, whatever
    /// their expressions (nothing is raised into the model, so no rule is refused).
    pub fn rule_handles(
        &mut self,
        family: Family,
        table: &str,
    ) -> Result<Vec<LiveRule>, NetlinkError> {
        let raw = self.raw_rules(family, table, "listing rules")?;
        Ok(live_rules(family, table, &raw))
    }

    /// The rules of one table with the chains each jumps or goes to (from its verdicts),
    /// whatever their other expressions, in the kernel's order.
    pub fn rule_jumps(
        &mut self,
        family: Family,
        table: &str,
    ) -> Result<Vec<RuleJumps>, NetlinkError> {
        let during = "listing rules";
        let mut out = Vec::new();
        for area in self.rule_areas(family, table, during)? {
            let at = wire::attrs(&area).map_err(|what| NetlinkError::Malformed { during, what })?;
            out.push(RuleJumps {
                chain: at.string(NFTA_RULE_CHAIN).unwrap_or_default(),
                handle: at.be64(NFTA_RULE_HANDLE),
                targets: crate::codec::decode::verdict_chains(
                    at.get(NFTA_RULE_EXPRESSIONS).unwrap_or(&[]),
                ),
            });
        }
        Ok(out)
    }

    fn raw_rules(
        &mut self,
        family: Family,
        table: &str,
        during: &'static str,
    ) -> Result<Vec<objects::RawRule>, NetlinkError> {
        self.rule_areas(family, table, during)?
            .iter()
            .map(|area| {
                objects::rule_of(area).map_err(|what| NetlinkError::Malformed { during, what })
            })
            .collect()
    }
}

/// Each rule's place (its index counted within its chain, in dump order), handle and counter.
fn live_rules(family: Family, table: &str, raw: &[objects::RawRule]) -> Vec<LiveRule> {
    let mut next: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    raw.iter()
        .map(|r| {
            let index = next.entry(r.chain.as_str()).or_insert(0);
            let place = Place {
                family,
                table: table.to_string(),
                chain: r.chain.clone(),
                index: *index,
            };
            *index += 1;
            LiveRule {
                place,
                handle: r.handle,
                counter: r.counter,
                expressions: r
                    .exprs
                    .iter()
                    .map(|e| e.name())
                    .collect::<Vec<_>>()
                    .join(" "),
            }
        })
        .collect()
}
