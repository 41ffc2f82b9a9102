//! What the capture's counters say: every counted rule of a ruleset given a [`Reason`] (what
//! the packets it counts had happen to them, in the mesh's words) and the rules' packet and
//! byte counts summed by reason.
//!
//! The reason is read from the rule itself, so it holds for any capture nftmesh installs and
//! for tables read back from the kernel: a rule that redirects or TPROXYs is a capture
//! (DNS when it matches destination port 53, else inbound when a prerouting chain or the
//! proxy's own connections reach it, outbound otherwise); a rule that returns or accepts is a passthrough, its reason taken
//! from what it matches (the proxy's uid or gid, loopback, an interface, an address range, a
//! port, a mark); a drop is a drop; everything else (jumps, marks, conntrack zones) is
//! [`Reason::Other`] and summed under it.
//!
//! ```
//! use nftmesh_model::stats::{Counter, Reason, Stats};
//! use nftmesh_model::{compile, CaptureConfig};
//!
//! let ruleset = compile(&CaptureConfig::sidecar());
//! // One packet on every rule.
//! let counters = Stats::places(&ruleset)
//!     .map(|p| (p, Counter { packets: 1, bytes: 60 }));
//! let stats = Stats::new(&ruleset, counters);
//! assert_eq!(stats.total(Reason::CapturedOutbound).packets, 1);
//! assert_eq!(stats.total(Reason::CapturedInbound).packets, 1);
//! ```

use crate::expr::{Direction, Match, Statement, Values, Verdict};
use crate::render::render_rule;
use crate::ruleset::{Family, Hook, Rule, Ruleset};
use serde::Serialize;
use std::collections::HashMap;

/// A rule's packet and byte counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counter {
    /// Packets counted. In a `nat` chain only a connection's first packet is seen, so this is
    /// the number of connections.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

impl std::ops::Add for Counter {
    type Output = Counter;

    /// The sum of two counts (saturating: counters never wrap into a small number).
    fn add(self, other: Counter) -> Counter {
        Counter {
            packets: self.packets.saturating_add(other.packets),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }
}

/// Why the packets a rule counts pass the capture, or where they are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Redirected (or TPROXYed) to the proxy's outbound port: sent by a local application.
    CapturedOutbound,
    /// Redirected (or TPROXYed) to the proxy's inbound port: arriving for the pod.
    CapturedInbound,
    /// DNS (destination port 53) redirected to the proxy's DNS port.
    CapturedDns,
    /// Passed: sent by the proxy's uid.
    PassthroughProxyUid,
    /// Passed: sent by the proxy's gid.
    PassthroughProxyGid,
    /// Passed: loopback traffic (`lo`, `127.0.0.0/8`, `::1`, the proxy's `127.0.0.6`/`::6`).
    PassthroughLoopback,
    /// Passed: an excluded interface.
    PassthroughExcludedInterface,
    /// Passed: an excluded address range.
    PassthroughExcludedCidr,
    /// Passed: an excluded port (the inbound tunnel port among them).
    PassthroughExcludedPort,
    /// Passed: a mark the proxy (or ztunnel) set.
    PassthroughMark,
    /// Passed with no match of the above (the end of a chain's decisions).
    PassthroughOther,
    /// Dropped.
    Dropped,
    /// Not a decision: jumps, marks, conntrack zones.
    Other,
}

impl Reason {
    /// Every reason, in report order.
    pub const ALL: [Reason; 13] = [
        Reason::CapturedOutbound,
        Reason::CapturedInbound,
        Reason::CapturedDns,
        Reason::PassthroughProxyUid,
        Reason::PassthroughProxyGid,
        Reason::PassthroughLoopback,
        Reason::PassthroughExcludedInterface,
        Reason::PassthroughExcludedCidr,
        Reason::PassthroughExcludedPort,
        Reason::PassthroughMark,
        Reason::PassthroughOther,
        Reason::Dropped,
        Reason::Other,
    ];

    /// The label used in JSON and Prometheus output (`captured_outbound`, ...).
    pub fn label(self) -> &'static str {
        match self {
            Reason::CapturedOutbound => "captured_outbound",
            Reason::CapturedInbound => "captured_inbound",
            Reason::CapturedDns => "captured_dns",
            Reason::PassthroughProxyUid => "passthrough_proxy_uid",
            Reason::PassthroughProxyGid => "passthrough_proxy_gid",
            Reason::PassthroughLoopback => "passthrough_loopback",
            Reason::PassthroughExcludedInterface => "passthrough_excluded_interface",
            Reason::PassthroughExcludedCidr => "passthrough_excluded_cidr",
            Reason::PassthroughExcludedPort => "passthrough_excluded_port",
            Reason::PassthroughMark => "passthrough_mark",
            Reason::PassthroughOther => "passthrough_other",
            Reason::Dropped => "dropped",
            Reason::Other => "other",
        }
    }

    /// The reason in an operator's words (`captured outbound`, `passthrough: proxy uid`).
    pub fn describe(self) -> &'static str {
        match self {
            Reason::CapturedOutbound => "captured outbound",
            Reason::CapturedInbound => "captured inbound",
            Reason::CapturedDns => "DNS captured",
            Reason::PassthroughProxyUid => "passthrough: proxy uid",
            Reason::PassthroughProxyGid => "passthrough: proxy gid",
            Reason::PassthroughLoopback => "passthrough: loopback",
            Reason::PassthroughExcludedInterface => "passthrough: excluded interface",
            Reason::PassthroughExcludedCidr => "passthrough: excluded CIDR",
            Reason::PassthroughExcludedPort => "passthrough: excluded port",
            Reason::PassthroughMark => "passthrough: mark",
            Reason::PassthroughOther => "passthrough: other",
            Reason::Dropped => "dropped",
            Reason::Other => "other (jumps, marks, zones)",
        }
    }
}

/// Where a rule is: family, table, chain and its index in the chain (from 0).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Place {
    /// The table's family.
    pub family: Family,
    /// The table.
    pub table: String,
    /// The chain.
    pub chain: String,
    /// The rule's index in its chain, from 0.
    pub index: usize,
}

/// One counted rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleStats {
    /// Where it is.
    #[serde(flatten)]
    pub place: Place,
    /// The rule as nft text.
    pub rule: String,
    /// What the packets it counts had happen.
    pub reason: Reason,
    /// Its counts.
    #[serde(flatten)]
    pub counter: Counter,
}

/// Every counted rule of a ruleset with its reason and counts, and the sums by reason.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Stats {
    /// The rules with a counter, in ruleset order.
    pub rules: Vec<RuleStats>,
}

impl Stats {
    /// Every rule's place in `ruleset`, in order.
    pub fn places(ruleset: &Ruleset) -> impl Iterator<Item = Place> + '_ {
        ruleset.tables.iter().flat_map(|t| {
            t.chains.iter().flat_map(move |c| {
                (0..c.rules.len()).map(move |index| Place {
                    family: t.family,
                    table: t.name.clone(),
                    chain: c.name.clone(),
                    index,
                })
            })
        })
    }

    /// The stats of `ruleset` given its rules' counters (by place; rules without one, or
    /// places the ruleset does not have, are left out).
    pub fn new(ruleset: &Ruleset, counters: impl IntoIterator<Item = (Place, Counter)>) -> Self {
        let counters: HashMap<Place, Counter> = counters.into_iter().collect();
        let mut rules = Vec::new();
        for t in &ruleset.tables {
            let reach = reaching(t);
            for c in &t.chains {
                let ways = reach.get(c.name.as_str()).cloned().unwrap_or_default();
                for (index, rule) in c.rules.iter().enumerate() {
                    let place = Place {
                        family: t.family,
                        table: t.name.clone(),
                        chain: c.name.clone(),
                        index,
                    };
                    let Some(counter) = counters.get(&place).copied() else {
                        continue;
                    };
                    rules.push(RuleStats {
                        reason: classify(rule, &ways),
                        rule: render_rule(rule),
                        place,
                        counter,
                    });
                }
            }
        }
        Stats { rules }
    }

    /// The sum of the counters of every rule with this reason.
    pub fn total(&self, reason: Reason) -> Counter {
        self.rules
            .iter()
            .filter(|r| r.reason == reason)
            .fold(Counter::default(), |acc, r| acc + r.counter)
    }

    /// The sums of every reason, in [`Reason::ALL`] order.
    pub fn totals(&self) -> Vec<(Reason, Counter)> {
        Reason::ALL.iter().map(|r| (*r, self.total(*r))).collect()
    }

    /// The stats in Prometheus' text exposition format: `nftmesh_capture_packets_total` and
    /// `nftmesh_capture_bytes_total` by reason, and `nftmesh_rule_packets_total` /
    /// `nftmesh_rule_bytes_total` by table, chain and rule index.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        for (metric, help, bytes) in [
            (
                "nftmesh_capture_packets_total",
                "Packets counted by nftmesh's capture rules, by what the rule does (in nat chains: connections).",
                false,
            ),
            (
                "nftmesh_capture_bytes_total",
                "Bytes counted by nftmesh's capture rules, by what the rule does.",
                true,
            ),
        ] {
            out.push_str(&format!("# HELP {metric} {help}\n# TYPE {metric} counter\n"));
            for (reason, c) in self.totals() {
                let v = if bytes { c.bytes } else { c.packets };
                out.push_str(&format!("{metric}{{reason=\"{}\"}} {v}\n", reason.label()));
            }
        }
        for (metric, help, bytes) in [
            (
                "nftmesh_rule_packets_total",
                "Packets counted by one rule of nftmesh's tables.",
                false,
            ),
            (
                "nftmesh_rule_bytes_total",
                "Bytes counted by one rule of nftmesh's tables.",
                true,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {metric} {help}\n# TYPE {metric} counter\n"
            ));
            for r in &self.rules {
                let v = if bytes {
                    r.counter.bytes
                } else {
                    r.counter.packets
                };
                out.push_str(&format!(
                    "{metric}{{family=\"{}\",table=\"{}\",chain=\"{}\",index=\"{}\",reason=\"{}\"}} {v}\n",
                    r.place.family.keyword(),
                    label_value(&r.place.table),
                    label_value(&r.place.chain),
                    r.place.index,
                    r.reason.label()
                ));
            }
        }
        out
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// How a chain is reached: from a base chain at this hook, and whether through a jump of a
/// rule that matches the proxy's own uid or gid (the proxy's own connections, which the
/// capture only ever sends back to its inbound port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// The base chain's hook.
    pub hook: Hook,
    /// Whether a jump on the way matches the proxy's uid or gid.
    pub proxy_owned: bool,
}

/// For every chain of the table, the ways it is reached from base chains (by jumps and gotos,
/// to any depth).
fn reaching(t: &crate::ruleset::Table) -> HashMap<&str, Vec<Reach>> {
    let mut out: HashMap<&str, Vec<Reach>> = HashMap::new();
    for base in t.chains.iter() {
        let Some(b) = base.base else { continue };
        let mut todo = vec![(
            base.name.as_str(),
            Reach {
                hook: b.hook,
                proxy_owned: false,
            },
        )];
        while let Some((name, reach)) = todo.pop() {
            let known = out.entry(name).or_default();
            if known.contains(&reach) {
                continue;
            }
            known.push(reach);
            let Some(chain) = t.chains.iter().find(|c| c.name == name) else {
                continue;
            };
            for r in &chain.rules {
                let owned = reach.proxy_owned
                    || r.matches.iter().any(|m| {
                        matches!(
                            m,
                            Match::SkUid { negate: false, .. } | Match::SkGid { negate: false, .. }
                        )
                    });
                for s in &r.statements {
                    if let Statement::Verdict(Verdict::Jump(to) | Verdict::Goto(to)) = s {
                        todo.push((
                            to.as_str(),
                            Reach {
                                hook: reach.hook,
                                proxy_owned: owned,
                            },
                        ));
                    }
                }
            }
        }
    }
    out
}

/// The reason of one rule whose chain is reached in the ways `reach` lists: a capture is
/// inbound when reached from prerouting or for the proxy's own connections, outbound
/// otherwise.
pub fn classify(rule: &Rule, reach: &[Reach]) -> Reason {
    let captures = rule
        .statements
        .iter()
        .any(|s| matches!(s, Statement::Redirect { .. } | Statement::Tproxy { .. }));
    if captures {
        let dns = rule.matches.iter().any(|m| {
            matches!(m, Match::Port { dir: Direction::Dst, negate: false, values, .. }
                if port_values_contain(values, 53))
        });
        let inbound = reach
            .iter()
            .any(|r| r.hook == Hook::Prerouting || r.proxy_owned);
        return if dns {
            Reason::CapturedDns
        } else if inbound {
            Reason::CapturedInbound
        } else {
            // From output, or from no base chain yet (Istio's `istio-redirect` before any
            // outbound range is captured): the proxy's outbound port.
            Reason::CapturedOutbound
        };
    }
    let verdict = rule.statements.iter().find_map(|s| match s {
        Statement::Verdict(v) => Some(v),
        _ => None,
    });
    match verdict {
        Some(Verdict::Drop) => Reason::Dropped,
        Some(Verdict::Accept | Verdict::Return) => passthrough(&rule.matches),
        _ => Reason::Other,
    }
}

/// The values of a match written in the rule (none for a named set, whose elements the rule
/// does not hold).
fn listed<T>(values: &Values<T>) -> &[T] {
    match values {
        Values::One(v) => std::slice::from_ref(v),
        Values::Set(v) => v,
        Values::Named(_) => &[],
    }
}

fn port_values_contain(values: &Values<crate::expr::PortRange>, port: u16) -> bool {
    listed(values).iter().any(|r| r.contains(port))
}

fn is_loopback_net(n: &ipnet::IpNet) -> bool {
    let six: std::net::IpAddr = std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6).into();
    n.network().is_loopback() || n.network() == six
}

/// The passthrough reason of a returning or accepting rule, from its matches.
fn passthrough(matches: &[Match]) -> Reason {
    let positive = |f: &dyn Fn(&Match) -> bool| matches.iter().any(f);
    if positive(&|m| matches!(m, Match::SkUid { negate: false, .. })) {
        return Reason::PassthroughProxyUid;
    }
    if positive(&|m| matches!(m, Match::SkGid { negate: false, .. })) {
        return Reason::PassthroughProxyGid;
    }
    let lo = |v: &Values<String>| listed(v).iter().any(|n| n == "lo");
    if positive(&|m| match m {
        Match::Iifname {
            negate: false,
            values,
        }
        | Match::Oifname {
            negate: false,
            values,
        } => lo(values),
        Match::Addr {
            negate: false,
            values,
            ..
        } => !listed(values).is_empty() && listed(values).iter().all(is_loopback_net),
        _ => false,
    }) {
        return Reason::PassthroughLoopback;
    }
    if positive(&|m| {
        matches!(
            m,
            Match::Iifname { negate: false, .. } | Match::Oifname { negate: false, .. }
        )
    }) {
        return Reason::PassthroughExcludedInterface;
    }
    if positive(&|m| matches!(m, Match::Addr { negate: false, .. })) {
        return Reason::PassthroughExcludedCidr;
    }
    if positive(&|m| matches!(m, Match::Port { negate: false, .. })) {
        return Reason::PassthroughExcludedPort;
    }
    if positive(&|m| matches!(m, Match::Mark { .. } | Match::CtMark { .. })) {
        return Reason::PassthroughMark;
    }
    Reason::PassthroughOther
}

#[cfg(test)]
mod tests;
