//! [`IptRuleset`] → the nf_tables model, one rule for one rule.
//!
//! Each iptables table becomes an nf_tables table of the same name in family `ip` (IPv4) or
//! `ip6` (IPv6); every built-in chain becomes a base chain of the same name at its hook with the
//! standard priority (raw −300, mangle −150, dstnat −100, filter 0, srcnat 100; mangle OUTPUT
//! is a `route` chain, nat chains are `nat` chains), user chains become regular chains. A match
//! or target without an exact nf_tables equivalent is refused with [`Untranslatable`], never
//! approximated.
//!
//! `-m set --match-set NAME` becomes a lookup in a named set NAME that the table declares empty:
//! an ipset's contents are not part of iptables text, so they are loaded as the set's elements.
//!
//! One difference is inherent to nf_tables and documented rather than hidden: a negated owner
//! match (`! --uid-owner 1337`) holds in xtables for a packet without a local socket (e.g. a
//! forwarded packet in POSTROUTING, or a reset the kernel sends itself), while
//! `meta skuid != 1337` never holds without a socket. Both agree on every packet a local socket
//! sends.

use crate::ast::{
    ChainPolicy, IptChain, IptMatch, IptRule, IptRuleset, IptTable, OwnerKind, TableName, Target,
};
use crate::error::Untranslatable;
use nftmesh_model::expr::{IpVersion, MarkValue, Match, Owner, Statement, Values, Verdict};
use nftmesh_model::ruleset::{
    priority, BaseChain, Chain, ChainType, Family, Hook, Policy, Rule, Ruleset, Set, SetKeyType,
    Table,
};

/// The longest comment nf_tables stores with a rule (as `nft` takes it).
pub const MAX_COMMENT: usize = nftmesh_model::limits::COMMENT_MAX;

/// Translate one family's ruleset.
pub fn translate(rs: &IptRuleset) -> Result<Ruleset, Untranslatable> {
    let family = match rs.family {
        IpVersion::V4 => Family::Ip,
        IpVersion::V6 => Family::Ip6,
    };
    let mut out = Ruleset::default();
    for t in &rs.tables {
        out.tables.push(table(t, family, rs.family)?);
    }
    Ok(out)
}

/// Translate several rulesets (typically the IPv4 and IPv6 parts) into one ruleset.
pub fn translate_all(parts: &[IptRuleset]) -> Result<Ruleset, Untranslatable> {
    let mut out = Ruleset::default();
    for p in parts {
        out.tables.extend(translate(p)?.tables);
    }
    Ok(out)
}

/// The hook of a built-in chain name.
pub fn hook_of(chain: &str) -> Option<Hook> {
    Some(match chain {
        "PREROUTING" => Hook::Prerouting,
        "INPUT" => Hook::Input,
        "FORWARD" => Hook::Forward,
        "OUTPUT" => Hook::Output,
        "POSTROUTING" => Hook::Postrouting,
        _ => return None,
    })
}

/// The base chain registration of `table`'s built-in chain at `hook`.
pub fn base_of(table: TableName, hook: Hook, policy: ChainPolicy) -> BaseChain {
    let (kind, prio) = match table {
        TableName::Raw => (ChainType::Filter, priority::RAW),
        TableName::Mangle if hook == Hook::Output => (ChainType::Route, priority::MANGLE),
        TableName::Mangle => (ChainType::Filter, priority::MANGLE),
        TableName::Nat if matches!(hook, Hook::Prerouting | Hook::Output) => {
            (ChainType::Nat, priority::DSTNAT)
        }
        TableName::Nat => (ChainType::Nat, priority::SRCNAT),
        TableName::Filter => (ChainType::Filter, priority::FILTER),
    };
    BaseChain {
        kind,
        hook,
        priority: prio,
        policy: match policy {
            ChainPolicy::Accept => Policy::Accept,
            ChainPolicy::Drop => Policy::Drop,
        },
    }
}

fn table(t: &IptTable, family: Family, version: IpVersion) -> Result<Table, Untranslatable> {
    let mut out = Table::new(family, t.name.keyword());
    for c in &t.chains {
        out.chains.push(chain(t.name, c, version)?);
    }
    // Each ipset a rule names becomes an empty named set of the family's addresses (interval,
    // so it takes prefixes as ipset's hash:net does): its contents live outside the ruleset and
    // are loaded as set elements.
    for m in t
        .chains
        .iter()
        .flat_map(|c| &c.rules)
        .flat_map(|r| &r.matches)
    {
        if let IptMatch::IpSet { name, .. } = &m.node {
            if out.set(name).is_none() {
                out.sets.push(Set {
                    name: name.clone(),
                    key_type: match version {
                        IpVersion::V4 => SetKeyType::Ipv4Addr,
                        IpVersion::V6 => SetKeyType::Ipv6Addr,
                    },
                    interval: true,
                    elements: Vec::new(),
                });
            }
        }
    }
    Ok(out)
}

fn chain(table: TableName, c: &IptChain, version: IpVersion) -> Result<Chain, Untranslatable> {
    let base = match (c.policy, hook_of(&c.name)) {
        (Some(p), Some(h)) => Some(base_of(table, h, p)),
        _ => None,
    };
    let rules = c
        .rules
        .iter()
        .map(|r| rule(r, version))
        .collect::<Result<_, _>>()?;
    Ok(Chain {
        name: c.name.clone(),
        base,
        rules,
    })
}

fn mark_value(value: u32, mask: u32) -> MarkValue {
    if mask == u32::MAX {
        MarkValue::Value(value)
    } else {
        MarkValue::Bitwise {
            and: !mask,
            xor: value,
        }
    }
}

/// Translate one rule.
pub fn rule(r: &IptRule, version: IpVersion) -> Result<Rule, Untranslatable> {
    let mut out = Rule::default();
    for m in &r.matches {
        let refuse = |reason: &str| Untranslatable {
            reason: reason.to_string(),
            span: m.span,
        };
        let tm = match &m.node {
            IptMatch::Protocol { negate, proto } => Match::L4Proto {
                negate: *negate,
                proto: *proto,
            },
            IptMatch::Addr { dir, negate, net } => Match::Addr {
                dir: *dir,
                version,
                negate: *negate,
                values: Values::One(*net),
            },
            IptMatch::Interface {
                input,
                negate,
                name,
            } => {
                if name.ends_with('+') {
                    return Err(refuse("interface wildcards (`+`) are not in the model"));
                }
                let values = Values::One(name.clone());
                if *input {
                    Match::Iifname {
                        negate: *negate,
                        values,
                    }
                } else {
                    Match::Oifname {
                        negate: *negate,
                        values,
                    }
                }
            }
            IptMatch::Port {
                proto,
                dir,
                negate,
                ports,
                ..
            } => Match::Port {
                dir: *dir,
                proto: *proto,
                negate: *negate,
                values: Values::from_list(ports.clone())
                    .ok_or_else(|| refuse("empty port list"))?,
            },
            IptMatch::Owner {
                kind,
                negate,
                owner,
            } => {
                let values = Values::One(owner.clone());
                match kind {
                    OwnerKind::Uid => Match::SkUid {
                        negate: *negate,
                        values,
                    },
                    OwnerKind::Gid => Match::SkGid {
                        negate: *negate,
                        values,
                    },
                }
            }
            IptMatch::Mark {
                negate,
                value,
                mask,
            } => Match::Mark {
                negate: *negate,
                mask: *mask,
                value: *value,
            },
            IptMatch::Connmark {
                negate,
                value,
                mask,
            } => Match::CtMark {
                negate: *negate,
                mask: *mask,
                value: *value,
            },
            IptMatch::CtState { negate, states } => Match::CtState {
                negate: *negate,
                states: *states,
            },
            IptMatch::SocketTransparent => Match::SocketTransparent,
            // `meta skuid` fails (the rule does not match) without a full local socket, and
            // every uid is in 0-4294967295: "a socket exists".
            IptMatch::SocketExists { negate: false } => Match::SkUid {
                negate: false,
                values: Values::One(Owner::Range(0, u32::MAX)),
            },
            IptMatch::SocketExists { negate: true } => {
                return Err(refuse(
                    "! --socket-exists: nf_tables' socket matches never hold without a socket",
                ))
            }
            IptMatch::IpSet { dir, negate, name } => Match::Addr {
                dir: *dir,
                version,
                negate: *negate,
                values: Values::Named(name.clone()),
            },
            IptMatch::Comment(c) => {
                if out.comment.is_some() {
                    return Err(refuse("a rule keeps one comment in nf_tables"));
                }
                if c.len() > MAX_COMMENT {
                    return Err(refuse("comment longer than 128 bytes"));
                }
                out.comment = Some(c.clone());
                continue;
            }
        };
        out.matches.push(tm);
    }
    let Some(t) = &r.target else {
        out.statements.push(Statement::Counter);
        return Ok(out);
    };
    let verdict = |v| Statement::Verdict(v);
    out.statements = match &t.node {
        Target::Accept => vec![verdict(Verdict::Accept)],
        Target::Drop => vec![verdict(Verdict::Drop)],
        Target::Return => vec![verdict(Verdict::Return)],
        Target::Jump(c) => vec![verdict(Verdict::Jump(c.clone()))],
        Target::Goto(c) => vec![verdict(Verdict::Goto(c.clone()))],
        Target::Redirect { to_port } => vec![Statement::Redirect { port: *to_port }],
        Target::Tproxy {
            on_port,
            on_ip,
            mark,
        } => {
            let mut s = vec![Statement::Tproxy {
                version: None,
                addr: *on_ip,
                port: (*on_port != 0).then_some(*on_port),
            }];
            if let Some((v, m)) = mark {
                s.push(Statement::MarkSet(mark_value(*v, *m)));
            }
            s.push(verdict(Verdict::Accept));
            s
        }
        Target::Mark { value, mask } => vec![Statement::MarkSet(mark_value(*value, *mask))],
        Target::ConnmarkSave => vec![Statement::CtMarkSet(MarkValue::FromMark)],
        Target::ConnmarkRestore => vec![Statement::MarkSet(MarkValue::FromCtMark)],
        Target::ConnmarkSet { value, mask } => {
            vec![Statement::CtMarkSet(mark_value(*value, *mask))]
        }
        Target::CtZone(z) => vec![Statement::CtZoneSet(*z)],
        Target::Log { prefix } => vec![Statement::Log {
            prefix: prefix.clone(),
        }],
        Target::Snat { to } => vec![Statement::Snat {
            version: None,
            addr: *to,
        }],
    };
    Ok(out)
}
