//! A pod's drift in a few words, for the one log line of a repair: how many tables, chains,
//! rules and sets were missing, extra or changed, and what of the routing. The differences
//! themselves are logged at debug level, one line each.

use nftmesh::Drift;
use nftmesh_model::diff::Difference;
use std::fmt;

/// Counts of each kind of difference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Desired tables not in the kernel.
    pub tables_missing: usize,
    /// nftmesh tables the capture does not have.
    pub tables_extra: usize,
    /// Desired chains missing.
    pub chains_missing: usize,
    /// Chains the capture does not have.
    pub chains_extra: usize,
    /// Chains with another hook, type, priority or policy.
    pub chains_changed: usize,
    /// Desired rules absent.
    pub rules_missing: usize,
    /// Rules the capture does not have.
    pub rules_extra: usize,
    /// Rules other than desired at their position.
    pub rules_changed: usize,
    /// Named sets missing, extra or with other elements.
    pub sets_changed: usize,
    /// The TPROXY routing is (partly) missing.
    pub routing_missing: bool,
    /// TPROXY routing is present in REDIRECT mode.
    pub routing_extra: bool,
    /// `::6/128` is missing on `lo`.
    pub loopback_v6_missing: bool,
}

impl Summary {
    /// The counts of `drift`.
    pub fn of(drift: &[Drift]) -> Self {
        let mut s = Summary::default();
        for d in drift {
            match d {
                Drift::Rules(Difference::MissingTable { .. }) => s.tables_missing += 1,
                Drift::Rules(Difference::ExtraTable { .. }) => s.tables_extra += 1,
                Drift::Rules(Difference::MissingChain { .. }) => s.chains_missing += 1,
                Drift::Rules(Difference::ExtraChain { .. }) => s.chains_extra += 1,
                Drift::Rules(Difference::ChainHook { .. }) => s.chains_changed += 1,
                Drift::Rules(Difference::Rule { want, live, .. }) => match (want, live) {
                    (Some(_), None) => s.rules_missing += 1,
                    (None, Some(_)) => s.rules_extra += 1,
                    _ => s.rules_changed += 1,
                },
                Drift::Rules(Difference::Set { .. }) => s.sets_changed += 1,
                Drift::MissingRouting(_) => s.routing_missing = true,
                Drift::ExtraRouting(_) => s.routing_extra = true,
                Drift::MissingLoopbackV6 => s.loopback_v6_missing = true,
            }
        }
        s
    }
}

impl fmt::Display for Summary {
    /// `2 rules missing, 1 rule extra, TPROXY routing missing`; `no difference` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = [
            (self.tables_missing, "table", "missing"),
            (self.tables_extra, "table", "extra"),
            (self.chains_missing, "chain", "missing"),
            (self.chains_extra, "chain", "extra"),
            (self.chains_changed, "chain", "changed"),
            (self.rules_missing, "rule", "missing"),
            (self.rules_extra, "rule", "extra"),
            (self.rules_changed, "rule", "changed"),
            (self.sets_changed, "set", "changed"),
        ];
        let mut parts: Vec<String> = counts
            .iter()
            .filter(|(n, _, _)| *n > 0)
            .map(|(n, what, how)| format!("{n} {what}{} {how}", if *n == 1 { "" } else { "s" }))
            .collect();
        for (on, what) in [
            (self.routing_missing, "TPROXY routing missing"),
            (self.routing_extra, "TPROXY routing extra"),
            (self.loopback_v6_missing, "::6 missing on lo"),
        ] {
            if on {
                parts.push(what.to_string());
            }
        }
        if parts.is_empty() {
            return f.write_str("no difference");
        }
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(want: Option<&str>, live: Option<&str>) -> Drift {
        Drift::Rules(Difference::Rule {
            table: "inet istio-proxy-nat".into(),
            chain: "istio-output".into(),
            index: 0,
            want: want.map(str::to_string),
            live: live.map(str::to_string),
        })
    }

    #[test]
    fn each_kind_of_difference_is_counted_once() {
        let t = || "inet istio-proxy-mangle".to_string();
        let drift = [
            Drift::Rules(Difference::MissingTable { table: t() }),
            rule(Some("counter redirect to :15001"), None),
            rule(Some("return"), None),
            rule(None, Some("counter accept")),
            rule(Some("return"), Some("accept")),
            Drift::Rules(Difference::Set {
                table: t(),
                set: "s".into(),
            }),
            Drift::MissingRouting(Default::default()),
        ];
        let s = Summary::of(&drift);
        assert_eq!(
            (
                s.tables_missing,
                s.rules_missing,
                s.rules_extra,
                s.rules_changed
            ),
            (1, 2, 1, 1)
        );
        assert_eq!(
            s.to_string(),
            "1 table missing, 2 rules missing, 1 rule extra, 1 rule changed, 1 set changed, \
             TPROXY routing missing"
        );
        assert_eq!(Summary::of(&[]).to_string(), "no difference");
        let chains = [
            Drift::Rules(Difference::ExtraTable { table: t() }),
            Drift::Rules(Difference::MissingChain {
                table: t(),
                chain: "c".into(),
            }),
            Drift::Rules(Difference::ExtraChain {
                table: t(),
                chain: "d".into(),
            }),
            Drift::Rules(Difference::ChainHook {
                table: t(),
                chain: "e".into(),
            }),
            Drift::ExtraRouting(Default::default()),
            Drift::MissingLoopbackV6,
        ];
        assert_eq!(
            Summary::of(&chains).to_string(),
            "1 table extra, 1 chain missing, 1 chain extra, 1 chain changed, \
             TPROXY routing extra, ::6 missing on lo"
        );
    }
}
