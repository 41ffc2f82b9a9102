//! The steps of Istio's generator, in its order, producing typed rules.

use super::builder::{chain_names::*, Builder, MANGLE_TABLE, NAT_TABLE, RAW_TABLE};
use crate::config::{
    CaptureConfig, CidrSelection, GroupRef, InterceptionMode, OwnerGroups, PortSelection,
    DNS_CAPTURE_PORT, OUTBOUND_MARK,
};
use crate::expr::{
    CtStates, Direction, IpVersion, L4Proto, MarkValue, Match, Owner, PortRange, Statement, Values,
    Verdict,
};
use crate::ruleset::Rule;
use ipnet::{IpNet, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const DNS_PORT: u16 = 53;

// ---- small constructors -------------------------------------------------------------------

fn tcp() -> Match {
    Match::L4Proto {
        negate: false,
        proto: L4Proto::Tcp,
    }
}

fn iif(name: &str) -> Match {
    Match::Iifname {
        negate: false,
        values: Values::One(name.to_string()),
    }
}

fn oif(name: &str) -> Match {
    Match::Oifname {
        negate: false,
        values: Values::One(name.to_string()),
    }
}

fn addr(dir: Direction, negate: bool, values: Values<IpNet>) -> Match {
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

fn daddr(negate: bool, net: IpNet) -> Match {
    addr(Direction::Dst, negate, Values::One(net))
}

fn saddr(net: IpNet) -> Match {
    addr(Direction::Src, false, Values::One(net))
}

/// Keep the first occurrence of every item (a set may not hold one element twice); linear, so
/// lists of 10 000 CIDRs stay cheap.
fn dedup<T: Eq + std::hash::Hash + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

fn port(dir: Direction, proto: L4Proto, negate: bool, ports: &[u16]) -> Option<Match> {
    let values = Values::from_list(dedup(ports.iter().map(|p| PortRange::single(*p))))?;
    Some(Match::Port {
        dir,
        proto,
        negate,
        values,
    })
}

fn dport(proto: L4Proto, negate: bool, ports: &[u16]) -> Match {
    port(Direction::Dst, proto, negate, ports).unwrap_or(Match::L4Proto {
        negate: false,
        proto,
    })
}

fn skuid(negate: bool, uid: u32) -> Match {
    Match::SkUid {
        negate,
        values: Values::One(Owner::Id(uid)),
    }
}

fn skgid(negate: bool, gid: u32) -> Match {
    Match::SkGid {
        negate,
        values: Values::One(Owner::Id(gid)),
    }
}

fn mark(negate: bool, value: u32) -> Match {
    Match::Mark {
        negate,
        mask: u32::MAX,
        value,
    }
}

fn counter() -> Statement {
    Statement::Counter
}

fn ret() -> Statement {
    Statement::Verdict(Verdict::Return)
}

fn jump(chain: &str) -> Statement {
    Statement::Verdict(Verdict::Jump(chain.to_string()))
}

fn redirect(port: u16) -> Statement {
    Statement::Redirect { port: Some(port) }
}

fn rule(matches: Vec<Match>, statements: Vec<Statement>) -> Rule {
    Rule::new(matches, statements)
}

fn host(a: IpAddr) -> IpNet {
    IpNet::from(a)
}

fn v6_loopback() -> IpNet {
    IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST))
}

fn v4_inbound_passthrough() -> IpNet {
    IpNet::from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)))
}

fn v6_inbound_passthrough() -> IpNet {
    IpNet::V6(Ipv6Net::from(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6)))
}

/// The prefixes of one IP version, as one value or an anonymous set. Prefixes covered by
/// others are dropped and neighbours merged (the kernel refuses overlapping intervals); a list
/// that is already minimal keeps its order.
fn nets(list: &[IpNet], version: IpVersion) -> Option<Values<IpNet>> {
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

fn servers(cfg: &CaptureConfig, version: IpVersion) -> Option<Values<IpNet>> {
    let all: Vec<IpNet> = cfg.dns.servers.iter().map(|s| host(*s)).collect();
    nets(&all, version)
}

/// Whether an IP version's rules are written: IPv4 always, IPv6 when on (Istio's
/// "append v6 rule if supported").
fn enabled(cfg: &CaptureConfig, version: IpVersion) -> bool {
    version == IpVersion::V4 || cfg.ipv6
}

// ---- the steps ----------------------------------------------------------------------------

pub(crate) fn run(cfg: &CaptureConfig, b: &mut Builder) {
    let dns = cfg.dns_in_effect();
    let host_lo = IpNet::V4(cfg.host_ipv4_loopback_cidr);

    exclude_interfaces(cfg, b);
    for name in &cfg.reroute_virtual_interfaces {
        b.insert(
            NAT_TABLE,
            PREROUTING,
            0,
            rule(vec![iif(name)], vec![counter(), ret()]),
        );
    }
    if cfg.drop_invalid {
        b.append(
            MANGLE_TABLE,
            PREROUTING,
            rule(
                vec![
                    tcp(),
                    Match::CtState {
                        negate: false,
                        states: CtStates::INVALID,
                    },
                ],
                vec![counter(), jump(DROP)],
            ),
        );
        b.append(
            MANGLE_TABLE,
            DROP,
            rule(vec![], vec![counter(), Statement::Verdict(Verdict::Drop)]),
        );
    }
    b.append(
        NAT_TABLE,
        INBOUND,
        rule(
            vec![
                tcp(),
                dport(L4Proto::Tcp, false, &[cfg.inbound_tunnel_port]),
            ],
            vec![counter(), ret()],
        ),
    );
    b.append(
        NAT_TABLE,
        REDIRECT,
        rule(vec![tcp()], vec![counter(), redirect(cfg.proxy_port)]),
    );
    b.append(
        NAT_TABLE,
        IN_REDIRECT,
        rule(
            vec![tcp()],
            vec![counter(), redirect(cfg.inbound_capture_port)],
        ),
    );
    inbound(cfg, b, host_lo);
    b.append(
        NAT_TABLE,
        OUTPUT,
        rule(vec![], vec![counter(), jump(OUTPUT_CHAIN)]),
    );
    for proto in [L4Proto::Tcp, L4Proto::Udp] {
        if let Some(m) = port(Direction::Dst, proto, false, &cfg.outbound_ports_exclude) {
            b.append(
                NAT_TABLE,
                OUTPUT_CHAIN,
                rule(vec![m], vec![counter(), ret()]),
            );
        }
    }
    b.append(
        NAT_TABLE,
        OUTPUT_CHAIN,
        rule(
            vec![oif("lo"), saddr(v4_inbound_passthrough())],
            vec![counter(), ret()],
        ),
    );
    if cfg.ipv6 {
        b.append(
            NAT_TABLE,
            OUTPUT_CHAIN,
            rule(
                vec![oif("lo"), saddr(v6_inbound_passthrough())],
                vec![counter(), ret()],
            ),
        );
    }
    proxy_owners(cfg, b, dns, host_lo);
    owner_groups(cfg, b);
    if dns {
        dns_capture(cfg, b);
    }
    b.append(
        NAT_TABLE,
        OUTPUT_CHAIN,
        rule(vec![daddr(false, host_lo)], vec![counter(), ret()]),
    );
    if cfg.ipv6 {
        b.append(
            NAT_TABLE,
            OUTPUT_CHAIN,
            rule(vec![daddr(false, v6_loopback())], vec![counter(), ret()]),
        );
    }
    for version in [IpVersion::V4, IpVersion::V6] {
        if let Some(v) =
            nets(&cfg.outbound_cidrs_exclude, version).filter(|_| enabled(cfg, version))
        {
            b.append(
                NAT_TABLE,
                OUTPUT_CHAIN,
                rule(vec![addr(Direction::Dst, false, v)], vec![counter(), ret()]),
            );
        }
    }
    if let Some(m) = port(
        Direction::Dst,
        L4Proto::Tcp,
        false,
        &cfg.outbound_ports_include,
    ) {
        b.append(
            NAT_TABLE,
            OUTPUT_CHAIN,
            rule(vec![m], vec![counter(), jump(REDIRECT)]),
        );
    }
    outbound_include(cfg, b);
    if cfg.mode == InterceptionMode::Tproxy {
        tproxy_marks(cfg, b, host_lo);
    }
}

fn exclude_interfaces(cfg: &CaptureConfig, b: &mut Builder) {
    let mut tables = vec![NAT_TABLE];
    if cfg.mode == InterceptionMode::Tproxy {
        tables.push(MANGLE_TABLE);
    }
    for table in tables {
        for name in &cfg.exclude_interfaces {
            b.append(
                table,
                PREROUTING,
                rule(vec![iif(name)], vec![counter(), ret()]),
            );
            b.append(table, OUTPUT, rule(vec![oif(name)], vec![counter(), ret()]));
        }
    }
}

fn inbound(cfg: &CaptureConfig, b: &mut Builder, host_lo: IpNet) {
    let tproxy = cfg.mode == InterceptionMode::Tproxy;
    if cfg.inbound_ports == PortSelection::Ports(Vec::new()) {
        return;
    }
    let table = if tproxy { MANGLE_TABLE } else { NAT_TABLE };
    if tproxy {
        let mark_set = Statement::MarkSet(MarkValue::Value(cfg.tproxy_mark));
        b.append(
            MANGLE_TABLE,
            DIVERT,
            rule(vec![], vec![counter(), mark_set.clone()]),
        );
        b.append(
            MANGLE_TABLE,
            DIVERT,
            rule(vec![], vec![counter(), Statement::Verdict(Verdict::Accept)]),
        );
        for (version, lo) in [(IpVersion::V4, host_lo), (IpVersion::V6, v6_loopback())] {
            if !enabled(cfg, version) {
                continue;
            }
            b.append(
                MANGLE_TABLE,
                TPROXY,
                rule(
                    vec![tcp(), daddr(true, lo)],
                    vec![
                        Statement::Tproxy {
                            version: Some(version),
                            addr: None,
                            port: Some(cfg.inbound_capture_port),
                        },
                        mark_set.clone(),
                        counter(),
                        Statement::Verdict(Verdict::Accept),
                    ],
                ),
            );
        }
    }
    b.append(
        table,
        PREROUTING,
        rule(vec![tcp()], vec![counter(), jump(INBOUND)]),
    );
    if tproxy {
        // Not in Istio: its TPROXY chain lacks the tunnel-port return its NAT chain has.
        b.append(
            MANGLE_TABLE,
            INBOUND,
            rule(
                vec![
                    tcp(),
                    dport(L4Proto::Tcp, false, &[cfg.inbound_tunnel_port]),
                ],
                vec![counter(), ret()],
            ),
        );
    }
    let established = Match::CtState {
        negate: false,
        states: CtStates::RELATED.union(CtStates::ESTABLISHED),
    };
    match &cfg.inbound_ports {
        PortSelection::All => {
            if let Some(m) = port(
                Direction::Dst,
                L4Proto::Tcp,
                false,
                &cfg.inbound_ports_exclude,
            ) {
                b.append(table, INBOUND, rule(vec![tcp(), m], vec![counter(), ret()]));
            }
            if tproxy {
                b.append(
                    MANGLE_TABLE,
                    INBOUND,
                    rule(vec![tcp(), established], vec![counter(), jump(DIVERT)]),
                );
                b.append(
                    MANGLE_TABLE,
                    INBOUND,
                    rule(vec![tcp()], vec![counter(), jump(TPROXY)]),
                );
            } else {
                b.append(
                    NAT_TABLE,
                    INBOUND,
                    rule(vec![tcp()], vec![counter(), jump(IN_REDIRECT)]),
                );
            }
        }
        PortSelection::Ports(ports) => {
            let Some(m) = port(Direction::Dst, L4Proto::Tcp, false, ports) else {
                return;
            };
            if tproxy {
                b.append(
                    MANGLE_TABLE,
                    INBOUND,
                    rule(
                        vec![tcp(), established, m.clone()],
                        vec![counter(), jump(DIVERT)],
                    ),
                );
                b.append(
                    MANGLE_TABLE,
                    INBOUND,
                    rule(vec![tcp(), m], vec![counter(), jump(TPROXY)]),
                );
            } else {
                b.append(
                    NAT_TABLE,
                    INBOUND,
                    rule(vec![tcp(), m], vec![counter(), jump(IN_REDIRECT)]),
                );
            }
        }
    }
}

/// Whether an included outbound range is a loopback address (Istio's `HasLoopBackIP`).
fn includes_loopback(cfg: &CaptureConfig) -> bool {
    match &cfg.outbound_cidrs_include {
        CidrSelection::All => false,
        CidrSelection::Cidrs(c) => c.iter().any(|n| n.addr().is_loopback()),
    }
}

/// Per proxy uid, then per proxy gid: redirect the proxy's calls to the pod over `lo` back to
/// the inbound port, let other `lo` traffic through, and never capture the proxy itself.
fn proxy_owners(cfg: &CaptureConfig, b: &mut Builder, dns: bool, host_lo: IpNet) {
    let loopback_included = includes_loopback(cfg);
    let owners = cfg
        .proxy_uids
        .iter()
        .map(|u| (true, *u))
        .chain(cfg.proxy_gids.iter().map(|g| (false, *g)));
    for (is_uid, id) in owners {
        let owner = |negate| {
            if is_uid {
                skuid(negate, id)
            } else {
                skgid(negate, id)
            }
        };
        // Istio skips port 53 here for uids only.
        let skip_ports: Vec<u16> = if dns && is_uid && cfg.inbound_tunnel_port != DNS_PORT {
            vec![DNS_PORT, cfg.inbound_tunnel_port]
        } else {
            vec![cfg.inbound_tunnel_port]
        };
        for (version, lo) in [(IpVersion::V4, host_lo), (IpVersion::V6, v6_loopback())] {
            if !enabled(cfg, version) {
                continue;
            }
            b.append(
                NAT_TABLE,
                OUTPUT_CHAIN,
                rule(
                    vec![
                        oif("lo"),
                        tcp(),
                        daddr(true, lo),
                        dport(L4Proto::Tcp, true, &skip_ports),
                        owner(false),
                    ],
                    vec![counter(), jump(IN_REDIRECT)],
                ),
            );
        }
        if !loopback_included {
            let matches = if dns {
                vec![
                    oif("lo"),
                    tcp(),
                    dport(L4Proto::Tcp, true, &[DNS_PORT]),
                    owner(true),
                ]
            } else {
                vec![oif("lo"), owner(true)]
            };
            b.append(
                NAT_TABLE,
                OUTPUT_CHAIN,
                rule(matches, vec![counter(), ret()]),
            );
        }
        b.append(
            NAT_TABLE,
            OUTPUT_CHAIN,
            rule(vec![owner(false)], vec![counter(), ret()]),
        );
    }
}

fn group_owner(g: &GroupRef) -> Owner {
    match g {
        GroupRef::Id(id) => Owner::Id(*id),
        GroupRef::Name(n) => Owner::Name(n.clone()),
    }
}

fn owner_groups(cfg: &CaptureConfig, b: &mut Builder) {
    let (negate, groups) = match &cfg.owner_groups {
        OwnerGroups::All => return,
        OwnerGroups::Exclude(g) => (false, g),
        OwnerGroups::Include(g) => (true, g),
    };
    let matches = match Values::from_list(dedup(groups.iter().map(group_owner))) {
        Some(values) => vec![Match::SkGid { negate, values }],
        // Istio: an empty include list returns everything (captures no group).
        None if negate => vec![],
        None => return,
    };
    b.append(
        NAT_TABLE,
        OUTPUT_CHAIN,
        rule(matches, vec![counter(), ret()]),
    );
}

fn dns_capture(cfg: &CaptureConfig, b: &mut Builder) {
    b.append(
        RAW_TABLE,
        OUTPUT,
        rule(vec![], vec![counter(), jump(OUTPUT_DNS)]),
    );
    b.append(
        NAT_TABLE,
        OUTPUT_CHAIN,
        rule(vec![], vec![counter(), jump(OUTPUT_DNS)]),
    );
    for proto in [L4Proto::Tcp, L4Proto::Udp] {
        if cfg.dns.capture_all {
            let mut matches = vec![dport(proto, false, &[DNS_PORT])];
            if proto == L4Proto::Tcp {
                matches.insert(0, tcp());
            }
            b.append(
                NAT_TABLE,
                OUTPUT_DNS,
                rule(matches, vec![counter(), redirect(DNS_CAPTURE_PORT)]),
            );
            continue;
        }
        for version in [IpVersion::V4, IpVersion::V6] {
            if let Some(v) = servers(cfg, version).filter(|_| enabled(cfg, version)) {
                b.append(
                    NAT_TABLE,
                    OUTPUT_DNS,
                    rule(
                        vec![
                            addr(Direction::Dst, false, v),
                            dport(proto, false, &[DNS_PORT]),
                        ],
                        vec![counter(), redirect(DNS_CAPTURE_PORT)],
                    ),
                );
            }
        }
    }
    dns_conntrack_zones(cfg, b);
}

/// Split DNS over UDP into conntrack zones: zone 1 between the agent and upstream servers,
/// zone 2 between applications and the agent.
fn dns_conntrack_zones(cfg: &CaptureConfig, b: &mut Builder) {
    let udp = |dir, p| port(dir, L4Proto::Udp, false, &[p]).unwrap_or(tcp());
    let owners = cfg
        .proxy_uids
        .iter()
        .map(|u| skuid(false, *u))
        .chain(cfg.proxy_gids.iter().map(|g| skgid(false, *g)));
    for owner in owners {
        b.append(
            RAW_TABLE,
            OUTPUT_DNS,
            rule(
                vec![udp(Direction::Dst, DNS_PORT), owner.clone()],
                vec![counter(), Statement::CtZoneSet(1)],
            ),
        );
        b.append(
            RAW_TABLE,
            OUTPUT_DNS,
            rule(
                vec![udp(Direction::Src, DNS_CAPTURE_PORT), owner],
                vec![counter(), Statement::CtZoneSet(2)],
            ),
        );
    }
    if cfg.dns.capture_all {
        b.append(
            RAW_TABLE,
            PREROUTING,
            rule(vec![], vec![counter(), jump(INBOUND)]),
        );
        b.append(
            RAW_TABLE,
            OUTPUT_DNS,
            rule(
                vec![udp(Direction::Dst, DNS_PORT)],
                vec![counter(), Statement::CtZoneSet(2)],
            ),
        );
        b.append(
            RAW_TABLE,
            INBOUND,
            rule(
                vec![udp(Direction::Src, DNS_PORT)],
                vec![counter(), Statement::CtZoneSet(1)],
            ),
        );
        return;
    }
    b.append(
        RAW_TABLE,
        PREROUTING,
        rule(vec![], vec![counter(), jump(INBOUND)]),
    );
    for version in [IpVersion::V4, IpVersion::V6] {
        let Some(v) = servers(cfg, version).filter(|_| enabled(cfg, version)) else {
            continue;
        };
        b.append(
            RAW_TABLE,
            OUTPUT_DNS,
            rule(
                vec![
                    udp(Direction::Dst, DNS_PORT),
                    addr(Direction::Dst, false, v.clone()),
                ],
                vec![counter(), Statement::CtZoneSet(2)],
            ),
        );
        b.append(
            RAW_TABLE,
            INBOUND,
            rule(
                vec![
                    udp(Direction::Src, DNS_PORT),
                    addr(Direction::Src, false, v),
                ],
                vec![counter(), Statement::CtZoneSet(1)],
            ),
        );
    }
}

fn outbound_include(cfg: &CaptureConfig, b: &mut Builder) {
    match &cfg.outbound_cidrs_include {
        CidrSelection::All => {
            b.append(
                NAT_TABLE,
                OUTPUT_CHAIN,
                rule(vec![], vec![counter(), jump(REDIRECT)]),
            );
            for name in &cfg.reroute_virtual_interfaces {
                b.insert(
                    NAT_TABLE,
                    PREROUTING,
                    0,
                    rule(vec![iif(name)], vec![counter(), jump(REDIRECT)]),
                );
            }
        }
        CidrSelection::Cidrs(cidrs) => {
            for version in [IpVersion::V4, IpVersion::V6] {
                let Some(v) = nets(cidrs, version).filter(|_| enabled(cfg, version)) else {
                    continue;
                };
                for name in &cfg.reroute_virtual_interfaces {
                    b.insert(
                        NAT_TABLE,
                        PREROUTING,
                        0,
                        rule(
                            vec![iif(name), addr(Direction::Dst, false, v.clone())],
                            vec![counter(), jump(REDIRECT)],
                        ),
                    );
                }
                b.append(
                    NAT_TABLE,
                    OUTPUT_CHAIN,
                    rule(
                        vec![addr(Direction::Dst, false, v)],
                        vec![counter(), jump(REDIRECT)],
                    ),
                );
            }
        }
    }
}

fn tproxy_marks(cfg: &CaptureConfig, b: &mut Builder, host_lo: IpNet) {
    let m = cfg.tproxy_mark;
    b.append(
        MANGLE_TABLE,
        PREROUTING,
        rule(
            vec![tcp(), mark(false, m)],
            vec![counter(), Statement::CtMarkSet(MarkValue::FromMark)],
        ),
    );
    b.append(
        MANGLE_TABLE,
        OUTPUT,
        rule(
            vec![oif("lo"), tcp(), mark(false, m)],
            vec![counter(), ret()],
        ),
    );
    let owners = cfg
        .proxy_uids
        .iter()
        .map(|u| skuid(false, *u))
        .chain(cfg.proxy_gids.iter().map(|g| skgid(false, *g)));
    for owner in owners {
        for (version, lo) in [(IpVersion::V4, host_lo), (IpVersion::V6, v6_loopback())] {
            if !enabled(cfg, version) {
                continue;
            }
            b.append(
                MANGLE_TABLE,
                OUTPUT,
                rule(
                    vec![oif("lo"), tcp(), daddr(true, lo), owner.clone()],
                    vec![
                        counter(),
                        Statement::MarkSet(MarkValue::Value(OUTBOUND_MARK)),
                    ],
                ),
            );
        }
    }
    b.append(
        MANGLE_TABLE,
        OUTPUT,
        rule(
            vec![
                tcp(),
                Match::CtMark {
                    negate: false,
                    mask: u32::MAX,
                    value: m,
                },
            ],
            vec![counter(), Statement::MarkSet(MarkValue::FromCtMark)],
        ),
    );
    b.insert(
        MANGLE_TABLE,
        INBOUND,
        0,
        rule(vec![tcp(), mark(false, m)], vec![counter(), ret()]),
    );
    b.insert(
        MANGLE_TABLE,
        INBOUND,
        1,
        rule(
            vec![iif("lo"), tcp(), saddr(v4_inbound_passthrough())],
            vec![counter(), ret()],
        ),
    );
    if cfg.ipv6 {
        b.insert(
            MANGLE_TABLE,
            INBOUND,
            1,
            rule(
                vec![iif("lo"), tcp(), saddr(v6_inbound_passthrough())],
                vec![counter(), ret()],
            ),
        );
    }
    b.insert(
        MANGLE_TABLE,
        INBOUND,
        2,
        rule(
            vec![iif("lo"), tcp(), mark(true, OUTBOUND_MARK)],
            vec![counter(), ret()],
        ),
    );
}
