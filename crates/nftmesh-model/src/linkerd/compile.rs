//! [`LinkerdConfig`] → one table, rule for rule in the order proxy-init appends them.

use super::LinkerdConfig;
use crate::expr::{
    Direction, IpVersion, L4Proto, Match, Owner, PortRange, Statement, Values, Verdict,
};
use crate::ruleset::{Chain, ChainType, Family, Hook, Rule, Ruleset, Table};
use ipnet::IpNet;

/// The table's name (family `inet` with IPv6, `ip` without).
pub const TABLE: &str = "linkerd-proxy-init";
/// The inbound chain (proxy-init's `PROXY_INIT_REDIRECT`).
pub const REDIRECT_CHAIN: &str = "proxy-init-redirect";
/// The outbound chain (proxy-init's `PROXY_INIT_OUTPUT`).
pub const OUTPUT_CHAIN: &str = "proxy-init-output";

/// iptables-nft's nat chains' priority (`dstnat`), which proxy-init's rules run at.
const NAT_PRIORITY: i32 = -100;

fn rule(matches: Vec<Match>, statement: Statement) -> Rule {
    Rule::new(matches, vec![Statement::Counter, statement])
}

fn ret() -> Statement {
    Statement::Verdict(Verdict::Return)
}

fn tcp() -> Match {
    Match::L4Proto {
        negate: false,
        proto: L4Proto::Tcp,
    }
}

fn tcp_dports(ports: Vec<PortRange>) -> Option<Match> {
    Values::from_list(ports).map(|values| Match::Port {
        dir: Direction::Dst,
        proto: L4Proto::Tcp,
        negate: false,
        values,
    })
}

fn redirect(port: u16) -> Statement {
    Statement::Redirect { port: Some(port) }
}

/// `PROXY_INIT_REDIRECT`: ignored ports, ignored sources, then the redirect.
fn redirect_chain(cfg: &LinkerdConfig) -> Chain {
    let mut c = Chain::regular(REDIRECT_CHAIN);
    if let Some(m) = tcp_dports(cfg.inbound_ports_to_ignore.clone()) {
        c.rules.push(rule(vec![m], ret()));
    }
    for version in [IpVersion::V4, IpVersion::V6] {
        let nets: Vec<IpNet> = cfg
            .subnets_to_ignore
            .iter()
            .filter(|n| IpVersion::of(n.addr()) == version)
            .copied()
            .collect();
        if let Some(values) = Values::from_list(nets) {
            let m = Match::Addr {
                dir: Direction::Src,
                version,
                negate: false,
                values,
            };
            c.rules.push(rule(vec![m], ret()));
        }
    }
    let listed = cfg
        .ports_to_redirect
        .iter()
        .map(|p| PortRange::single(*p))
        .collect();
    let to = redirect(cfg.incoming_proxy_port);
    match tcp_dports(listed) {
        Some(m) => c.rules.push(rule(vec![m], to)),
        None => c.rules.push(rule(vec![tcp()], to)),
    }
    c
}

/// `PROXY_INIT_OUTPUT`: the proxy's own traffic, loopback and ignored ports, then the
/// redirect.
fn output_chain(cfg: &LinkerdConfig) -> Chain {
    let mut c = Chain::regular(OUTPUT_CHAIN);
    if let Some(uid) = cfg.proxy_uid {
        let m = Match::SkUid {
            negate: false,
            values: Values::One(Owner::Id(uid)),
        };
        c.rules.push(rule(vec![m], ret()));
    }
    if let Some(gid) = cfg.proxy_gid {
        let m = Match::SkGid {
            negate: false,
            values: Values::One(Owner::Id(gid)),
        };
        c.rules.push(rule(vec![m], ret()));
    }
    let lo = Match::Oifname {
        negate: false,
        values: Values::One("lo".into()),
    };
    c.rules.push(rule(vec![lo], ret()));
    if let Some(m) = tcp_dports(cfg.outbound_ports_to_ignore.clone()) {
        c.rules.push(rule(vec![m], ret()));
    }
    c.rules
        .push(rule(vec![tcp()], redirect(cfg.outgoing_proxy_port)));
    c
}

/// A base chain that jumps to `to` (proxy-init's `-A PREROUTING -j ...`).
fn hooked(name: &str, hook: Hook, to: &str) -> Chain {
    let mut c = Chain::base(name, ChainType::Nat, hook, NAT_PRIORITY);
    c.rules.push(rule(
        Vec::new(),
        Statement::Verdict(Verdict::Jump(to.into())),
    ));
    c
}

/// Linkerd's capture as one table (see the [module](super) docs). Assumes
/// [`LinkerdConfig::validate`] passed.
pub fn compile_linkerd(cfg: &LinkerdConfig) -> Ruleset {
    let family = if cfg.ipv6 { Family::Inet } else { Family::Ip };
    let mut t = Table::new(family, TABLE);
    t.chains
        .push(hooked("prerouting", Hook::Prerouting, REDIRECT_CHAIN));
    t.chains.push(hooked("output", Hook::Output, OUTPUT_CHAIN));
    t.chains.push(redirect_chain(cfg));
    t.chains.push(output_chain(cfg));
    Ruleset { tables: vec![t] }
}
