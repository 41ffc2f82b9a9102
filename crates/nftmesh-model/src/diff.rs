//! Typed differences between a desired ruleset and a live one (read back from the kernel by
//! `nftmesh_netlink::Connection::dump_ruleset`). Both sides are compared in canonical form
//! ([`crate::canonical::canonical_ruleset`]), so encoding details never show up as drift.

use crate::canonical::canonical_ruleset;
use crate::render::render_rule;
use crate::ruleset::{Family, Ruleset};
use std::fmt;

/// One difference; `table` is `family name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// A desired table is not in the kernel.
    MissingTable {
        /// The table.
        table: String,
    },
    /// The kernel has a table (among those compared) that is not desired.
    ExtraTable {
        /// The table.
        table: String,
    },
    /// A desired chain is missing.
    MissingChain {
        /// The table.
        table: String,
        /// The chain.
        chain: String,
    },
    /// The live table has a chain that is not desired.
    ExtraChain {
        /// The table.
        table: String,
        /// The chain.
        chain: String,
    },
    /// A chain's hook, type, priority or policy differs.
    ChainHook {
        /// The table.
        table: String,
        /// The chain.
        chain: String,
    },
    /// The rule at `index` differs (`None`: absent on that side).
    Rule {
        /// The table.
        table: String,
        /// The chain.
        chain: String,
        /// Position in the chain.
        index: usize,
        /// The desired rule as nft text.
        want: Option<String>,
        /// The live rule as nft text.
        live: Option<String>,
    },
    /// A named set is missing, extra, or has other elements or type.
    Set {
        /// The table.
        table: String,
        /// The set.
        set: String,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::MissingTable { table } => write!(f, "missing table {table}"),
            Difference::ExtraTable { table } => write!(f, "unexpected table {table}"),
            Difference::MissingChain { table, chain } => {
                write!(f, "{table}: missing chain {chain}")
            }
            Difference::ExtraChain { table, chain } => {
                write!(f, "{table}: unexpected chain {chain}")
            }
            Difference::ChainHook { table, chain } => write!(
                f,
                "{table}: chain {chain} has another hook, type, priority or policy"
            ),
            Difference::Rule {
                table,
                chain,
                index,
                want,
                live,
            } => {
                write!(f, "{table} {chain} rule #{index}:")?;
                if let Some(w) = want {
                    write!(f, "\n- {w}")?;
                }
                if let Some(l) = live {
                    write!(f, "\n+ {l}")?;
                }
                Ok(())
            }
            Difference::Set { table, set } => write!(f, "{table}: set {set} differs"),
        }
    }
}

fn label(f: Family, n: &str) -> String {
    format!("{} {n}", f.keyword())
}

/// The differences between `desired` and `live`, table by table, chain by chain, rule by rule.
/// Empty when the kernel holds exactly what is desired.
pub fn diff(desired: &Ruleset, live: &Ruleset) -> Vec<Difference> {
    let (desired, live) = (canonical_ruleset(desired), canonical_ruleset(live));
    let mut out = Vec::new();
    for t in &desired.tables {
        let table = label(t.family, &t.name);
        let Some(lt) = live.table(t.family, &t.name) else {
            out.push(Difference::MissingTable { table });
            continue;
        };
        for c in &t.chains {
            let Some(lc) = lt.chains.iter().find(|x| x.name == c.name) else {
                out.push(Difference::MissingChain {
                    table: table.clone(),
                    chain: c.name.clone(),
                });
                continue;
            };
            if lc.base != c.base {
                out.push(Difference::ChainHook {
                    table: table.clone(),
                    chain: c.name.clone(),
                });
            }
            for index in 0..c.rules.len().max(lc.rules.len()) {
                let (w, l) = (c.rules.get(index), lc.rules.get(index));
                if w != l {
                    out.push(Difference::Rule {
                        table: table.clone(),
                        chain: c.name.clone(),
                        index,
                        want: w.map(render_rule),
                        live: l.map(render_rule),
                    });
                }
            }
        }
        for lc in &lt.chains {
            if !t.chains.iter().any(|c| c.name == lc.name) {
                out.push(Difference::ExtraChain {
                    table: table.clone(),
                    chain: lc.name.clone(),
                });
            }
        }
        let mut names: Vec<&String> = t
            .sets
            .iter()
            .chain(lt.sets.iter())
            .map(|s| &s.name)
            .collect();
        names.sort();
        names.dedup();
        for n in names {
            if t.sets.iter().find(|s| &s.name == n) != lt.sets.iter().find(|s| &s.name == n) {
                out.push(Difference::Set {
                    table: table.clone(),
                    set: n.clone(),
                });
            }
        }
    }
    for lt in &live.tables {
        if desired.table(lt.family, &lt.name).is_none() {
            out.push(Difference::ExtraTable {
                table: label(lt.family, &lt.name),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CaptureConfig;
    use crate::ruleset::{Chain, Rule};

    fn sidecar() -> Ruleset {
        crate::compile(&CaptureConfig::sidecar())
    }

    #[test]
    fn identical_rulesets_have_no_difference() {
        assert!(diff(&sidecar(), &sidecar()).is_empty());
    }

    #[test]
    fn a_changed_rule_is_named_with_both_texts() {
        let want = sidecar();
        let mut live = want.clone();
        let t = &mut live.tables[0];
        let ci = t.chains.iter().position(|c| !c.rules.is_empty()).unwrap();
        t.chains[ci].rules[0] = Rule {
            matches: vec![],
            statements: vec![crate::expr::Statement::Counter],
            comment: None,
        };
        let d = diff(&want, &live);
        assert_eq!(d.len(), 1, "{d:?}");
        match &d[0] {
            Difference::Rule {
                index,
                want: Some(_),
                live: Some(l),
                ..
            } => {
                assert_eq!(*index, 0);
                assert_eq!(l, "counter");
            }
            other => panic!("{other:?}"),
        }
        assert!(d[0].to_string().contains("+ counter"));
    }

    #[test]
    fn missing_and_extra_chains_and_tables_are_reported() {
        let want = sidecar();
        let mut live = want.clone();
        let removed = live.tables[0].chains.pop().unwrap().name;
        live.tables[0].chains.push(Chain::regular("stray"));
        let d = diff(&want, &live);
        let t = label(want.tables[0].family, &want.tables[0].name);
        assert!(
            d.contains(&Difference::MissingChain {
                table: t.clone(),
                chain: removed
            }),
            "{d:?}"
        );
        assert!(
            d.contains(&Difference::ExtraChain {
                table: t,
                chain: "stray".into()
            }),
            "{d:?}"
        );
        let d = diff(&want, &Ruleset::default());
        assert_eq!(d.len(), want.tables.len());
        assert!(matches!(d[0], Difference::MissingTable { .. }));
        let d = diff(&Ruleset::default(), &want);
        assert!(matches!(d[0], Difference::ExtraTable { .. }));
    }
}
