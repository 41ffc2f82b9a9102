//! The reference evaluator: one packet at one hook through a [`Ruleset`], to an [`Outcome`].
//!
//! # Semantics
//!
//! - **Base chains.** Every base chain on the hook whose table family covers the packet (`inet`
//!   both versions, `ip` IPv4, `ip6` IPv6) runs, in ascending priority (ties: table order, then
//!   chain order). `accept` ends one base chain and the packet goes on to the next; `drop` ends
//!   everything.
//! - **NAT chains** (`type nat`) see only the first packet of a connection: they are skipped
//!   unless the packet's conntrack state is `new`. The first NAT binding wins: once a rule
//!   `redirect`s, later NAT chains on the hook are skipped, as the kernel's NAT core does.
//! - **Traversal.** Rules run in order; a rule whose matches all hold runs its statements in
//!   order, up to a verdict. `jump` pushes a return point, `goto` does not; `return` (or the end
//!   of a regular chain) pops one; at the base chain it applies the chain's policy. The jump
//!   stack holds 16 frames like the kernel's; deeper nesting is [`EvalError::JumpStackOverflow`].
//! - **Matches** carry their protocol dependency: `ip daddr != X` never holds for IPv6 packets,
//!   `tcp dport != 53` never for UDP. `iifname` on an output packet and `oifname` on a
//!   prerouting packet compare the empty name. `skuid`/`skgid` (negated or not) never hold
//!   without a local socket (incoming packets). `socket transparent` holds when the packet says
//!   a transparent socket exists.
//! - **Statements.** `counter` and `log` have no effect here. `meta mark set` and `ct mark set`
//!   update the packet's state for the rest of the traversal. `ct zone set` attaches a zone
//!   only to a packet that has none yet (the kernel skips packets already tracked), so the
//!   first zone set wins. `redirect` (nat
//!   chains) binds the NAT mapping and accepts. `tproxy` assumes a transparent listener on the
//!   target and records it; the rule goes on (Istio's rules then set the mark and accept).

use crate::expr::{
    CtStates, Direction, IpVersion, L4Proto, MarkValue, Match, Owner, PortRange, Statement, Values,
    Verdict,
};
use crate::ruleset::{ChainType, Family, Hook, Policy, Rule, Ruleset, SetElement, Table};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use thiserror::Error;

/// A packet as the evaluator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    /// Layer-4 protocol.
    pub l4proto: L4Proto,
    /// Source address (its version is the packet's).
    pub saddr: IpAddr,
    /// Destination address.
    pub daddr: IpAddr,
    /// Source port (TCP/UDP).
    pub sport: u16,
    /// Destination port (TCP/UDP).
    pub dport: u16,
    /// Input interface name (empty for locally generated packets).
    pub iif: String,
    /// Output interface name (empty before routing of incoming packets).
    pub oif: String,
    /// Uid of the sending socket, for locally generated packets.
    pub skuid: Option<u32>,
    /// Gid of the sending socket, for locally generated packets.
    pub skgid: Option<u32>,
    /// Packet mark.
    pub mark: u32,
    /// Conntrack state.
    pub ct_state: CtStates,
    /// Connection mark.
    pub ct_mark: u32,
    /// Whether a transparent socket exists for this packet (`socket transparent`).
    pub socket_transparent: bool,
}

impl Packet {
    /// A new TCP connection's first packet, sent by a local socket owned by `uid`/`gid` out of
    /// `oif`.
    pub fn local_tcp(
        uid: u32,
        gid: u32,
        saddr: IpAddr,
        daddr: IpAddr,
        dport: u16,
        oif: &str,
    ) -> Self {
        Packet {
            l4proto: L4Proto::Tcp,
            saddr,
            daddr,
            sport: 40000,
            dport,
            iif: String::new(),
            oif: oif.to_string(),
            skuid: Some(uid),
            skgid: Some(gid),
            mark: 0,
            ct_state: CtStates::NEW,
            ct_mark: 0,
            socket_transparent: false,
        }
    }

    /// A new TCP connection's first packet, arriving on `iif`.
    pub fn incoming_tcp(saddr: IpAddr, daddr: IpAddr, dport: u16, iif: &str) -> Self {
        Packet {
            l4proto: L4Proto::Tcp,
            saddr,
            daddr,
            sport: 40000,
            dport,
            iif: iif.to_string(),
            oif: String::new(),
            skuid: None,
            skgid: None,
            mark: 0,
            ct_state: CtStates::NEW,
            ct_mark: 0,
            socket_transparent: false,
        }
    }

    /// The packet's IP version.
    pub fn version(&self) -> IpVersion {
        IpVersion::of(self.daddr)
    }
}

/// The final verdict for the packet at this hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinalVerdict {
    /// The packet continues.
    Accept,
    /// The packet is dropped.
    Drop,
}

/// Where a `tproxy` statement hands the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TproxyTarget {
    /// Listener address; `None` keeps the destination address.
    pub addr: Option<IpAddr>,
    /// Listener port; `None` keeps the destination port.
    pub port: Option<u16>,
}

/// What happened to a packet at one hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Accepted or dropped.
    pub verdict: FinalVerdict,
    /// The port of a NAT `redirect` binding, if one was made.
    pub redirect: Option<u16>,
    /// The `tproxy` target, if one was set.
    pub tproxy: Option<TproxyTarget>,
    /// The packet mark after the hook.
    pub mark: u32,
    /// The connection mark after the hook.
    pub ct_mark: u32,
    /// The conntrack zone set, if any.
    pub ct_zone: Option<u16>,
    /// The source address of a NAT `snat` binding, if one was made.
    pub snat: Option<IpAddr>,
}

/// Why a ruleset could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A jump or goto to a chain the table does not have.
    #[error("table {table}: chain {from} jumps to unknown chain {to}")]
    UnknownChain {
        /// The table.
        table: String,
        /// The chain holding the jump.
        from: String,
        /// The missing target.
        to: String,
    },
    /// A jump or goto to a base chain, which the kernel refuses.
    #[error("table {table}: chain {from} jumps to base chain {to}")]
    JumpToBaseChain {
        /// The table.
        table: String,
        /// The chain holding the jump.
        from: String,
        /// The base chain.
        to: String,
    },
    /// A reference to a named set the table does not have.
    #[error("table {table}: unknown set @{set}")]
    UnknownSet {
        /// The table.
        table: String,
        /// The missing set.
        set: String,
    },
    /// More than 16 nested jumps.
    #[error("table {table}: jump stack overflow at chain {chain}")]
    JumpStackOverflow {
        /// The table.
        table: String,
        /// The chain at which the limit was hit.
        chain: String,
    },
}

/// The kernel's jump stack depth (NFT_JUMP_STACK_SIZE).
const JUMP_STACK: usize = 16;

/// One step of a packet's way through a ruleset, as [`eval_traced`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// A chain was entered: a base chain at its hook, or the target of a `jump` or `goto`.
    Chain {
        /// The table's family.
        family: Family,
        /// The table.
        table: String,
        /// The chain.
        chain: String,
    },
    /// A NAT base chain was passed over: the packet is not a connection's first, or an earlier
    /// NAT chain bound it already.
    NatSkipped {
        /// The table's family.
        family: Family,
        /// The table.
        table: String,
        /// The chain.
        chain: String,
    },
    /// A rule's matches all held and its statements ran.
    Rule {
        /// The table's family.
        family: Family,
        /// The table.
        table: String,
        /// The chain.
        chain: String,
        /// The rule's position in its chain, from 0.
        index: usize,
        /// The rule as nft text.
        rule: String,
    },
    /// A base chain ended by its policy (no rule decided).
    Policy {
        /// The table's family.
        family: Family,
        /// The table.
        table: String,
        /// The base chain.
        chain: String,
        /// Its policy.
        policy: Policy,
    },
}

/// An [`Outcome`] with the way the packet took to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traced {
    /// What happened to the packet.
    pub outcome: Outcome,
    /// Every chain entered and every rule that matched, in order.
    pub trail: Vec<Step>,
}

struct State {
    /// The trail, when tracing.
    trail: Option<Vec<Step>>,
    packet: Packet,
    redirect: Option<u16>,
    tproxy: Option<TproxyTarget>,
    snat: Option<IpAddr>,
    ct_zone: Option<u16>,
}

enum ChainEnd {
    Accept,
    Drop,
    Policy,
}

/// Evaluate `packet` at `hook` through every matching base chain of `ruleset`.
pub fn eval(ruleset: &Ruleset, packet: &Packet, hook: Hook) -> Result<Outcome, EvalError> {
    run(ruleset, packet, hook, false).map(|t| t.outcome)
}

/// [`eval`], reporting every chain the packet entered and every rule that matched.
pub fn eval_traced(ruleset: &Ruleset, packet: &Packet, hook: Hook) -> Result<Traced, EvalError> {
    run(ruleset, packet, hook, true)
}

fn run(ruleset: &Ruleset, packet: &Packet, hook: Hook, trace: bool) -> Result<Traced, EvalError> {
    let version = packet.version();
    let mut bases = Vec::new();
    for table in &ruleset.tables {
        let covers = match table.family {
            Family::Inet => true,
            Family::Ip => version == IpVersion::V4,
            Family::Ip6 => version == IpVersion::V6,
        };
        if !covers {
            continue;
        }
        for (idx, chain) in table.chains.iter().enumerate() {
            if let Some(b) = chain.base.filter(|b| b.hook == hook) {
                bases.push((b.priority, table, idx, b));
            }
        }
    }
    bases.sort_by_key(|(prio, ..)| *prio);
    let mut st = State {
        trail: trace.then(Vec::new),
        packet: packet.clone(),
        redirect: None,
        tproxy: None,
        snat: None,
        ct_zone: None,
    };
    let mut verdict = FinalVerdict::Accept;
    for (_, table, idx, base) in bases {
        let chain = &table.chains[idx];
        if base.kind == ChainType::Nat
            && (st.packet.ct_state != CtStates::NEW || st.redirect.is_some() || st.snat.is_some())
        {
            if let Some(t) = &mut st.trail {
                t.push(Step::NatSkipped {
                    family: table.family,
                    table: table.name.clone(),
                    chain: chain.name.clone(),
                });
            }
            continue;
        }
        if let Some(t) = &mut st.trail {
            t.push(Step::Chain {
                family: table.family,
                table: table.name.clone(),
                chain: chain.name.clone(),
            });
        }
        let end = run_base(table, idx, &mut st)?;
        let dropped = match end {
            ChainEnd::Drop => true,
            ChainEnd::Accept => false,
            ChainEnd::Policy => {
                if let Some(t) = &mut st.trail {
                    t.push(Step::Policy {
                        family: table.family,
                        table: table.name.clone(),
                        chain: chain.name.clone(),
                        policy: base.policy,
                    });
                }
                base.policy == Policy::Drop
            }
        };
        if dropped {
            verdict = FinalVerdict::Drop;
            break;
        }
    }
    Ok(Traced {
        outcome: Outcome {
            verdict,
            redirect: st.redirect,
            tproxy: st.tproxy,
            mark: st.packet.mark,
            ct_mark: st.packet.ct_mark,
            ct_zone: st.ct_zone,
            snat: st.snat,
        },
        trail: st.trail.unwrap_or_default(),
    })
}

enum RuleEnd {
    Continue,
    Verdict(Verdict),
    Accept,
}

fn run_base(table: &Table, base_idx: usize, st: &mut State) -> Result<ChainEnd, EvalError> {
    // Frames: (chain index, next rule index).
    let mut stack: Vec<(usize, usize)> = Vec::new();
    let mut cur = (base_idx, 0usize);
    loop {
        let chain = &table.chains[cur.0];
        let Some(rule) = chain.rules.get(cur.1) else {
            // End of chain: implicit return.
            match stack.pop() {
                Some(frame) => {
                    cur = frame;
                    continue;
                }
                None => return Ok(ChainEnd::Policy),
            }
        };
        cur.1 += 1;
        if !rule_matches(table, rule, &st.packet)? {
            continue;
        }
        if let Some(t) = &mut st.trail {
            t.push(Step::Rule {
                family: table.family,
                table: table.name.clone(),
                chain: chain.name.clone(),
                index: cur.1 - 1,
                rule: crate::render::render_rule(rule),
            });
        }
        match run_statements(rule, st) {
            RuleEnd::Continue => {}
            RuleEnd::Accept => return Ok(ChainEnd::Accept),
            RuleEnd::Verdict(v) => match v {
                Verdict::Accept => return Ok(ChainEnd::Accept),
                Verdict::Drop => return Ok(ChainEnd::Drop),
                Verdict::Return => match stack.pop() {
                    Some(frame) => cur = frame,
                    None => return Ok(ChainEnd::Policy),
                },
                Verdict::Jump(ref to) | Verdict::Goto(ref to) => {
                    let is_jump = matches!(v, Verdict::Jump(_));
                    let target =
                        table
                            .chains
                            .iter()
                            .position(|c| &c.name == to)
                            .ok_or_else(|| EvalError::UnknownChain {
                                table: table.name.clone(),
                                from: chain.name.clone(),
                                to: to.clone(),
                            })?;
                    if table.chains[target].base.is_some() {
                        return Err(EvalError::JumpToBaseChain {
                            table: table.name.clone(),
                            from: chain.name.clone(),
                            to: to.clone(),
                        });
                    }
                    if is_jump {
                        if stack.len() >= JUMP_STACK {
                            return Err(EvalError::JumpStackOverflow {
                                table: table.name.clone(),
                                chain: to.clone(),
                            });
                        }
                        stack.push(cur);
                    }
                    if let Some(t) = &mut st.trail {
                        t.push(Step::Chain {
                            family: table.family,
                            table: table.name.clone(),
                            chain: to.clone(),
                        });
                    }
                    cur = (target, 0);
                }
            },
        }
    }
}

fn run_statements(rule: &Rule, st: &mut State) -> RuleEnd {
    for s in &rule.statements {
        match s {
            Statement::Counter | Statement::Log { .. } => {}
            Statement::MarkSet(v) => st.packet.mark = mark_value(*v, st.packet.mark, &st.packet),
            Statement::CtMarkSet(v) => {
                st.packet.ct_mark = mark_value(*v, st.packet.ct_mark, &st.packet)
            }
            Statement::CtZoneSet(z) => {
                // The kernel attaches the zone's template only to a packet not yet tracked.
                st.ct_zone.get_or_insert(*z);
            }
            Statement::Redirect { port } => {
                st.redirect = Some(port.unwrap_or(st.packet.dport));
                return RuleEnd::Accept;
            }
            Statement::Snat { addr, .. } => {
                st.snat = Some(*addr);
                return RuleEnd::Accept;
            }
            Statement::Tproxy { addr, port, .. } => {
                st.tproxy = Some(TproxyTarget {
                    addr: *addr,
                    port: *port,
                })
            }
            Statement::Verdict(v) => return RuleEnd::Verdict(v.clone()),
        }
    }
    RuleEnd::Continue
}

fn mark_value(v: MarkValue, own: u32, p: &Packet) -> u32 {
    match v {
        MarkValue::Value(x) => x,
        MarkValue::Bitwise { and, xor } => (own & and) ^ xor,
        MarkValue::FromMark => p.mark,
        MarkValue::FromCtMark => p.ct_mark,
    }
}

fn rule_matches(table: &Table, rule: &Rule, p: &Packet) -> Result<bool, EvalError> {
    for m in &rule.matches {
        if !match_holds(table, m, p)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn lookup<T>(
    table: &Table,
    values: &Values<T>,
    one: impl Fn(&T) -> bool,
    elem: impl Fn(&SetElement) -> bool,
) -> Result<bool, EvalError> {
    Ok(match values {
        Values::One(x) => one(x),
        Values::Set(xs) => xs.iter().any(one),
        Values::Named(name) => table
            .set(name)
            .ok_or_else(|| EvalError::UnknownSet {
                table: table.name.clone(),
                set: name.clone(),
            })?
            .elements
            .iter()
            .any(elem),
    })
}

fn in_net(net: &IpNet, a: IpAddr) -> bool {
    net.contains(&a)
}

fn match_holds(table: &Table, m: &Match, p: &Packet) -> Result<bool, EvalError> {
    let ports_ok =
        |proto: L4Proto| p.l4proto == proto && matches!(proto, L4Proto::Tcp | L4Proto::Udp);
    Ok(match m {
        Match::Nfproto { version } => p.version() == *version,
        Match::L4Proto { negate, proto } => (p.l4proto == *proto) != *negate,
        Match::Addr {
            dir,
            version,
            negate,
            values,
        } => {
            if p.version() != *version {
                return Ok(false);
            }
            let a = match dir {
                Direction::Src => p.saddr,
                Direction::Dst => p.daddr,
            };
            let hit = lookup(
                table,
                values,
                |n| in_net(n, a),
                |e| match e {
                    SetElement::Prefix(n) => in_net(n, a),
                    _ => false,
                },
            )?;
            hit != *negate
        }
        Match::Port {
            dir,
            proto,
            negate,
            values,
        } => {
            if !ports_ok(*proto) {
                return Ok(false);
            }
            let port = match dir {
                Direction::Src => p.sport,
                Direction::Dst => p.dport,
            };
            let hit = lookup(
                table,
                values,
                |r: &PortRange| r.contains(port),
                |e| matches!(e, SetElement::Range(a, b) if *a <= u32::from(port) && u32::from(port) <= *b),
            )?;
            hit != *negate
        }
        Match::Iifname { negate, values } => name_match(table, values, &p.iif)? != *negate,
        Match::Oifname { negate, values } => name_match(table, values, &p.oif)? != *negate,
        Match::SkUid { negate, values } => match p.skuid {
            None => false,
            Some(id) => owner_match(table, values, id)? != *negate,
        },
        Match::SkGid { negate, values } => match p.skgid {
            None => false,
            Some(id) => owner_match(table, values, id)? != *negate,
        },
        Match::Mark {
            negate,
            mask,
            value,
        } => ((p.mark & mask) == *value) != *negate,
        Match::CtMark {
            negate,
            mask,
            value,
        } => ((p.ct_mark & mask) == *value) != *negate,
        Match::CtState { negate, states } => p.ct_state.intersects(*states) != *negate,
        Match::SocketTransparent => p.socket_transparent,
    })
}

fn name_match(table: &Table, values: &Values<String>, name: &str) -> Result<bool, EvalError> {
    lookup(
        table,
        values,
        |n| n == name,
        |e| matches!(e, SetElement::Name(n) if n == name),
    )
}

fn owner_match(table: &Table, values: &Values<Owner>, id: u32) -> Result<bool, EvalError> {
    lookup(
        table,
        values,
        |o| o.contains(id),
        |e| matches!(e, SetElement::Range(a, b) if *a <= id && id <= *b),
    )
}

#[cfg(test)]
mod tests;
