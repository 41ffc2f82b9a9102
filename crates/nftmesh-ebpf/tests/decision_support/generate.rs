//! Generated configurations, pods and connections: values drawn near the edges the decision
//! turns on (the prefixes' first and last addresses and their neighbours, loopback, the
//! passthrough sources, the DNS servers, the configured ports and ids).

use super::mirror::{Connect, Proto, DNS_PORT, PASSTHROUGH, PASSTHROUGH6};
use super::world::Pod;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nftmesh_model::config::{CaptureConfig, CidrSelection, DnsCapture, GroupRef, OwnerGroups};
use nftmesh_model::InterceptionMode;
use proptest::prelude::*;
use proptest::sample::Index;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 prefix.
pub fn v4(a: u32, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), len).expect("len <= 32"))
}

/// An IPv6 prefix.
pub fn v6(a: u128, len: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), len).expect("len <= 128"))
}

fn an_addr() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(u32::from(Ipv4Addr::new(10, 0, 0, 0))),
        Just(u32::from(Ipv4Addr::new(10, 1, 2, 3))),
        Just(u32::from(Ipv4Addr::new(127, 0, 0, 1))),
        Just(u32::from(Ipv4Addr::new(127, 0, 0, 5))),
        Just(u32::from(Ipv4Addr::new(127, 1, 2, 3))),
        Just(u32::from(Ipv4Addr::new(8, 8, 8, 8))),
        Just(0),
        any::<u32>(),
    ]
}

fn a_cidr() -> impl Strategy<Value = IpNet> {
    let len = prop_oneof![
        Just(0u8),
        Just(1),
        Just(4),
        Just(8),
        Just(16),
        Just(24),
        Just(32),
        0u8..=32
    ];
    (an_addr(), len).prop_map(|(a, l)| v4(a, l))
}

fn an_addr6() -> impl Strategy<Value = u128> {
    prop_oneof![
        Just(u128::from(Ipv6Addr::LOCALHOST)),
        Just(u128::from(PASSTHROUGH6)),
        Just(0),
        Just(u128::from(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5))),
        Just(u128::from(Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0xa))),
        Just(u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
        // An IPv4-mapped prefix: nf_tables' `ip6 daddr` never sees a mapped destination (the
        // packet is IPv4), nor do the programs' IPv6 tries.
        Just(u128::from(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped())),
        any::<u128>(),
    ]
}

fn a_cidr6() -> impl Strategy<Value = IpNet> {
    let len = prop_oneof![
        Just(0u8),
        Just(1),
        Just(8),
        Just(16),
        Just(48),
        Just(64),
        Just(96),
        Just(127),
        Just(128),
        0u8..=128
    ];
    (an_addr6(), len).prop_map(|(a, l)| v6(a, l))
}

/// A prefix of either family (IPv6 ones are dropped with IPv6 off, as `validate` demands).
fn a_cidr_any() -> impl Strategy<Value = IpNet> {
    prop_oneof![3 => a_cidr(), 2 => a_cidr6()]
}

fn a_port() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(80u16),
        Just(443),
        Just(8080),
        Just(9000),
        Just(53),
        Just(15001),
        Just(15008),
        1u16..=u16::MAX
    ]
}

fn an_id() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1000),
        Just(1337),
        Just(1338),
        Just(2000),
        any::<u32>()
    ]
}

fn ids(min: usize) -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(an_id(), min..=3)
}

/// A DNS server: the cluster's, a stub resolver on loopback, public, random, of either family.
fn a_server() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        Just(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))),
        Just(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53))),
        Just(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        Just(IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8))),
        any::<u32>().prop_map(|a| IpAddr::V4(a.into())),
        Just(IpAddr::V6(Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0xa))),
        Just(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        Just(IpAddr::V6(Ipv4Addr::new(10, 96, 0, 10).to_ipv6_mapped())),
        any::<u128>().prop_map(|a| IpAddr::V6(a.into())),
    ]
}

/// `CaptureConfig::dns`: on or off, capture-all or not, servers of both families (possibly
/// none: Istio then turns DNS capture off).
fn a_dns() -> impl Strategy<Value = DnsCapture> {
    (
        prop::bool::weighted(0.7),
        prop::bool::weighted(0.3),
        prop::collection::vec(a_server(), 0..=3),
    )
        .prop_map(|(enabled, capture_all, servers)| DnsCapture {
            enabled,
            capture_all,
            servers,
        })
}

/// A configuration the backends accept.
pub fn a_config() -> impl Strategy<Value = CaptureConfig> {
    let include = prop_oneof![
        Just(CidrSelection::All),
        prop::collection::vec(a_cidr_any(), 0..=3).prop_map(CidrSelection::Cidrs),
    ];
    let groups = || prop::collection::vec(an_id().prop_map(GroupRef::Id), 0..=3);
    let owners = prop_oneof![
        Just(OwnerGroups::All),
        groups().prop_map(OwnerGroups::Include),
        groups().prop_map(OwnerGroups::Exclude),
    ];
    let host_lo = prop_oneof![
        Just((Ipv4Addr::LOCALHOST, 32u8)),
        Just((Ipv4Addr::new(127, 0, 0, 0), 8)),
        Just((Ipv4Addr::new(127, 0, 0, 0), 24)),
    ];
    let ports = || prop::collection::vec(a_port(), 0..=3);
    (
        (
            prop_oneof![Just(15001u16), a_port()],
            prop_oneof![Just(15008u16), a_port()],
            ids(1),
            ids(1),
            any::<bool>(),
            any::<bool>(),
            a_dns(),
        ),
        (
            ports(),
            ports(),
            include,
            prop::collection::vec(a_cidr_any(), 0..=3),
            owners,
            host_lo,
        ),
    )
        .prop_map(|(a, b)| {
            let (proxy_port, tunnel, uids, gids, tproxy, ipv6, mut dns) = a;
            let (ports_include, ports_exclude, include, exclude, owners, host_lo) = b;
            // With IPv6 off `validate` refuses IPv6 prefixes and servers: drop them.
            let family = |n: &IpNet| ipv6 || matches!(n, IpNet::V4(_));
            let include = match include {
                CidrSelection::Cidrs(c) => {
                    CidrSelection::Cidrs(c.into_iter().filter(family).collect())
                }
                all => all,
            };
            dns.servers.retain(|s| ipv6 || s.is_ipv4());
            CaptureConfig {
                proxy_port,
                inbound_tunnel_port: tunnel,
                proxy_uids: uids,
                proxy_gids: gids,
                mode: if tproxy {
                    InterceptionMode::Tproxy
                } else {
                    InterceptionMode::Redirect
                },
                outbound_ports_include: ports_include,
                outbound_ports_exclude: ports_exclude,
                outbound_cidrs_include: include,
                outbound_cidrs_exclude: exclude.into_iter().filter(family).collect(),
                owner_groups: owners,
                host_ipv4_loopback_cidr: Ipv4Net::new(host_lo.0, host_lo.1).expect("valid"),
                ipv6,
                dns,
                ..CaptureConfig::sidecar()
            }
        })
        .prop_filter("a configuration the backends accept", |c| {
            c.validate().is_ok()
        })
}

/// A pod: up to two IPv4 and two IPv6 addresses of its own, `::6` on `lo` half the time.
pub fn a_pod() -> impl Strategy<Value = Pod> {
    let own = prop_oneof![
        Just(Ipv4Addr::new(10, 0, 0, 5)),
        Just(Ipv4Addr::new(10, 1, 2, 3)),
        (1u8..=126, any::<u8>(), any::<u8>(), 1u8..=254)
            .prop_map(|(a, b, c, d)| Ipv4Addr::new(a, b, c, d)),
    ];
    let own6 = prop_oneof![
        Just(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5)),
        Just(Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 3)),
        (0x2000u16..=0x3fff, any::<u64>())
            .prop_map(|(a, b)| { Ipv6Addr::from((u128::from(a) << 112) | u128::from(b)) }),
    ];
    (
        prop::collection::vec(own, 0..=2),
        prop::collection::vec(own6, 0..=2),
        any::<bool>(),
    )
        .prop_map(|(own, mut own6, passthrough)| {
            if passthrough {
                own6.push(PASSTHROUGH6);
            }
            Pod {
                own: own.into_iter().filter(|a| !a.is_loopback()).collect(),
                own6,
            }
        })
}

/// One connection, as indices into the pools a configuration and pod make, plus random values
/// for the rest of the space: (address index, random IPv4, random IPv6), (port index, random
/// port), (uid index, gid index), bits for the ids and the bound address, the kind.
pub type Pick = ((Index, u32, u128), (Index, u16), (Index, Index), u8, u8);

/// Whether a TCP connect() to `a` can make a packet at all.
fn reachable(a: Ipv4Addr) -> bool {
    a.is_unspecified() || !(a.octets()[0] == 0 || a.is_multicast() || a.is_broadcast())
}

/// The same for a native IPv6 destination: not multicast (no TCP), not link-local (needs a
/// scope id: not generated), not IPv4-mapped (that is the dual-stack kind).
fn reachable6(a: Ipv6Addr) -> bool {
    let first = a.segments()[0];
    !(a.is_multicast() || first & 0xffc0 == 0xfe80 || a.to_ipv4_mapped().is_some())
}

/// The edges of `net`: first, last, one outside on each side, and its address as written.
fn edges(net: &Ipv4Net) -> Vec<Ipv4Addr> {
    let (lo, hi) = (u32::from(net.network()), u32::from(net.broadcast()));
    [Some(lo), Some(hi), lo.checked_sub(1), hi.checked_add(1)]
        .into_iter()
        .flatten()
        .map(Ipv4Addr::from)
        .chain([net.addr()])
        .collect()
}

/// [`edges`] of an IPv6 prefix.
fn edges6(net: &Ipv6Net) -> Vec<Ipv6Addr> {
    let (lo, hi) = (u128::from(net.network()), u128::from(net.broadcast()));
    [Some(lo), Some(hi), lo.checked_sub(1), hi.checked_add(1)]
        .into_iter()
        .flatten()
        .map(Ipv6Addr::from)
        .chain([net.addr()])
        .collect()
}

/// The kind of socket and protocol a pick makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An `AF_INET` socket.
    Inet(Proto),
    /// An `AF_INET6` socket to a native IPv6 destination.
    Inet6(Proto),
    /// A dual-stack `AF_INET6` socket to an IPv4-mapped destination.
    Mapped(Proto),
}

fn kind(bits: u8) -> Kind {
    match bits % 10 {
        0..=2 => Kind::Inet(Proto::Tcp),
        3 => Kind::Inet(Proto::Udp),
        4..=5 => Kind::Inet6(Proto::Tcp),
        6 => Kind::Inet6(Proto::Udp),
        7 => Kind::Mapped(Proto::Tcp),
        _ => Kind::Mapped(Proto::Udp),
    }
}

/// The IPv4 destinations worth trying for `cfg` in `pod`.
fn pool4(cfg: &CaptureConfig, pod: &Pod) -> Vec<Ipv4Addr> {
    let mut addrs: BTreeSet<Ipv4Addr> = [
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::new(127, 0, 0, 5),
        Ipv4Addr::new(127, 0, 0, 53),
        PASSTHROUGH,
        Ipv4Addr::new(127, 255, 255, 254),
        Ipv4Addr::new(8, 8, 8, 8),
        Ipv4Addr::new(10, 0, 0, 5),
        Ipv4Addr::new(10, 96, 0, 10),
    ]
    .into_iter()
    .chain(pod.own.iter().copied())
    .chain(edges(&cfg.host_ipv4_loopback_cidr))
    .collect();
    for n in configured_nets(cfg) {
        if let IpNet::V4(n) = n {
            addrs.extend(edges(&n));
        }
    }
    for s in &cfg.dns.servers {
        if let IpAddr::V4(s) = s {
            addrs.extend(edges(&Ipv4Net::from(*s)));
        }
    }
    addrs.into_iter().filter(|a| reachable(*a)).collect()
}

/// The IPv6 destinations worth trying for `cfg` in `pod`.
fn pool6(cfg: &CaptureConfig, pod: &Pod) -> Vec<Ipv6Addr> {
    let mut addrs: BTreeSet<Ipv6Addr> = [
        Ipv6Addr::UNSPECIFIED,
        Ipv6Addr::LOCALHOST,
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 2),
        PASSTHROUGH6,
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5),
        Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0xa),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
    ]
    .into_iter()
    .chain(pod.own6.iter().copied())
    .collect();
    for n in configured_nets(cfg) {
        if let IpNet::V6(n) = n {
            addrs.extend(edges6(&n));
        }
    }
    for s in &cfg.dns.servers {
        if let IpAddr::V6(s) = s {
            addrs.extend(edges6(&Ipv6Net::from(*s)));
        }
    }
    addrs.into_iter().filter(|a| reachable6(*a)).collect()
}

/// The included and excluded prefixes as configured.
fn configured_nets(cfg: &CaptureConfig) -> Vec<IpNet> {
    let included = match &cfg.outbound_cidrs_include {
        CidrSelection::All => vec![],
        CidrSelection::Cidrs(c) => c.clone(),
    };
    included
        .into_iter()
        .chain(cfg.outbound_cidrs_exclude.iter().copied())
        .collect()
}

/// The pools one configuration and pod make, computed once for all its connections.
pub struct Pools {
    addrs: Vec<Ipv4Addr>,
    addrs6: Vec<Ipv6Addr>,
    ports: Vec<u16>,
    ids: Vec<u32>,
    /// The configured DNS servers, native (an IPv4-mapped IPv6 server is left out: the
    /// dual-stack kind reaches IPv4 servers as `::ffff:a.b.c.d`).
    servers: Vec<IpAddr>,
}

impl Pools {
    /// The pools of `cfg` in `pod`.
    pub fn new(cfg: &CaptureConfig, pod: &Pod) -> Self {
        let ports: Vec<u16> = [22, 53, 80, 8080, 15001, 15006, 15008, 15021, 15053, 65535]
            .into_iter()
            .chain([cfg.proxy_port, cfg.inbound_tunnel_port])
            .chain(
                cfg.outbound_ports_include
                    .iter()
                    .chain(&cfg.outbound_ports_exclude)
                    .flat_map(|p| [*p, p.saturating_add(1), p.saturating_sub(1).max(1)]),
            )
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let owner_gids = match &cfg.owner_groups {
            OwnerGroups::All => vec![],
            OwnerGroups::Include(g) | OwnerGroups::Exclude(g) => g.clone(),
        };
        let ids: Vec<u32> = [0, 1000, 1338]
            .into_iter()
            .chain(cfg.proxy_uids.iter().copied())
            .chain(cfg.proxy_gids.iter().copied())
            .chain(owner_gids.iter().filter_map(|g| match g {
                GroupRef::Id(id) => Some(*id),
                GroupRef::Name(_) => None,
            }))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Pools {
            addrs: pool4(cfg, pod),
            addrs6: pool6(cfg, pod),
            ports,
            ids,
            servers: cfg
                .dns
                .servers
                .iter()
                .copied()
                .filter(|s| !matches!(s, IpAddr::V6(a) if a.to_ipv4_mapped().is_some()))
                .collect(),
        }
    }
}

/// The connection `pick` makes from `pools` in `pod`.
pub fn connection(pools: &Pools, pod: &Pod, pick: &Pick) -> Connect {
    let ((addr_i, rand_addr, rand_addr6), (port_i, rand_port), (uid_i, gid_i), bits, kind_bits) =
        pick;
    let kind = kind(*kind_bits);
    let v4 = || {
        let i = addr_i.index(pools.addrs.len() + 1);
        match pools.addrs.get(i) {
            Some(a) => *a,
            None if reachable(Ipv4Addr::from(*rand_addr)) => Ipv4Addr::from(*rand_addr),
            None => pools.addrs[0],
        }
    };
    let v6 = || {
        let i = addr_i.index(pools.addrs6.len() + 1);
        match pools.addrs6.get(i) {
            Some(a) => *a,
            None if reachable6(Ipv6Addr::from(*rand_addr6)) => Ipv6Addr::from(*rand_addr6),
            None => pools.addrs6[0],
        }
    };
    let (proto, daddr) = match kind {
        Kind::Inet(p) => (p, IpAddr::V4(v4())),
        Kind::Inet6(p) => (p, IpAddr::V6(v6())),
        Kind::Mapped(p) => (p, IpAddr::V6(v4().to_ipv6_mapped())),
    };
    // A datagram is to port 53 half the time (only DNS is redirected); else any port.
    let dport = if proto == Proto::Udp && bits & 0x08 != 0 {
        DNS_PORT
    } else {
        pools
            .ports
            .get(port_i.index(pools.ports.len() + 1))
            .copied()
            .unwrap_or((*rand_port).max(1))
    };
    // DNS to port 53 goes to one of the configured servers of its family half the time (most
    // pool addresses are no server).
    let daddr = match (daddr, bits & 0x04 != 0 && dport == DNS_PORT) {
        (IpAddr::V6(d), true) if kind == Kind::Mapped(proto) => {
            let servers: Vec<Ipv4Addr> = pools
                .servers
                .iter()
                .filter_map(|s| match s {
                    IpAddr::V4(a) => Some(*a),
                    IpAddr::V6(_) => None,
                })
                .collect();
            servers
                .get(addr_i.index(servers.len().max(1)))
                .map_or(IpAddr::V6(d), |s| IpAddr::V6(s.to_ipv6_mapped()))
        }
        (d, true) => {
            let family: Vec<IpAddr> = pools
                .servers
                .iter()
                .copied()
                .filter(|s| s.is_ipv4() == d.is_ipv4())
                .collect();
            family
                .get(addr_i.index(family.len().max(1)))
                .copied()
                .unwrap_or(d)
        }
        (d, false) => d,
    };
    let bind = bits % 4 == 0;
    let bound = match kind {
        // Bound to 127.0.0.6 (the proxy's passthrough) only where that source can go: over lo
        // (the kernel refuses a 127.0.0.0/8 source on another route, EINVAL).
        Kind::Inet(_) | Kind::Mapped(_) => {
            let d = match daddr {
                IpAddr::V4(d) => d,
                IpAddr::V6(d) => d.to_ipv4_mapped().unwrap_or(Ipv4Addr::BROADCAST),
            };
            let over_lo = d.is_unspecified() || d.is_loopback() || pod.own.contains(&d);
            (bind && over_lo).then_some(match kind {
                Kind::Mapped(_) => IpAddr::V6(PASSTHROUGH.to_ipv6_mapped()),
                _ => IpAddr::V4(PASSTHROUGH),
            })
        }
        // Bound to ::6 where the pod has it, whatever the destination: IPv6 lets that source
        // leave by eth0 (checked: a socket bound to ::6 on lo connects to fd00::2 via a veth,
        // EINPROGRESS, where 127.0.0.1 -> 10.9.0.2 is EINVAL).
        Kind::Inet6(_) => {
            (bind && pod.own6.contains(&PASSTHROUGH6)).then_some(IpAddr::V6(PASSTHROUGH6))
        }
    };
    // Three times in four an app's ids (root or 1000, neither generated as a proxy id more
    // often than any other), else any id the configuration names.
    let app = |i: &Index, b: u8| {
        if b != 0 {
            [0, 1000][i.index(2)]
        } else {
            *i.get(&pools.ids)
        }
    };
    Connect {
        proto,
        uid: app(uid_i, bits & 0x30),
        gid: app(gid_i, bits & 0xc0),
        daddr,
        dport,
        bound,
    }
}
