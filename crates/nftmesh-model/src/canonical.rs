//! The canonical form of rules and rulesets: one spelling for what the kernel holds the same
//! way. Implied protocol dependencies right before the match that needs them are dropped,
//! anonymous sets are sorted, deduplicated and merged (address sets into the fewest prefixes),
//! named sets likewise. A kernel dump reads back in this form, so comparing the canonical form
//! of what was applied with the dump ([`crate::diff`]) shows only real differences.

use crate::expr::{Match, Owner, PortRange, Statement, Values};
use crate::ruleset::{Family, Rule, Ruleset, SetElement};
use ipnet::IpNet;

/// The form a dump returns a rule in: an explicit `meta nfproto` / `meta l4proto` immediately
/// followed by the address / port match it is the dependency of is dropped (the kernel bytecode
/// is the same with or without it), and anonymous sets are sorted, deduplicated, and address
/// sets aggregated into the fewest prefixes.
pub fn canonical_rule(family: Family, rule: &Rule) -> Rule {
    // Dropping one implied dependency can expose another right before it (`meta l4proto tcp`
    // twice before `tcp sport`), so repeat until nothing changes: the form is idempotent.
    let mut matches = rule.matches.clone();
    loop {
        let next = drop_implied(family, &matches);
        if next.len() == matches.len() {
            break;
        }
        matches = next;
    }
    let matches = matches.iter().map(canonical_match).collect();
    let statements = rule
        .statements
        .iter()
        .map(|s| match s {
            // Outside inet tables the table's family decides tproxy's family.
            Statement::Snat { addr, .. } if family != Family::Inet => Statement::Snat {
                version: None,
                addr: *addr,
            },
            Statement::Tproxy { addr, port, .. } if family != Family::Inet => Statement::Tproxy {
                version: None,
                addr: *addr,
                port: *port,
            },
            other => other.clone(),
        })
        .collect();
    Rule {
        matches,
        statements,
        comment: rule.comment.clone(),
    }
}

/// One pass: drop each dependency match directly followed by the match it is implied by.
fn drop_implied(family: Family, matches: &[Match]) -> Vec<Match> {
    let mut out = Vec::new();
    for (k, m) in matches.iter().enumerate() {
        let redundant = match (m, matches.get(k + 1)) {
            (Match::Nfproto { version }, Some(Match::Addr { version: v, .. })) => {
                family == Family::Inet && version == v
            }
            (
                Match::L4Proto {
                    negate: false,
                    proto,
                },
                Some(Match::Port { proto: p, .. }),
            ) => proto == p,
            _ => false,
        };
        if !redundant {
            out.push(m.clone());
        }
    }
    out
}

/// Sorted, and merged when any element is a true range (the set is then an interval set).
fn merge_ranges(list: &[(u32, u32)]) -> Vec<(u32, u32)> {
    merge_ranges_above(list, usize::MAX)
}

/// [`merge_ranges`], merging also when there are more than `exact_max` distinct elements (the
/// encoder then makes an interval set, see [`crate::limits::PORT_SET_EXACT_MAX`]).
fn merge_ranges_above(list: &[(u32, u32)], exact_max: usize) -> Vec<(u32, u32)> {
    let mut v = list.to_vec();
    v.sort();
    v.dedup();
    if v.len() <= exact_max && v.iter().all(|(a, b)| a == b) {
        return v;
    }
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if u64::from(a) <= u64::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v.dedup();
    v
}

/// One match in canonical form (its set sorted, deduplicated, merged).
pub fn canonical_match(m: &Match) -> Match {
    match m {
        Match::Addr {
            dir,
            version,
            negate,
            values: Values::One(n),
        } => Match::Addr {
            dir: *dir,
            version: *version,
            negate: *negate,
            values: Values::One(n.trunc()),
        },
        Match::Addr {
            dir,
            version,
            negate,
            values: Values::Set(list),
        } => Match::Addr {
            dir: *dir,
            version: *version,
            negate: *negate,
            values: Values::Set(IpNet::aggregate(list)),
        },
        Match::Port {
            dir,
            proto,
            negate,
            values: Values::Set(list),
        } => Match::Port {
            dir: *dir,
            proto: *proto,
            negate: *negate,
            values: Values::Set(
                merge_ranges_above(
                    &list
                        .iter()
                        .map(|r| (u32::from(r.first), u32::from(r.last)))
                        .collect::<Vec<_>>(),
                    crate::limits::PORT_SET_EXACT_MAX,
                )
                .into_iter()
                .map(|(a, b)| PortRange {
                    first: a as u16,
                    last: b as u16,
                })
                .collect(),
            ),
        },
        Match::Iifname {
            negate,
            values: Values::Set(list),
        } => Match::Iifname {
            negate: *negate,
            values: Values::Set(sorted(list)),
        },
        Match::Oifname {
            negate,
            values: Values::Set(list),
        } => Match::Oifname {
            negate: *negate,
            values: Values::Set(sorted(list)),
        },
        Match::SkUid {
            negate,
            values: Values::Set(list),
        } => Match::SkUid {
            negate: *negate,
            values: Values::Set(sort_owners(list)),
        },
        Match::SkGid {
            negate,
            values: Values::Set(list),
        } => Match::SkGid {
            negate: *negate,
            values: Values::Set(sort_owners(list)),
        },
        other => other.clone(),
    }
}

fn sort_owners(list: &[Owner]) -> Vec<Owner> {
    if list.iter().any(|o| matches!(o, Owner::Name(_))) {
        return list.to_vec();
    }
    let ids: Vec<(u32, u32)> = list
        .iter()
        .map(|o| match o {
            Owner::Range(a, b) => (*a, *b),
            Owner::Id(i) => (*i, *i),
            Owner::Name(_) => (0, 0),
        })
        .collect();
    merge_ranges(&ids)
        .into_iter()
        .map(|(a, b)| {
            if a == b {
                Owner::Id(a)
            } else {
                Owner::Range(a, b)
            }
        })
        .collect()
}

/// [`canonical_rule`] over a whole ruleset: the form a kernel dump is read back in
/// (`nftmesh_netlink::Connection::dump_ruleset`), for comparing what was applied with what was
/// read back.
pub fn canonical_ruleset(rs: &Ruleset) -> Ruleset {
    let mut out = rs.clone();
    for t in &mut out.tables {
        let family = t.family;
        for c in &mut t.chains {
            for r in &mut c.rules {
                *r = canonical_rule(family, r);
            }
        }
        for s in &mut t.sets {
            let mut nets = Vec::new();
            let mut ranges = Vec::new();
            let mut names = Vec::new();
            for e in &s.elements {
                match e {
                    SetElement::Prefix(n) => nets.push(*n),
                    SetElement::Range(a, b) => ranges.push((*a, *b)),
                    SetElement::Name(n) => names.push(n.clone()),
                }
            }
            let ranges = if s.interval {
                merge_ranges(&ranges)
            } else {
                sorted(&ranges)
            };
            s.elements = IpNet::aggregate(&nets)
                .into_iter()
                .map(SetElement::Prefix)
                .chain(ranges.into_iter().map(|(a, b)| SetElement::Range(a, b)))
                .chain(sorted(&names).into_iter().map(SetElement::Name))
                .collect();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{Direction, L4Proto};

    #[test]
    fn the_form_is_idempotent_and_drops_a_repeated_dependency() {
        let tcp = Match::L4Proto {
            negate: false,
            proto: L4Proto::Tcp,
        };
        let port = Match::Port {
            dir: Direction::Src,
            proto: L4Proto::Tcp,
            negate: false,
            values: Values::One(PortRange::single(1)),
        };
        let rule = Rule::new(vec![tcp.clone(), tcp, port.clone()], vec![]);
        let once = canonical_rule(Family::Inet, &rule);
        assert_eq!(once.matches, vec![port]);
        assert_eq!(canonical_rule(Family::Inet, &once), once);
    }

    #[test]
    fn address_sets_aggregate_and_owner_sets_merge() {
        let rule = Rule::new(
            vec![
                Match::Addr {
                    dir: Direction::Dst,
                    version: crate::expr::IpVersion::V4,
                    negate: false,
                    values: Values::Set(vec![
                        "10.0.1.0/24".parse().unwrap(),
                        "10.0.0.0/24".parse().unwrap(),
                    ]),
                },
                Match::SkUid {
                    negate: false,
                    values: Values::Set(vec![Owner::Id(3), Owner::Range(1, 2)]),
                },
            ],
            vec![],
        );
        let c = canonical_rule(Family::Inet, &rule);
        assert_eq!(
            c.matches[0],
            Match::Addr {
                dir: Direction::Dst,
                version: crate::expr::IpVersion::V4,
                negate: false,
                values: Values::Set(vec!["10.0.0.0/23".parse().unwrap()]),
            }
        );
        assert_eq!(
            c.matches[1],
            Match::SkUid {
                negate: false,
                values: Values::Set(vec![Owner::Range(1, 3)]),
            }
        );
    }
}
