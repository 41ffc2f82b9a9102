//! Checks iptables makes when a table is committed: no jump loops, and every match and target
//! only in the tables and hooks the kernel allows it (`-i` not in OUTPUT/POSTROUTING, `-o` not
//! in PREROUTING/INPUT, `owner` only on output hooks, `REDIRECT` only in nat PREROUTING/OUTPUT, `SNAT` only in nat POSTROUTING/INPUT,
//! `TPROXY` only in mangle PREROUTING, `CT` only in raw, `socket` only on PREROUTING/INPUT, no
//! `DROP` in nat). A user chain is checked against every built-in chain that reaches it.

use crate::ast::{IptMatch, IptTable, TableName, Target};
use crate::error::{ParseError, ParseErrorKind as K};
use std::collections::BTreeSet;

/// The user chains a rule of `chain` jumps or goes to.
fn callees<'a>(table: &'a IptTable, chain: &str) -> impl Iterator<Item = &'a str> + 'a {
    table
        .chain(chain)
        .into_iter()
        .flat_map(|c| &c.rules)
        .filter_map(|r| match r.target.as_ref().map(|t| &t.node) {
            Some(Target::Jump(c)) | Some(Target::Goto(c)) => Some(c.as_str()),
            _ => None,
        })
}

/// The built-in chains from which each chain is reachable, indexed like `table.chains`.
pub fn reached_from(table: &IptTable) -> Vec<BTreeSet<&'static str>> {
    let mut out = vec![BTreeSet::new(); table.chains.len()];
    for hook in table.name.builtin_chains() {
        let mut stack = vec![*hook];
        let mut seen = BTreeSet::new();
        while let Some(c) = stack.pop() {
            if !seen.insert(c.to_string()) {
                continue;
            }
            if let Some(i) = table.chains.iter().position(|x| x.name == c) {
                out[i].insert(*hook);
            }
            stack.extend(callees(table, c));
        }
    }
    out
}

fn find_loop(table: &IptTable) -> Option<(usize, usize)> {
    // Depth-first search with colours over user chains; returns (chain, rule) of the back edge.
    #[derive(Clone, Copy, PartialEq)]
    enum C {
        White,
        Grey,
        Black,
    }
    fn visit(t: &IptTable, i: usize, col: &mut [C]) -> Option<(usize, usize)> {
        col[i] = C::Grey;
        for (ri, r) in t.chains[i].rules.iter().enumerate() {
            if let Some(Target::Jump(c) | Target::Goto(c)) = r.target.as_ref().map(|t| &t.node) {
                let Some(j) = t.chains.iter().position(|x| &x.name == c) else {
                    continue;
                };
                match col[j] {
                    C::Grey => return Some((i, ri)),
                    C::White => {
                        if let Some(x) = visit(t, j, col) {
                            return Some(x);
                        }
                    }
                    C::Black => {}
                }
            }
        }
        col[i] = C::Black;
        None
    }
    let mut col = vec![C::White; table.chains.len()];
    for i in 0..table.chains.len() {
        if col[i] == C::White {
            if let Some(x) = visit(table, i, &mut col) {
                return Some(x);
            }
        }
    }
    None
}

/// Check a table about to be committed.
pub fn validate(table: &IptTable) -> Result<(), ParseError> {
    if let Some((ci, ri)) = find_loop(table) {
        let r = &table.chains[ci].rules[ri];
        let t = r.target.as_ref().map(|t| t.span).unwrap_or(r.span);
        let name = match r.target.as_ref().map(|t| &t.node) {
            Some(Target::Jump(c) | Target::Goto(c)) => c.clone(),
            _ => String::new(),
        };
        return Err(ParseError::new(t, name, K::Loop));
    }
    let reach = reached_from(table);
    for (ci, chain) in table.chains.iter().enumerate() {
        let hooks = &reach[ci];
        let builtin = chain.policy.is_some();
        let only = |allowed: &[&str]| hooks.iter().all(|h| allowed.contains(h));
        for r in &chain.rules {
            for m in &r.matches {
                let bad = match &m.node {
                    IptMatch::Interface { input: true, .. }
                        if builtin && matches!(chain.name.as_str(), "OUTPUT" | "POSTROUTING") =>
                    {
                        Some("-i is not allowed in OUTPUT or POSTROUTING")
                    }
                    IptMatch::Interface { input: false, .. }
                        if builtin && matches!(chain.name.as_str(), "PREROUTING" | "INPUT") =>
                    {
                        Some("-o is not allowed in PREROUTING or INPUT")
                    }
                    IptMatch::Owner { .. } | IptMatch::SocketExists { .. }
                        if !only(&["OUTPUT", "POSTROUTING"]) =>
                    {
                        Some(
                            "owner match is only valid in chains reached from OUTPUT or POSTROUTING",
                        )
                    }
                    IptMatch::SocketTransparent if !only(&["PREROUTING", "INPUT"]) => Some(
                        "socket match is only valid in chains reached from PREROUTING or INPUT",
                    ),
                    _ => None,
                };
                if let Some(why) = bad {
                    return Err(ParseError::new(
                        m.span,
                        m.node.to_string(),
                        K::NotAllowedHere(why),
                    ));
                }
            }
            let Some(t) = &r.target else { continue };
            let bad = match &t.node {
                Target::Drop if table.name == TableName::Nat => {
                    Some("DROP is not allowed in the nat table")
                }
                Target::Redirect { .. }
                    if table.name != TableName::Nat || !only(&["PREROUTING", "OUTPUT"]) =>
                {
                    Some("REDIRECT is only valid in nat chains reached from PREROUTING or OUTPUT")
                }
                Target::Tproxy { .. }
                    if table.name != TableName::Mangle || !only(&["PREROUTING"]) =>
                {
                    Some("TPROXY is only valid in mangle chains reached from PREROUTING")
                }
                Target::Snat { .. }
                    if table.name != TableName::Nat || !only(&["POSTROUTING", "INPUT"]) =>
                {
                    Some("SNAT is only valid in nat chains reached from POSTROUTING or INPUT")
                }
                Target::CtZone(_) if table.name != TableName::Raw => {
                    Some("CT is only valid in the raw table")
                }
                _ => None,
            };
            if let Some(why) = bad {
                return Err(ParseError::new(
                    t.span,
                    t.node.to_string(),
                    K::NotAllowedHere(why),
                ));
            }
        }
    }
    Ok(())
}
