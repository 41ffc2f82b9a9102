//! Generated configurations and pods: values near the edges the decision turns on (loopback and
//! the passthrough addresses, short and long prefixes, ids and ports Istio uses, DNS servers on
//! loopback and off it, of both families).

use super::mirror::PASSTHROUGH6;
use super::world::Pod;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nftmesh_model::config::{CaptureConfig, CidrSelection, DnsCapture, GroupRef, OwnerGroups};
use nftmesh_model::InterceptionMode;
use proptest::prelude::*;
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
        // As written, not truncated: the programs keep its network and mask.
        Just((Ipv4Addr::LOCALHOST, 8)),
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
