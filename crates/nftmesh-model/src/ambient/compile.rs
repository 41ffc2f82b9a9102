//! [`AmbientConfig`] → the in-pod ruleset and [`AmbientHostConfig`] → the host's, rule for
//! rule in the order of Istio's nftables generator (`cni/pkg/nftables/nftables.go`), so they list
//! as its goldens. Each IPv6 rule comes right after its IPv4 twin.

use super::{AmbientConfig, AmbientHostConfig, PROBE_SET_V4, PROBE_SET_V6};
use crate::expr::{
    Direction, IpVersion, L4Proto, MarkValue, Match, Owner, PortRange, Statement, Values, Verdict,
};
use crate::ruleset::{Chain, ChainType, Family, Hook, Rule, Ruleset, Set, SetKeyType, Table};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The in-pod NAT table.
pub const NAT_TABLE: &str = "istio-ambient-nat";
/// The in-pod mangle table.
pub const MANGLE_TABLE: &str = "istio-ambient-mangle";
/// The in-pod raw table (only with DNS capture).
pub const RAW_TABLE: &str = "istio-ambient-raw";
/// The host's table (Istio uses the same name on the node).
pub const HOST_TABLE: &str = "istio-ambient-nat";

const PRE: &str = "istio-prerouting";
const OUT: &str = "istio-output";

fn tcp() -> Match {
    Match::L4Proto {
        negate: false,
        proto: L4Proto::Tcp,
    }
}

fn host(addr: IpAddr) -> IpNet {
    IpNet::from(addr)
}

fn addr(dir: Direction, negate: bool, a: IpAddr) -> Match {
    Match::Addr {
        dir,
        version: IpVersion::of(a),
        negate,
        values: Values::One(host(a)),
    }
}

fn port(dir: Direction, proto: L4Proto, negate: bool, p: u16) -> Match {
    Match::Port {
        dir,
        proto,
        negate,
        values: Values::One(PortRange::single(p)),
    }
}

fn mark(negate: bool, value: u32, mask: u32) -> Match {
    Match::Mark {
        negate,
        mask,
        value,
    }
}

fn oif(negate: bool, name: &str) -> Match {
    Match::Oifname {
        negate,
        values: Values::One(name.into()),
    }
}

fn rule(matches: Vec<Match>, statement: Statement) -> Rule {
    Rule::new(matches, vec![Statement::Counter, statement])
}

fn redirect(port: u16) -> Statement {
    Statement::Redirect { port: Some(port) }
}

fn accept() -> Statement {
    Statement::Verdict(Verdict::Accept)
}

/// A table with base chains `prerouting` and `output` of `kinds` at `priority` jumping to
/// `istio-prerouting` and `istio-output`.
fn table(name: &str, kinds: (ChainType, ChainType), priority: i32) -> Table {
    let mut t = Table::new(Family::Inet, name);
    let mut pre = Chain::base("prerouting", kinds.0, Hook::Prerouting, priority);
    let mut out = Chain::base("output", kinds.1, Hook::Output, priority);
    pre.rules.push(Rule::new(
        vec![],
        vec![Statement::Verdict(Verdict::Jump(PRE.into()))],
    ));
    out.rules.push(Rule::new(
        vec![],
        vec![Statement::Verdict(Verdict::Jump(OUT.into()))],
    ));
    t.chains.push(pre);
    t.chains.push(out);
    for n in [PRE, OUT] {
        t.chains.push(Chain {
            name: n.into(),
            base: None,
            rules: vec![],
        });
    }
    t
}

fn chain<'a>(t: &'a mut Table, name: &str) -> &'a mut Vec<Rule> {
    &mut t
        .chains
        .iter_mut()
        .find(|c| c.name == name)
        .unwrap_or_else(|| unreachable!("every ambient table has chain {name}"))
        .rules
}

/// The in-pod ruleset: NAT (probe exemptions, inbound to the plaintext port, DNS to the DNS
/// port, outbound to the outbound port), mangle (ztunnel's mark saved to and restored from the
/// connection mark) and, with DNS capture, raw (conntrack zone for DNS to and from the
/// upstream resolver). Expects a validated configuration.
pub fn compile_inpod(cfg: &AmbientConfig) -> Ruleset {
    let lo4: IpAddr = Ipv4Addr::LOCALHOST.into();
    let lo6: IpAddr = Ipv6Addr::LOCALHOST.into();
    let probes: Vec<IpAddr> = if cfg.ipv6 {
        vec![cfg.probe_snat_ipv4.into(), cfg.probe_snat_ipv6.into()]
    } else {
        vec![cfg.probe_snat_ipv4.into()]
    };
    let loopbacks: Vec<IpAddr> = if cfg.ipv6 { vec![lo4, lo6] } else { vec![lo4] };
    let not_ztunnel = || mark(true, cfg.inpod_mark, cfg.inpod_mask);

    let mut nat = table(NAT_TABLE, (ChainType::Nat, ChainType::Nat), -100);
    for ifname in &cfg.reroute_virtual_interfaces {
        let iif = Match::Iifname {
            negate: false,
            values: Values::One(ifname.clone()),
        };
        chain(&mut nat, PRE).push(rule(
            vec![iif.clone(), tcp()],
            redirect(cfg.ztunnel_outbound_port),
        ));
        chain(&mut nat, PRE).push(rule(vec![iif, tcp()], Statement::Verdict(Verdict::Return)));
    }
    if !cfg.bypass_inbound_capture {
        for p in &probes {
            chain(&mut nat, PRE).push(rule(vec![tcp(), addr(Direction::Src, false, *p)], accept()));
        }
    }
    for p in &probes {
        chain(&mut nat, OUT).push(rule(vec![tcp(), addr(Direction::Dst, false, *p)], accept()));
    }
    if !cfg.bypass_inbound_capture {
        for lo in &loopbacks {
            chain(&mut nat, PRE).push(rule(
                vec![
                    addr(Direction::Dst, true, *lo),
                    port(Direction::Dst, L4Proto::Tcp, true, cfg.ztunnel_inbound_port),
                    not_ztunnel(),
                ],
                redirect(cfg.ztunnel_inbound_plaintext_port),
            ));
        }
    }
    if cfg.dns_capture {
        chain(&mut nat, OUT).push(rule(
            vec![
                oif(true, "lo"),
                not_ztunnel(),
                port(Direction::Dst, L4Proto::Udp, false, 53),
            ],
            redirect(cfg.dns_capture_port),
        ));
        for lo in &loopbacks {
            chain(&mut nat, OUT).push(rule(
                vec![
                    addr(Direction::Dst, true, *lo),
                    port(Direction::Dst, L4Proto::Tcp, false, 53),
                    not_ztunnel(),
                ],
                redirect(cfg.dns_capture_port),
            ));
        }
    }
    chain(&mut nat, OUT).push(rule(
        vec![
            tcp(),
            mark(false, cfg.inpod_tproxy_mark, cfg.inpod_tproxy_mask),
        ],
        accept(),
    ));
    for lo in &loopbacks {
        chain(&mut nat, OUT).push(rule(
            vec![oif(false, "lo"), addr(Direction::Dst, true, *lo)],
            accept(),
        ));
    }
    for lo in &loopbacks {
        chain(&mut nat, OUT).push(rule(
            vec![tcp(), addr(Direction::Dst, true, *lo), not_ztunnel()],
            redirect(cfg.ztunnel_outbound_port),
        ));
    }

    let mut mangle = table(MANGLE_TABLE, (ChainType::Filter, ChainType::Route), -150);
    chain(&mut mangle, PRE).push(rule(
        vec![mark(false, cfg.inpod_mark, cfg.inpod_mask)],
        Statement::CtMarkSet(MarkValue::Bitwise {
            and: !cfg.inpod_tproxy_mask,
            xor: cfg.inpod_tproxy_mark,
        }),
    ));
    chain(&mut mangle, OUT).push(rule(
        vec![Match::CtMark {
            negate: false,
            mask: cfg.inpod_tproxy_mask,
            value: cfg.inpod_tproxy_mark,
        }],
        Statement::MarkSet(MarkValue::FromCtMark),
    ));

    let mut tables = vec![nat, mangle];
    if cfg.dns_capture {
        let mut raw = table(RAW_TABLE, (ChainType::Filter, ChainType::Filter), -300);
        chain(&mut raw, OUT).push(rule(
            vec![
                port(Direction::Dst, L4Proto::Udp, false, 53),
                mark(false, cfg.inpod_mark, cfg.inpod_mask),
            ],
            Statement::CtZoneSet(cfg.dns_zone),
        ));
        chain(&mut raw, PRE).push(rule(
            vec![port(Direction::Src, L4Proto::Udp, false, 53), not_ztunnel()],
            Statement::CtZoneSet(cfg.dns_zone),
        ));
        tables.push(raw);
    }
    Ruleset { tables }
}

/// The host's ruleset: table `inet istio-ambient-nat` with the probe address sets
/// ([`PROBE_SET_V4`], with IPv6 also [`PROBE_SET_V6`]; empty, filled element by element as
/// pods come and go) and chain `postrouting` (nat, priority 100) SNATing kubelet's TCP to an
/// address in a set to the probe address.
pub fn compile_host(cfg: &AmbientHostConfig) -> Ruleset {
    let mut t = Table::new(Family::Inet, HOST_TABLE);
    let mut post = Chain::base("postrouting", ChainType::Nat, Hook::Postrouting, 100);
    let mut families = vec![(
        IpVersion::V4,
        PROBE_SET_V4,
        SetKeyType::Ipv4Addr,
        IpAddr::from(cfg.probe_snat_ipv4),
    )];
    if cfg.ipv6 {
        families.push((
            IpVersion::V6,
            PROBE_SET_V6,
            SetKeyType::Ipv6Addr,
            IpAddr::from(cfg.probe_snat_ipv6),
        ));
    }
    for (version, set, key_type, to) in families {
        t.sets.push(Set {
            name: set.into(),
            key_type,
            interval: false,
            elements: vec![],
        });
        post.rules.push(Rule::new(
            vec![
                tcp(),
                Match::SkUid {
                    negate: false,
                    values: Values::One(Owner::Id(cfg.kubelet_uid)),
                },
                Match::Addr {
                    dir: Direction::Dst,
                    version,
                    negate: false,
                    values: Values::Named(set.into()),
                },
            ],
            vec![
                Statement::Counter,
                Statement::Snat {
                    version: Some(version),
                    addr: to,
                },
            ],
        ));
    }
    t.chains.push(post);
    Ruleset { tables: vec![t] }
}
