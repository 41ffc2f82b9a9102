//! Generated connections: for one configuration and pod, pools of the destinations, ports and
//! ids the decision turns on (the prefixes' first and last addresses and their neighbours,
//! loopback, the passthrough sources, the DNS servers, the configured ports and ids), and a
//! connection drawn from them by a [`Pick`].

use super::mirror::{Connect, Proto, DNS_PORT, PASSTHROUGH, PASSTHROUGH6};
use super::world::Pod;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nftmesh_model::config::{CaptureConfig, CidrSelection, GroupRef, OwnerGroups};
use proptest::sample::Index;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
