//! The `istio-output` chain: what is let through (excluded ports, the inbound passthrough
//! source, the proxy itself, excluded owner groups, loopback, excluded CIDRs) and what is
//! redirected to the proxy (included ports and CIDRs).

use super::parts::{
    addr, counter, daddr, dedup, dport, enabled, iif, jump, loopbacks, nets, oif, port, ret, rule,
    saddr, skgid, skuid, tcp, v4_inbound_passthrough, v6_inbound_passthrough, v6_loopback,
    DNS_PORT,
};
use crate::compile::builder::{chain_names::*, Builder, NAT_TABLE};
use crate::config::{CaptureConfig, CidrSelection, GroupRef, OwnerGroups};
use crate::expr::{Direction, IpVersion, L4Proto, Match, Owner, Values};
use ipnet::IpNet;

/// `nat` output jumps to `istio-output`, which first lets through the excluded outbound ports
/// and the inbound passthrough source over `lo`.
pub(super) fn output_start(cfg: &CaptureConfig, b: &mut Builder) {
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
    let mut passthrough = vec![v4_inbound_passthrough()];
    if cfg.ipv6 {
        passthrough.push(v6_inbound_passthrough());
    }
    for source in passthrough {
        b.append(
            NAT_TABLE,
            OUTPUT_CHAIN,
            rule(vec![oif("lo"), saddr(source)], vec![counter(), ret()]),
        );
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
pub(super) fn proxy_owners(cfg: &CaptureConfig, b: &mut Builder, dns: bool, host_lo: IpNet) {
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
        for (_, lo) in loopbacks(cfg, host_lo) {
            let to_pod = vec![
                oif("lo"),
                tcp(),
                daddr(true, lo),
                dport(L4Proto::Tcp, true, &skip_ports),
                owner(false),
            ];
            b.append(
                NAT_TABLE,
                OUTPUT_CHAIN,
                rule(to_pod, vec![counter(), jump(IN_REDIRECT)]),
            );
        }
        if !loopback_included {
            b.append(
                NAT_TABLE,
                OUTPUT_CHAIN,
                rule(others_on_lo(dns, owner(true)), vec![counter(), ret()]),
            );
        }
        b.append(
            NAT_TABLE,
            OUTPUT_CHAIN,
            rule(vec![owner(false)], vec![counter(), ret()]),
        );
    }
}

/// Traffic over `lo` of every other owner (`not_owner`), but DNS when it is captured.
fn others_on_lo(dns: bool, not_owner: Match) -> Vec<Match> {
    if dns {
        vec![
            oif("lo"),
            tcp(),
            dport(L4Proto::Tcp, true, &[DNS_PORT]),
            not_owner,
        ]
    } else {
        vec![oif("lo"), not_owner]
    }
}

/// The owner a group reference names.
fn group_owner(g: &GroupRef) -> Owner {
    match g {
        GroupRef::Id(id) => Owner::Id(*id),
        GroupRef::Name(n) => Owner::Name(n.clone()),
    }
}

/// Let through the traffic of excluded groups (or of all but the included ones).
pub(super) fn owner_groups(cfg: &CaptureConfig, b: &mut Builder) {
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

/// Let through traffic to the host's loopback and to the excluded CIDRs.
pub(super) fn excludes(cfg: &CaptureConfig, b: &mut Builder, host_lo: IpNet) {
    let mut loopback = vec![host_lo];
    if cfg.ipv6 {
        loopback.push(v6_loopback());
    }
    for lo in loopback {
        b.append(
            NAT_TABLE,
            OUTPUT_CHAIN,
            rule(vec![daddr(false, lo)], vec![counter(), ret()]),
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
}

/// Redirect the included outbound TCP ports to the proxy.
pub(super) fn ports_include(cfg: &CaptureConfig, b: &mut Builder) {
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
}

/// Redirect the included outbound CIDRs (or everything) to the proxy, from local sockets and
/// from the rerouted virtual interfaces.
pub(super) fn cidrs_include(cfg: &CaptureConfig, b: &mut Builder) {
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
