//! Rule accumulation with Istio's append/insert semantics and its fixed chain layout.

use crate::ruleset::{priority, Chain, ChainType, Family, Hook, Rule, Ruleset, Table};

/// Istio's NAT table.
pub const NAT_TABLE: &str = "istio-proxy-nat";
/// Istio's mangle table.
pub const MANGLE_TABLE: &str = "istio-proxy-mangle";
/// Istio's raw table.
pub const RAW_TABLE: &str = "istio-proxy-raw";

/// Istio's chain names.
pub mod chain_names {
    /// Base chain on the prerouting hook.
    pub const PREROUTING: &str = "prerouting";
    /// Base chain on the output hook.
    pub const OUTPUT: &str = "output";
    /// Inbound dispatch.
    pub const INBOUND: &str = "istio-inbound";
    /// Outbound redirect to the proxy port.
    pub const REDIRECT: &str = "istio-redirect";
    /// Inbound redirect to the inbound capture port.
    pub const IN_REDIRECT: &str = "istio-in-redirect";
    /// Outbound dispatch.
    pub const OUTPUT_CHAIN: &str = "istio-output";
    /// DNS capture.
    pub const OUTPUT_DNS: &str = "istio-output-dns";
    /// TPROXY: mark and accept packets of established connections.
    pub const DIVERT: &str = "istio-divert";
    /// TPROXY: hand new connections to the proxy.
    pub const TPROXY: &str = "istio-tproxy";
    /// Drop of invalid packets.
    pub const DROP: &str = "istio-drop";
}

use chain_names::*;

/// A base chain's type, hook and priority.
type BaseSpec = (ChainType, Hook, i32);

/// One table's chains in Istio's creation order: (name, base chain spec).
fn layout(table: &str) -> Vec<(&'static str, Option<BaseSpec>)> {
    match table {
        NAT_TABLE => vec![
            (
                PREROUTING,
                Some((ChainType::Nat, Hook::Prerouting, priority::DSTNAT)),
            ),
            (
                OUTPUT,
                Some((ChainType::Nat, Hook::Output, priority::DSTNAT)),
            ),
            (INBOUND, None),
            (REDIRECT, None),
            (IN_REDIRECT, None),
            (OUTPUT_CHAIN, None),
            (OUTPUT_DNS, None),
        ],
        MANGLE_TABLE => vec![
            (
                PREROUTING,
                Some((ChainType::Filter, Hook::Prerouting, priority::MANGLE)),
            ),
            (
                OUTPUT,
                Some((ChainType::Route, Hook::Output, priority::MANGLE)),
            ),
            (DIVERT, None),
            (TPROXY, None),
            (INBOUND, None),
            (DROP, None),
        ],
        _ => vec![
            (
                PREROUTING,
                Some((ChainType::Filter, Hook::Prerouting, priority::RAW)),
            ),
            (
                OUTPUT,
                Some((ChainType::Filter, Hook::Output, priority::RAW)),
            ),
            (INBOUND, None),
            (OUTPUT_DNS, None),
        ],
    }
}

/// Collects rules per (table, chain) in Istio's order.
#[derive(Default)]
pub(crate) struct Builder {
    /// (table, chain, rules) in first-touch order.
    chains: Vec<(&'static str, &'static str, Vec<Rule>)>,
}

impl Builder {
    fn rules(&mut self, table: &'static str, chain: &'static str) -> &mut Vec<Rule> {
        let pos = match self
            .chains
            .iter()
            .position(|(t, c, _)| *t == table && *c == chain)
        {
            Some(p) => p,
            None => {
                self.chains.push((table, chain, Vec::new()));
                self.chains.len() - 1
            }
        };
        &mut self.chains[pos].2
    }

    /// Append a rule to a chain.
    pub(crate) fn append(&mut self, table: &'static str, chain: &'static str, rule: Rule) {
        self.rules(table, chain).push(rule);
    }

    /// Insert a rule before position `index` of a chain (at its end when shorter), like
    /// `nft insert rule ... index N` as Istio issues it.
    pub(crate) fn insert(
        &mut self,
        table: &'static str,
        chain: &'static str,
        index: usize,
        rule: Rule,
    ) {
        let rules = self.rules(table, chain);
        let at = index.min(rules.len());
        rules.insert(at, rule);
    }

    /// The ruleset: tables nat, mangle, raw (those with rules), chains in Istio's layout order
    /// (those with rules).
    pub(crate) fn finish(mut self) -> Ruleset {
        let mut tables = Vec::new();
        for table in [NAT_TABLE, MANGLE_TABLE, RAW_TABLE] {
            let mut t = Table::new(Family::Inet, table);
            for (name, base) in layout(table) {
                let rules = std::mem::take(self.rules(table, name));
                if rules.is_empty() {
                    continue;
                }
                let mut chain = match base {
                    Some((kind, hook, prio)) => Chain::base(name, kind, hook, prio),
                    None => Chain::regular(name),
                };
                chain.rules = rules;
                t.chains.push(chain);
            }
            if !t.chains.is_empty() {
                tables.push(t);
            }
        }
        Ruleset { tables }
    }
}
