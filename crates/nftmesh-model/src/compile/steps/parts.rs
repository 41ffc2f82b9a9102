//! Small constructors for the matches, statements, rules and address lists the steps write.

use crate::config::CaptureConfig;
use crate::expr::{
    CtStates, Direction, IpVersion, L4Proto, Match, Owner, PortRange, Statement, Values, Verdict,
};
use crate::ruleset::Rule;
use ipnet::{IpNet, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// DNS's port.
pub(super) const DNS_PORT: u16 = 53;

/// `meta l4proto tcp`.
pub(super) fn tcp() -> Match {
    Match::L4Proto {
        negate: false,
        proto: L4Proto::Tcp,
    }
}

/// `iifname NAME`.
pub(super) fn iif(name: &str) -> Match {
    Match::Iifname {
        negate: false,
        values: Values::One(name.to_string()),
    }
}

/// `oifname NAME`.
pub(super) fn oif(name: &str) -> Match {
    Match::Oifname {
        negate: false,
        values: Values::One(name.to_string()),
    }
}

/// An address match of the IP version of `values`.
pub(super) fn addr(dir: Direction, negate: bool, values: Values<IpNet>) -> Match {
    let version = match &values {
        Values::One(n) => IpVersion::of_net(n),
        Values::Set(v) => v.first().map_or(IpVersion::V4, IpVersion::of_net),
        Values::Named(_) => IpVersion::V4,
    };
    Match::Addr {
        dir,
        version,
        negate,
        values,
    }
}

/// `ip daddr NET` (or `ip6`), negated when `negate`.
pub(super) fn daddr(negate: bool, net: IpNet) -> Match {
    addr(Direction::Dst, negate, Values::One(net))
}

/// `ip saddr NET` (or `ip6`).
pub(super) fn saddr(net: IpNet) -> Match {
    addr(Direction::Src, false, Values::One(net))
}

/// Keep the first occurrence of every item (a set may not hold one element twice); linear, so
/// lists of 10 000 CIDRs stay cheap.
pub(super) fn dedup<T: Eq + std::hash::Hash + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

/// A port match on the distinct `ports`; `None` when there are none.
pub(super) fn port(dir: Direction, proto: L4Proto, negate: bool, ports: &[u16]) -> Option<Match> {
    let values = Values::from_list(dedup(ports.iter().map(|p| PortRange::single(*p))))?;
    Some(Match::Port {
        dir,
        proto,
        negate,
        values,
    })
}

/// A destination port match; with no ports, just the protocol.
pub(super) fn dport(proto: L4Proto, negate: bool, ports: &[u16]) -> Match {
    port(Direction::Dst, proto, negate, ports).unwrap_or(Match::L4Proto {
        negate: false,
        proto,
    })
}

/// `meta skuid UID`.
pub(super) fn skuid(negate: bool, uid: u32) -> Match {
    Match::SkUid {
        negate,
        values: Values::One(Owner::Id(uid)),
    }
}

/// `meta skgid GID`.
pub(super) fn skgid(negate: bool, gid: u32) -> Match {
    Match::SkGid {
        negate,
        values: Values::One(Owner::Id(gid)),
    }
}

/// `meta mark VALUE` (all bits).
pub(super) fn mark(negate: bool, value: u32) -> Match {
    Match::Mark {
        negate,
        mask: u32::MAX,
        value,
    }
}

/// `counter`.
pub(super) fn counter() -> Statement {
    Statement::Counter
}

/// `return`.
pub(super) fn ret() -> Statement {
    Statement::Verdict(Verdict::Return)
}

/// `jump CHAIN`.
pub(super) fn jump(chain: &str) -> Statement {
    Statement::Verdict(Verdict::Jump(chain.to_string()))
}

/// `redirect to :PORT`.
pub(super) fn redirect(port: u16) -> Statement {
    Statement::Redirect { port: Some(port) }
}

/// A rule of `matches` then `statements`.
pub(super) fn rule(matches: Vec<Match>, statements: Vec<Statement>) -> Rule {
    Rule::new(matches, statements)
}

/// The single-address prefix of `a`.
pub(super) fn host(a: IpAddr) -> IpNet {
    IpNet::from(a)
}

/// `::1/128`.
pub(super) fn v6_loopback() -> IpNet {
    IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST))
}

/// `127.0.0.6/32`, the source the proxy uses to pass inbound traffic through.
pub(super) fn v4_inbound_passthrough() -> IpNet {
    IpNet::from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)))
}

/// `::6/128`, the IPv6 inbound passthrough source.
pub(super) fn v6_inbound_passthrough() -> IpNet {
    IpNet::V6(Ipv6Net::from(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6)))
}

/// The prefixes of one IP version, as one value or an anonymous set. Prefixes covered by
/// others are dropped and neighbours merged (the kernel refuses overlapping intervals); a list
/// that is already minimal keeps its order.
pub(super) fn nets(list: &[IpNet], version: IpVersion) -> Option<Values<IpNet>> {
    let mine: Vec<IpNet> = dedup(
        list.iter()
            .filter(|n| IpVersion::of_net(n) == version)
            .map(|n| n.trunc()),
    );
    let merged = IpNet::aggregate(&mine);
    if merged.len() == mine.len() {
        Values::from_list(mine)
    } else {
        Values::from_list(merged)
    }
}

/// The DNS servers of one IP version, as for [`nets`].
pub(super) fn servers(cfg: &CaptureConfig, version: IpVersion) -> Option<Values<IpNet>> {
    let all: Vec<IpNet> = cfg.dns.servers.iter().map(|s| host(*s)).collect();
    nets(&all, version)
}

/// Whether an IP version's rules are written: IPv4 always, IPv6 when on (Istio's
/// "append v6 rule if supported").
pub(super) fn enabled(cfg: &CaptureConfig, version: IpVersion) -> bool {
    version == IpVersion::V4 || cfg.ipv6
}

/// Each enabled IP version with its host loopback range: `host_lo` for IPv4, `::1` for IPv6.
pub(super) fn loopbacks(cfg: &CaptureConfig, host_lo: IpNet) -> Vec<(IpVersion, IpNet)> {
    [(IpVersion::V4, host_lo), (IpVersion::V6, v6_loopback())]
        .into_iter()
        .filter(|(version, _)| enabled(cfg, *version))
        .collect()
}

/// `meta skuid` for every proxy uid, then `meta skgid` for every proxy gid.
pub(super) fn proxy_owner_matches(cfg: &CaptureConfig) -> Vec<Match> {
    cfg.proxy_uids
        .iter()
        .map(|u| skuid(false, *u))
        .chain(cfg.proxy_gids.iter().map(|g| skgid(false, *g)))
        .collect()
}

/// `ct state related,established`.
pub(super) fn established() -> Match {
    Match::CtState {
        negate: false,
        states: CtStates::RELATED.union(CtStates::ESTABLISHED),
    }
}

/// Let the tunnel port through: `tcp dport <inbound tunnel port> counter return`.
pub(super) fn tunnel_return(cfg: &CaptureConfig) -> Rule {
    rule(
        vec![
            tcp(),
            dport(L4Proto::Tcp, false, &[cfg.inbound_tunnel_port]),
        ],
        vec![counter(), ret()],
    )
}
