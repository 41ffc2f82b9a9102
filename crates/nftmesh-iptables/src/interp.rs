//! An iptables interpreter: one packet at one hook through parsed iptables rulesets, with
//! xtables semantics. It reads the syntax tree directly and shares nothing with the translator
//! (only the model's [`Packet`] and [`Outcome`] types), so the two can check each other.
//!
//! # Semantics (as the kernel's `ip_tables`/`ip6_tables` and `nf_nat` run them)
//! - Each table registers all its built-in chains; at one hook they run by the xtables table
//!   priorities: raw −300, mangle −150, nat −100 (PREROUTING, OUTPUT) or +100 (INPUT,
//!   POSTROUTING), filter 0. A ruleset applies only to packets of its family.
//! - nat chains see only a connection's first packet (`ct_state` new) and stop once a NAT
//!   target bound the connection.
//! - Within a chain: the first rule whose matches hold runs its target. ACCEPT ends the table
//!   at this hook; DROP ends everything; RETURN (or the end of a user chain) returns to the
//!   caller, at a built-in chain it applies the policy. `-j` pushes a return point, `-g` does
//!   not. Non-terminal targets (MARK, CONNMARK, CT, LOG, no target) continue with the next rule.
//! - REDIRECT binds the connection to the port and accepts. TPROXY (assuming a transparent
//!   listener exists, as the model's evaluator does) assigns the socket, applies its mark as
//!   `(mark & !mask) ^ value` and accepts. CT --zone attaches only to a packet that has no zone
//!   yet. MARK and CONNMARK apply `(old & !mask) ^ value`.
//! - `-i`/`-o` compare the empty name where the hook has no such device; a trailing `+` matches
//!   by prefix. `owner` without a local socket does not match, but negated it does (xt_owner).
//!   Ports match only packets of the rule's protocol, negated or not. `--socket-exists` holds
//!   for a packet with a local socket (the model's `skuid` is set). `-m set` looks the address
//!   up in the ipsets given to [`interpret_with_sets`].
//! - SNAT binds the connection's source address and accepts.

use crate::ast::{
    ChainPolicy, IptChain, IptMatch, IptRuleset, IptTable, OwnerKind, TableName, Target,
};
use crate::error::InterpError;
use ipnet::IpNet;
use nftmesh_model::eval::{FinalVerdict, Outcome, Packet, TproxyTarget};
use nftmesh_model::expr::{CtStates, Direction, IpVersion};
use nftmesh_model::ruleset::Hook;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The xtables priority of `table`'s built-in chain at `hook`, if the table has one there.
fn priority(table: TableName, hook: Hook) -> Option<i32> {
    match (table, hook) {
        (TableName::Raw, Hook::Prerouting | Hook::Output) => Some(-300),
        (TableName::Mangle, _) => Some(-150),
        (TableName::Nat, Hook::Prerouting | Hook::Output) => Some(-100),
        (TableName::Nat, Hook::Input | Hook::Postrouting) => Some(100),
        (TableName::Filter, Hook::Input | Hook::Forward | Hook::Output) => Some(0),
        _ => None,
    }
}

fn chain_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Prerouting => "PREROUTING",
        Hook::Input => "INPUT",
        Hook::Forward => "FORWARD",
        Hook::Output => "OUTPUT",
        Hook::Postrouting => "POSTROUTING",
    }
}

struct St {
    p: Packet,
    redirect: Option<u16>,
    tproxy: Option<TproxyTarget>,
    zone: Option<u16>,
    snat: Option<IpAddr>,
}

enum End {
    Accept,
    Drop,
}

/// The contents of the ipsets `-m set --match-set` names: set name → its addresses and
/// prefixes. They live in the kernel's ipset subsystem, outside any iptables ruleset.
pub type IpSets = BTreeMap<String, Vec<IpNet>>;

/// Run `packet` through `rulesets` at `hook`, with no ipsets (a rule naming one is an
/// [`InterpError::UnknownSet`] when it is reached).
pub fn interpret(
    rulesets: &[IptRuleset],
    packet: &Packet,
    hook: Hook,
) -> Result<Outcome, InterpError> {
    interpret_with_sets(rulesets, packet, hook, &IpSets::new())
}

/// Run `packet` through `rulesets` at `hook`, `-m set` matches looking up `sets`.
pub fn interpret_with_sets(
    rulesets: &[IptRuleset],
    packet: &Packet,
    hook: Hook,
    sets: &IpSets,
) -> Result<Outcome, InterpError> {
    let family = IpVersion::of(packet.daddr);
    let mut order: Vec<(i32, &IptTable)> = Vec::new();
    for rs in rulesets.iter().filter(|r| r.family == family) {
        for t in &rs.tables {
            if let Some(p) = priority(t.name, hook) {
                order.push((p, t));
            }
        }
    }
    order.sort_by_key(|(p, _)| *p);
    let mut st = St {
        p: packet.clone(),
        redirect: None,
        tproxy: None,
        zone: None,
        snat: None,
    };
    let mut verdict = FinalVerdict::Accept;
    for (_, table) in order {
        if table.name == TableName::Nat
            && (st.p.ct_state != CtStates::NEW || st.redirect.is_some() || st.snat.is_some())
        {
            continue;
        }
        let Some(chain) = table.chain(chain_name(hook)) else {
            continue;
        };
        if let End::Drop = run(table, chain, &mut st, sets)? {
            verdict = FinalVerdict::Drop;
            break;
        }
    }
    Ok(Outcome {
        verdict,
        redirect: st.redirect,
        tproxy: st.tproxy,
        mark: st.p.mark,
        ct_mark: st.p.ct_mark,
        ct_zone: st.zone,
        snat: st.snat,
    })
}

fn xmark(old: u32, value: u32, mask: u32) -> u32 {
    (old & !mask) ^ value
}

fn run(
    table: &IptTable,
    builtin: &IptChain,
    st: &mut St,
    sets: &IpSets,
) -> Result<End, InterpError> {
    let policy = || match builtin.policy {
        Some(ChainPolicy::Drop) => End::Drop,
        _ => End::Accept,
    };
    let mut back: Vec<(&IptChain, usize)> = Vec::new();
    let (mut chain, mut at) = (builtin, 0usize);
    loop {
        let Some(rule) = chain.rules.get(at) else {
            match back.pop() {
                Some((c, i)) => {
                    (chain, at) = (c, i);
                    continue;
                }
                None => return Ok(policy()),
            }
        };
        at += 1;
        let mut all = true;
        for m in &rule.matches {
            if !holds(&m.node, &st.p, table, sets)? {
                all = false;
                break;
            }
        }
        if !all {
            continue;
        }
        let Some(target) = &rule.target else { continue };
        match &target.node {
            Target::Accept => return Ok(End::Accept),
            Target::Drop => return Ok(End::Drop),
            Target::Return => match back.pop() {
                Some((c, i)) => (chain, at) = (c, i),
                None => return Ok(policy()),
            },
            Target::Jump(name) | Target::Goto(name) => {
                let next = table.chain(name).ok_or_else(|| InterpError::UnknownChain {
                    table: table.name.keyword(),
                    chain: name.clone(),
                })?;
                if matches!(target.node, Target::Jump(_)) {
                    if back.len() > table.chains.len() {
                        return Err(InterpError::Loop {
                            table: table.name.keyword(),
                            chain: name.clone(),
                        });
                    }
                    back.push((chain, at));
                }
                (chain, at) = (next, 0);
            }
            Target::Redirect { to_port } => {
                st.redirect = Some(to_port.unwrap_or(st.p.dport));
                return Ok(End::Accept);
            }
            Target::Tproxy {
                on_port,
                on_ip,
                mark,
            } => {
                st.tproxy = Some(TproxyTarget {
                    addr: *on_ip,
                    port: (*on_port != 0).then_some(*on_port),
                });
                if let Some((v, m)) = mark {
                    st.p.mark = xmark(st.p.mark, *v, *m);
                }
                return Ok(End::Accept);
            }
            Target::Mark { value, mask } => st.p.mark = xmark(st.p.mark, *value, *mask),
            Target::ConnmarkSave => st.p.ct_mark = st.p.mark,
            Target::ConnmarkRestore => st.p.mark = st.p.ct_mark,
            Target::ConnmarkSet { value, mask } => {
                st.p.ct_mark = xmark(st.p.ct_mark, *value, *mask)
            }
            Target::CtZone(z) => {
                if st.zone.is_none() {
                    st.zone = Some(*z);
                }
            }
            Target::Log { .. } => {}
            Target::Snat { to } => {
                st.snat = Some(*to);
                return Ok(End::Accept);
            }
        }
    }
}

fn iface_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('+') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

fn holds(m: &IptMatch, p: &Packet, table: &IptTable, sets: &IpSets) -> Result<bool, InterpError> {
    Ok(match m {
        IptMatch::Protocol { negate, proto } => (p.l4proto == *proto) != *negate,
        IptMatch::Addr { dir, negate, net } => {
            let a = if *dir == Direction::Src {
                p.saddr
            } else {
                p.daddr
            };
            net.contains(&a) != *negate
        }
        IptMatch::Interface {
            input,
            negate,
            name,
        } => {
            let dev = if *input { &p.iif } else { &p.oif };
            iface_matches(name, dev) != *negate
        }
        IptMatch::Port {
            proto,
            dir,
            negate,
            ports,
            ..
        } => {
            if p.l4proto != *proto {
                return Ok(false);
            }
            let port = if *dir == Direction::Src {
                p.sport
            } else {
                p.dport
            };
            ports.iter().any(|r| r.first <= port && port <= r.last) != *negate
        }
        IptMatch::Owner {
            kind,
            negate,
            owner,
        } => {
            let id = match kind {
                OwnerKind::Uid => p.skuid,
                OwnerKind::Gid => p.skgid,
            };
            match id {
                // xt_owner: without a socket, only the inverted match holds.
                None => *negate,
                Some(id) => owner.contains(id) != *negate,
            }
        }
        IptMatch::Mark {
            negate,
            value,
            mask,
        } => ((p.mark & mask) == *value) != *negate,
        IptMatch::Connmark {
            negate,
            value,
            mask,
        } => ((p.ct_mark & mask) == *value) != *negate,
        IptMatch::CtState { negate, states } => p.ct_state.intersects(*states) != *negate,
        IptMatch::SocketTransparent => p.socket_transparent,
        // xt_owner: a packet with a local socket; inverted, one without.
        IptMatch::SocketExists { negate } => p.skuid.is_some() != *negate,
        IptMatch::IpSet { dir, negate, name } => {
            let members = sets.get(name).ok_or_else(|| InterpError::UnknownSet {
                table: table.name.keyword(),
                set: name.clone(),
            })?;
            let a = if *dir == Direction::Src {
                p.saddr
            } else {
                p.daddr
            };
            members.iter().any(|n| n.contains(&a)) != *negate
        }
        IptMatch::Comment(_) => true,
    })
}
