//! The pod a connection is made in, the packet the kernel routes for it (what nf_tables sees),
//! and what became of it on either side.

use super::mirror::{Connect, Proto};
use nftmesh_model::config::{CaptureConfig, DNS_CAPTURE_PORT};
use nftmesh_model::expr::L4Proto;
use nftmesh_model::{eval, Hook, Packet, Ruleset};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The pod's source on `eth0` when it has no address of its own in the generated world (only
/// `ip saddr 127.0.0.6` looks at the source, so any non-loopback address does).
const ETH0_SOURCE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The same for IPv6 (only `ip6 saddr ::6` looks at the source).
const ETH0_SOURCE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

/// The pod the connection is made in: its own (non-loopback) addresses, reached over `lo`.
/// `::6` among the IPv6 ones is the passthrough address on `lo` (nftmesh adds it with IPv6 on);
/// a socket can bind it only when the pod has it.
#[derive(Debug, Clone)]
pub struct Pod {
    pub own: Vec<Ipv4Addr>,
    pub own6: Vec<Ipv6Addr>,
}

impl Pod {
    /// Whether `a` is one of the pod's own addresses.
    pub fn owns(&self, a: IpAddr) -> bool {
        match a {
            IpAddr::V4(a) => self.own.contains(&a),
            IpAddr::V6(a) => self.own6.contains(&a),
        }
    }
}

/// The first packet of the connection (or the datagram), as the kernel routes it and nf_tables
/// sees it: IPv4 for an IPv4 socket and for a dual-stack socket's IPv4-mapped destination,
/// IPv6 otherwise.
pub fn packet(pod: &Pod, c: &Connect) -> Packet {
    let mapped = |a: Ipv6Addr| a.to_ipv4_mapped();
    let bound4 = match c.bound {
        Some(IpAddr::V4(a)) => Some(a),
        Some(IpAddr::V6(a)) => mapped(a),
        None => None,
    };
    let (saddr, daddr, oif) = match c.daddr {
        IpAddr::V4(d) => route4(pod, d, bound4),
        IpAddr::V6(d) => match mapped(d) {
            Some(d) => route4(pod, d, bound4),
            None => {
                let bound6 = match c.bound {
                    Some(IpAddr::V6(a)) => Some(a),
                    _ => None,
                };
                route6(pod, d, bound6)
            }
        },
    };
    let mut p = Packet::local_tcp(c.uid, c.gid, saddr, daddr, c.dport, oif);
    if c.proto == Proto::Udp {
        p.l4proto = L4Proto::Udp;
    }
    p
}

/// IPv4 routing: a connect to 0.0.0.0 goes to the source, or to 127.0.0.1
/// (`ip_route_output`); `lo` for loopback and the pod's own addresses.
fn route4(pod: &Pod, d: Ipv4Addr, bound: Option<Ipv4Addr>) -> (IpAddr, IpAddr, &'static str) {
    let daddr = if d.is_unspecified() {
        bound.unwrap_or(Ipv4Addr::LOCALHOST)
    } else {
        d
    };
    let over_lo = daddr.is_loopback() || pod.own.contains(&daddr);
    let saddr = bound.unwrap_or(if daddr.is_loopback() {
        // `local 127.0.0.0/8 dev lo src 127.0.0.1`.
        Ipv4Addr::LOCALHOST
    } else if over_lo {
        daddr
    } else {
        pod.own.first().copied().unwrap_or(ETH0_SOURCE)
    });
    let oif = if over_lo { "lo" } else { "eth0" };
    (saddr.into(), daddr.into(), oif)
}

/// IPv6 routing: a connect or sendto to `::` goes to `::1` (tcp_v6_connect, udpv6_sendmsg:
/// "`::` means loopback"); `lo` for `::1` and the pod's own addresses (the source then is the
/// destination itself); a socket bound to `::6` keeps it as source on any route (IPv6 has no
/// rule against a loopback-interface source leaving by `eth0`, unlike 127.0.0.0/8).
fn route6(pod: &Pod, d: Ipv6Addr, bound: Option<Ipv6Addr>) -> (IpAddr, IpAddr, &'static str) {
    let daddr = if d.is_unspecified() {
        Ipv6Addr::LOCALHOST
    } else {
        d
    };
    let over_lo = daddr.is_loopback() || pod.own6.contains(&daddr);
    let saddr = bound.unwrap_or(if over_lo {
        daddr
    } else {
        pod.own6
            .iter()
            .copied()
            .find(|a| *a != super::mirror::PASSTHROUGH6)
            .unwrap_or(ETH0_SOURCE6)
    });
    let oif = if over_lo { "lo" } else { "eth0" };
    (saddr.into(), daddr.into(), oif)
}

/// What became of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fate {
    /// Redirected to the proxy's outbound port.
    Proxy,
    /// Redirected to the DNS capture port.
    Dns,
    /// Redirected to the inbound capture port (nf_tables only).
    Inbound,
    /// Let through to its destination.
    Through,
}

/// The fate of a redirect to `port` (or none): the same reading for both sides, so a proxy
/// port that happens to be 15053 is the proxy's on both.
pub fn fate(cfg: &CaptureConfig, port: Option<u16>) -> Fate {
    match port {
        None => Fate::Through,
        Some(p) if p == cfg.proxy_port => Fate::Proxy,
        Some(DNS_CAPTURE_PORT) => Fate::Dns,
        Some(p) if p == cfg.inbound_capture_port => Fate::Inbound,
        Some(p) => panic!("redirect to {p}, neither proxy, DNS nor inbound port"),
    }
}

/// The evaluator's answer for `p` at the output hook.
pub fn nft_fate(cfg: &CaptureConfig, ruleset: &Ruleset, p: &Packet) -> Fate {
    let outcome = eval(ruleset, p, Hook::Output).expect("the compiled ruleset evaluates");
    fate(cfg, outcome.redirect)
}
