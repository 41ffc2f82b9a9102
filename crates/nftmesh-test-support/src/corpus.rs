//! The packet corpus for equivalence checks: systematic boundary packets built from the values a
//! ruleset mentions (its ports, CIDR edges, interfaces) plus Istio's well-known ones, and
//! seeded random packets.

use ipnet::IpNet;
use nftmesh_iptables::{IptMatch, IptRuleset};
use nftmesh_model::expr::{CtStates, IpVersion, L4Proto};
use nftmesh_model::{Hook, Packet};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Ports every corpus tries.
pub const PORTS: [u16; 14] = [
    0, 22, 53, 80, 8080, 15001, 15006, 15008, 15020, 15021, 15053, 15090, 40000, 65535,
];

/// The values a corpus varies.
pub struct Dims {
    pub addrs: Vec<IpAddr>,
    pub ports: Vec<u16>,
    pub ifaces: Vec<String>,
    pub ids: Vec<u32>,
    pub marks: Vec<u32>,
}

fn edges(net: &IpNet) -> Vec<IpAddr> {
    let (lo, hi) = (net.network(), net.broadcast());
    // One address further down or up, in the prefix's own version.
    let step = |a: IpAddr, up: bool| -> Option<IpAddr> {
        let (n, max) = match a {
            IpAddr::V4(x) => (u128::from(u32::from(x)), u128::from(u32::MAX)),
            IpAddr::V6(x) => (u128::from(x), u128::MAX),
        };
        let n = if up {
            n.checked_add(1).filter(|n| *n <= max)?
        } else {
            n.checked_sub(1)?
        };
        Some(match a {
            IpAddr::V4(_) => IpAddr::V4(u32::try_from(n).ok()?.into()),
            IpAddr::V6(_) => IpAddr::V6(n.into()),
        })
    };
    [Some(lo), Some(hi), step(lo, false), step(hi, true)]
        .into_iter()
        .flatten()
        .collect()
}

/// Dimensions from the rulesets' own values plus the fixed ones.
pub fn dims(parts: &[IptRuleset], extra_ids: &[u32]) -> Dims {
    let mut addrs: BTreeSet<IpAddr> = [
        "127.0.0.1",
        "127.0.0.6",
        "127.0.0.7",
        "127.0.0.53",
        "10.0.0.5",
        "10.1.2.3",
        "8.8.8.8",
        "::1",
        "::6",
        "::7",
        "2001:db8::5",
        "fd00::1",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let mut ports: BTreeSet<u16> = PORTS.into_iter().collect();
    let mut ifaces: BTreeSet<String> = ["lo", "eth0", ""].iter().map(|s| s.to_string()).collect();
    let mut ids: BTreeSet<u32> = [0, 1000, 1337, 1338]
        .into_iter()
        .chain(extra_ids.iter().copied())
        .collect();
    let mut marks: BTreeSet<u32> = [0, 1337, 1338].into_iter().collect();
    for m in parts
        .iter()
        .flat_map(|p| &p.tables)
        .flat_map(|t| &t.chains)
        .flat_map(|c| &c.rules)
        .flat_map(|r| &r.matches)
    {
        match &m.node {
            IptMatch::Addr { net, .. } => addrs.extend(edges(net)),
            IptMatch::Port { ports: ps, .. } => {
                for r in ps {
                    for p in [r.first, r.last] {
                        ports.insert(p);
                        ports.insert(p.saturating_add(1));
                        ports.insert(p.saturating_sub(1));
                    }
                }
            }
            IptMatch::Interface { name, .. } => {
                ifaces.insert(name.trim_end_matches('+').to_string());
            }
            IptMatch::Owner { owner, .. } => {
                if let nftmesh_model::expr::Owner::Id(x) = owner {
                    ids.insert(*x);
                }
                if let nftmesh_model::expr::Owner::Range(a, b) = owner {
                    ids.extend([*a, *b, b.saturating_add(1)]);
                }
            }
            IptMatch::Mark { value, .. } | IptMatch::Connmark { value, .. } => {
                marks.insert(*value);
            }
            _ => {}
        }
    }
    Dims {
        addrs: addrs.into_iter().collect(),
        ports: ports.into_iter().collect(),
        ifaces: ifaces.into_iter().collect(),
        ids: ids.into_iter().collect(),
        marks: marks.into_iter().collect(),
    }
}

/// Whether packets at this hook come from a local socket.
pub fn local(hook: Hook) -> bool {
    matches!(hook, Hook::Output | Hook::Postrouting)
}

const STATES: [CtStates; 4] = [
    CtStates::NEW,
    CtStates::ESTABLISHED,
    CtStates::RELATED,
    CtStates::INVALID,
];
const PROTOS: [L4Proto; 3] = [L4Proto::Tcp, L4Proto::Udp, L4Proto::Icmp];

/// A tiny deterministic generator (xorshift64*), so a failure names a reproducible packet.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next_u64() % xs.len() as u64) as usize]
    }
}

// Test-only constructor: one argument per packet field the corpus varies.
#[allow(clippy::too_many_arguments)]
fn packet(
    hook: Hook,
    proto: L4Proto,
    saddr: IpAddr,
    daddr: IpAddr,
    dport: u16,
    sport: u16,
    dev: &str,
    uid: u32,
    gid: u32,
) -> Packet {
    let mut p = if local(hook) {
        Packet::local_tcp(uid, gid, saddr, daddr, dport, dev)
    } else {
        Packet::incoming_tcp(saddr, daddr, dport, dev)
    };
    if hook == Hook::Forward || hook == Hook::Postrouting {
        // Routed packets have both devices.
        if local(hook) {
            p.iif = String::new();
        } else {
            p.oif = "eth0".into();
        }
    }
    p.l4proto = proto;
    p.sport = sport;
    p
}

/// The systematic packets for one IP version at one hook: every destination address × port ×
/// protocol with a few sources and devices, then each remaining dimension (uid, gid, mark,
/// ct mark, ct state, transparent socket, source port, device) varied on its own.
pub fn systematic(d: &Dims, version: IpVersion, hook: Hook) -> Vec<Packet> {
    let addrs: Vec<IpAddr> = d
        .addrs
        .iter()
        .copied()
        .filter(|a| IpVersion::of(*a) == version)
        .collect();
    let base_src = if version == IpVersion::V4 {
        "10.0.0.5"
    } else {
        "2001:db8::5"
    };
    let base_src: IpAddr = base_src.parse().unwrap();
    let mut out = Vec::new();
    for &daddr in &addrs {
        for &dport in &d.ports {
            for proto in PROTOS {
                for dev in ["lo", "eth0"] {
                    for uid in [1000, 1337] {
                        out.push(packet(
                            hook, proto, base_src, daddr, dport, 40000, dev, uid, uid,
                        ));
                    }
                }
            }
        }
    }
    let probe: IpAddr = if version == IpVersion::V4 {
        "10.1.2.3"
    } else {
        "fd00::1"
    }
    .parse()
    .unwrap();
    for &saddr in &addrs {
        for dev in &d.ifaces {
            for dport in [53, 8080, 15008] {
                for proto in [L4Proto::Tcp, L4Proto::Udp] {
                    out.push(packet(
                        hook, proto, saddr, probe, dport, 40000, dev, 1000, 1000,
                    ));
                    out.push(packet(
                        hook, proto, saddr, saddr, dport, 40000, dev, 1337, 1337,
                    ));
                }
            }
        }
    }
    for &uid in &d.ids {
        for &gid in &d.ids {
            for dport in [53, 8080] {
                for daddr in [probe, addrs[0]] {
                    for dev in ["lo", "eth0"] {
                        out.push(packet(
                            hook,
                            L4Proto::Tcp,
                            base_src,
                            daddr,
                            dport,
                            40000,
                            dev,
                            uid,
                            gid,
                        ));
                        out.push(packet(
                            hook,
                            L4Proto::Udp,
                            base_src,
                            daddr,
                            dport,
                            40000,
                            dev,
                            uid,
                            gid,
                        ));
                    }
                }
            }
        }
    }
    for &mark in &d.marks {
        for &ct_mark in &d.marks {
            for st in STATES {
                for transparent in [false, true] {
                    for dev in ["lo", "eth0"] {
                        for daddr in [probe, addrs[0]] {
                            let mut p = packet(
                                hook,
                                L4Proto::Tcp,
                                base_src,
                                daddr,
                                8080,
                                40000,
                                dev,
                                1000,
                                1000,
                            );
                            p.mark = mark;
                            p.ct_mark = ct_mark;
                            p.ct_state = st;
                            p.socket_transparent = transparent;
                            out.push(p);
                        }
                    }
                }
            }
        }
    }
    for &sport in &d.ports {
        for proto in [L4Proto::Tcp, L4Proto::Udp] {
            for uid in [1000, 1337] {
                out.push(packet(
                    hook, proto, base_src, probe, 53, sport, "eth0", uid, uid,
                ));
            }
        }
    }
    out
}

/// What an equivalence test runs: for each IP version and hook, every [`systematic`] packet
/// and 1 000 [`random`] ones (from `seed` xor the number of packets before them).
pub fn every_packet(d: &Dims, seed: u64) -> Vec<(Hook, Packet)> {
    let mut out = Vec::new();
    for version in [IpVersion::V4, IpVersion::V6] {
        for hook in Hook::ALL {
            let mut pkts = systematic(d, version, hook);
            pkts.extend(random(d, version, hook, 1000, seed ^ out.len() as u64));
            out.extend(pkts.into_iter().map(|p| (hook, p)));
        }
    }
    out
}

/// `n` random packets over the dimensions (any value of each, independently).
pub fn random(d: &Dims, version: IpVersion, hook: Hook, n: usize, seed: u64) -> Vec<Packet> {
    let addrs: Vec<IpAddr> = d
        .addrs
        .iter()
        .copied()
        .filter(|a| IpVersion::of(*a) == version)
        .collect();
    let mut rng = Rng(seed | 1);
    (0..n)
        .map(|_| {
            let proto = *rng.pick(&PROTOS);
            let dev = rng.pick(&d.ifaces).clone();
            let mut p = packet(
                hook,
                proto,
                *rng.pick(&addrs),
                *rng.pick(&addrs),
                *rng.pick(&d.ports),
                *rng.pick(&d.ports),
                &dev,
                *rng.pick(&d.ids),
                *rng.pick(&d.ids),
            );
            p.mark = *rng.pick(&d.marks);
            p.ct_mark = *rng.pick(&d.marks);
            p.ct_state = *rng.pick(&STATES);
            p.socket_transparent = rng.next_u64() & 1 == 0;
            p
        })
        .collect()
}
