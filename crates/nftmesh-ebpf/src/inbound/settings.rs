//! `CaptureConfig` reduced to what `bpf/inbound.c` decides with: which destination ports are
//! steered to the inbound listener (as nf_tables' `istio-inbound` chain decides), the listener's
//! port and owners; the settings sk_lookup cannot apply exactly are refused here. Also the
//! Rust twins of `bpf/inbound.h` and writing the settings into the programs' maps.

use crate::error::EbpfError;
use aya::maps::{Array, HashMap, Map, MapData};
use aya::{Ebpf, Pod};
use ipnet::Ipv4Net;
use nftmesh_model::config::{CaptureConfig, CidrSelection, InterceptionMode, PortSelection};
use std::collections::BTreeSet;

/// `INBOUND_MAX_OWNERS` of `bpf/inbound.h`: proxy uids and gids the self-call rule checks.
pub(crate) const MAX_OWNERS: usize = 16;

/// `INBOUND_PORT_WORDS` of `bpf/inbound.h`: 1024 × 64 bits, one per port.
pub(crate) const PORT_WORDS: usize = 1024;

/// The inbound capture as `bpf/inbound.c` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InboundSettings {
    /// The proxy's inbound capture port (15006).
    pub capture_port: u16,
    /// Bit `p % 64` of word `p / 64`: TCP to port `p` is steered.
    pub ports: Vec<u64>,
    /// Whose listener on the capture port is the proxy's.
    pub proxy_uids: BTreeSet<u32>,
    pub proxy_gids: BTreeSet<u32>,
    /// What `istio-output`'s self-call rule (the proxy calling its own pod over `lo` goes to
    /// the inbound port) needs: the tunnel port, the outbound excluded ports (as a bitmap like
    /// `ports`), the owners in the chain's order (uids, then gids: `(id, is_uid)`), the host
    /// loopback range, IPv6, DNS capture in effect, an included loopback CIDR.
    pub tunnel_port: u16,
    pub out_excluded: Vec<u64>,
    pub owners: Vec<(u32, bool)>,
    pub host_loopback: Ipv4Net,
    pub ipv6: bool,
    pub dns: bool,
    pub loopback_included: bool,
    /// The pod's network namespace cookie (0: any), set when attached to one.
    pub netns_cookie: u64,
}

impl InboundSettings {
    /// Check `cfg` and keep its inbound settings.
    pub(crate) fn from_config(cfg: &CaptureConfig) -> Result<Self, EbpfError> {
        cfg.validate()?;
        refuse_unsupported(cfg)?;
        let ports = bitmap((1..=u16::MAX).filter(|p| steered(cfg, *p)));
        let owners: Vec<(u32, bool)> = cfg
            .proxy_uids
            .iter()
            .map(|u| (*u, true))
            .chain(cfg.proxy_gids.iter().map(|g| (*g, false)))
            .collect();
        if owners.len() > MAX_OWNERS {
            return Err(EbpfError::Unsupported {
                setting: "proxy_uids",
                reason: "more than 16 proxy uids and gids together (the self-call rule's owner \
                         list is a 16-entry map)",
            });
        }
        let loopback_included = match &cfg.outbound_cidrs_include {
            CidrSelection::All => false,
            // As the compiler's `includes_loopback`: the address as written.
            CidrSelection::Cidrs(c) => c.iter().any(|n| n.addr().is_loopback()),
        };
        Ok(InboundSettings {
            capture_port: cfg.inbound_capture_port,
            ports,
            proxy_uids: cfg.proxy_uids.iter().copied().collect(),
            proxy_gids: cfg.proxy_gids.iter().copied().collect(),
            tunnel_port: cfg.inbound_tunnel_port,
            out_excluded: bitmap(cfg.outbound_ports_exclude.iter().copied()),
            owners,
            host_loopback: cfg.host_ipv4_loopback_cidr,
            ipv6: cfg.ipv6,
            dns: cfg.dns_in_effect(),
            loopback_included,
            netns_cookie: 0,
        })
    }

    /// `self_call()` of `bpf/inbound.c`, line for line: whether a connect of the pod from `src`
    /// to its own address `dst` port `dport` by a thread of `uid`/`gid` goes to the inbound
    /// listener (`istio-output`'s `jump istio-in-redirect`). For the property test.
    #[cfg(test)]
    pub(crate) fn self_call(
        &self,
        uid: u32,
        gid: u32,
        src: std::net::IpAddr,
        dst: std::net::IpAddr,
        dport: u16,
    ) -> bool {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let bit = |words: &[u64], p: u16| (words[usize::from(p / 64)] >> (p % 64)) & 1 == 1;
        if bit(&self.out_excluded, dport) {
            return false;
        }
        let v4 = matches!(dst, IpAddr::V4(_));
        match src {
            IpAddr::V4(a) if a == Ipv4Addr::new(127, 0, 0, 6) => return false,
            IpAddr::V6(a) if self.ipv6 && a == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6) => {
                return false
            }
            _ => {}
        }
        let loop_dst = match dst {
            IpAddr::V4(a) => self.host_loopback.contains(&a),
            IpAddr::V6(a) => a == Ipv6Addr::LOCALHOST,
        };
        for &(id, is_uid) in &self.owners {
            let matched = if is_uid { uid == id } else { gid == id };
            if matched
                && (v4 || self.ipv6)
                && !loop_dst
                && dport != self.tunnel_port
                && !(self.dns && is_uid && self.tunnel_port != 53 && dport == 53)
            {
                return true;
            }
            // `istio-output`'s "other owners on lo" return (absent when an included CIDR is
            // a loopback address; not for port 53 with DNS capture).
            let others_on_lo = !(self.loopback_included || (self.dns && dport == 53));
            if others_on_lo && !matched {
                return false;
            }
            if matched {
                return false;
            }
        }
        false
    }

    /// Whether TCP to `port` is steered (from the bitmap).
    pub(crate) fn steers(&self, port: u16) -> bool {
        self.ports
            .get(usize::from(port / 64))
            .is_some_and(|w| (w >> (port % 64)) & 1 == 1)
    }
}

/// The 1024 × 64-bit bitmap of `ports` (`INBOUND_PORT_WORDS`).
fn bitmap(ports: impl Iterator<Item = u16>) -> Vec<u64> {
    let mut words = vec![0u64; PORT_WORDS];
    for p in ports {
        words[usize::from(p / 64)] |= 1 << (p % 64);
    }
    words
}

/// nf_tables' `istio-inbound` for TCP to `port` (compile/steps/inbound.rs): the tunnel port
/// returns first; with `*` every port but the excluded ones goes to `istio-in-redirect`, with a
/// list the listed ones do (the excluded list is not consulted then).
pub(crate) fn steered(cfg: &CaptureConfig, port: u16) -> bool {
    if port == cfg.inbound_tunnel_port {
        return false;
    }
    match &cfg.inbound_ports {
        PortSelection::All => !cfg.inbound_ports_exclude.contains(&port),
        PortSelection::Ports(list) => list.contains(&port),
    }
}

/// Refuse what sk_lookup cannot do as the nf_tables inbound chain does.
fn refuse_unsupported(cfg: &CaptureConfig) -> Result<(), EbpfError> {
    let refuse = |setting, reason| Err(EbpfError::Unsupported { setting, reason });
    if cfg.mode == InterceptionMode::Tproxy {
        return refuse(
            "mode",
            "TPROXY's marks, route table and IP_TRANSPARENT upstream connections are nf_tables' \
             (mangle table and policy routing); sk_lookup steering is REDIRECT mode that keeps \
             the original destination as the local address, as TPROXY does",
        );
    }
    if !cfg.exclude_interfaces.is_empty() {
        return refuse(
            "exclude_interfaces",
            "interfaces are named, sk_lookup sees an ifindex of the pod's namespace",
        );
    }
    if !cfg.reroute_virtual_interfaces.is_empty() {
        return refuse(
            "reroute_virtual_interfaces",
            "traffic from those interfaces goes to the outbound port, which sk_lookup steering \
             to the inbound listener cannot express",
        );
    }
    if cfg.drop_invalid {
        return refuse(
            "drop_invalid",
            "dropping conntrack-invalid packets needs conntrack, which the inbound steering \
             keeps off",
        );
    }
    Ok(())
}

/// `struct inbound_config` (index 0 of map `inbound_config`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RawInboundConfig {
    pub capture_port: u16,
    pub tunnel_port: u16,
    pub host_lo_addr: u32,
    pub host_lo_mask: u32,
    pub owners: u8,
    pub ipv6: u8,
    pub dns: u8,
    pub loopback_included: u8,
    pub netns_cookie: u64,
}

/// `struct inbound_owner`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RawOwner {
    pub id: u32,
    pub is_uid: u32,
}

/// `struct steered_key`: addresses in network order (IPv4 as IPv4-mapped), ports host order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RawSteeredKey {
    pub remote: [u8; 16],
    pub local: [u8; 16],
    pub remote_port: u16,
    pub local_port: u16,
}

const _: () = assert!(std::mem::size_of::<RawInboundConfig>() == 24);
const _: () = assert!(std::mem::size_of::<RawOwner>() == 8);
const _: () = assert!(std::mem::size_of::<RawSteeredKey>() == 36);

// SAFETY: `repr(C)` structs of integers and byte arrays with no implicit padding (sizes
// asserted above; the C twins spell their padding out), so every bit pattern is a valid value
// and their bytes can be copied to and from the kernel as they are.
unsafe impl Pod for RawInboundConfig {}
// SAFETY: as above.
unsafe impl Pod for RawSteeredKey {}
// SAFETY: as above.
unsafe impl Pod for RawOwner {}

/// The maps `bpf/inbound.c` keeps state in (pinned by an install and kept by a replace): the
/// listener sockmap, the sockets bound but not listening yet, the steered 4-tuples, the pod's
/// own connects.
pub(crate) const STATE_MAPS: [&str; 4] = [
    "inbound_listeners",
    "inbound_bound",
    "inbound_steered",
    "inbound_local",
];

fn map_mut<'a>(bpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Map, EbpfError> {
    bpf.map_mut(name)
        .ok_or(EbpfError::Missing { kind: "map", name })
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> EbpfError {
    move |source| EbpfError::Map { map, source }
}

/// Write `s` into the maps of a loaded (not yet attached) `bpf/inbound.c` object.
pub(crate) fn write(bpf: &mut Ebpf, s: &InboundSettings) -> Result<(), EbpfError> {
    for (name, ids) in [
        ("inbound_proxy_uids", &s.proxy_uids),
        ("inbound_proxy_gids", &s.proxy_gids),
    ] {
        let mut set: HashMap<&mut MapData, u32, u8> =
            HashMap::try_from(map_mut(bpf, name)?).map_err(map_err(name))?;
        for id in ids {
            set.insert(id, 1, 0).map_err(map_err(name))?;
        }
    }
    for (name, words) in [
        ("inbound_ports", &s.ports),
        ("inbound_out_excluded", &s.out_excluded),
    ] {
        let mut bits: Array<&mut MapData, u64> =
            Array::try_from(map_mut(bpf, name)?).map_err(map_err(name))?;
        for (i, w) in (0u32..).zip(words) {
            if *w != 0 {
                bits.set(i, w, 0).map_err(map_err(name))?;
            }
        }
    }
    let name = "inbound_owners";
    let mut owners: Array<&mut MapData, RawOwner> =
        Array::try_from(map_mut(bpf, name)?).map_err(map_err(name))?;
    for (i, (id, is_uid)) in (0u32..).zip(&s.owners) {
        let raw = RawOwner {
            id: *id,
            is_uid: u32::from(*is_uid),
        };
        owners.set(i, raw, 0).map_err(map_err(name))?;
    }
    let name = "inbound_config";
    let mut config: Array<&mut MapData, RawInboundConfig> =
        Array::try_from(map_mut(bpf, name)?).map_err(map_err(name))?;
    let raw = RawInboundConfig {
        capture_port: s.capture_port,
        tunnel_port: s.tunnel_port,
        host_lo_addr: u32::from_ne_bytes(s.host_loopback.network().octets()),
        host_lo_mask: u32::from_ne_bytes(s.host_loopback.netmask().octets()),
        // At most MAX_OWNERS (16), checked by `from_config`.
        owners: u8::try_from(s.owners.len()).unwrap_or(u8::MAX),
        ipv6: u8::from(s.ipv6),
        dns: u8::from(s.dns),
        loopback_included: u8::from(s.loopback_included),
        netns_cookie: s.netns_cookie,
    };
    config.set(0, raw, 0).map_err(map_err(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftmesh_model::{compile, eval, Hook, Packet};
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// A port worth generating: Istio's own, a few app ports, or any.
    fn a_port() -> impl Strategy<Value = u16> {
        prop_oneof![
            Just(15008u16),
            Just(15006),
            Just(15001),
            Just(15090),
            Just(15021),
            Just(15020),
            Just(8080),
            Just(9000),
            1u16..=u16::MAX
        ]
    }

    fn a_config() -> impl Strategy<Value = CaptureConfig> {
        let ports = prop_oneof![
            Just(PortSelection::All),
            prop::collection::vec(a_port(), 0..5).prop_map(PortSelection::Ports),
        ];
        (
            ports,
            prop::collection::vec(a_port(), 0..5),
            a_port(),
            any::<bool>(),
        )
            .prop_filter_map("a valid configuration", |(ports, excl, tunnel, ipv6)| {
                let cfg = CaptureConfig {
                    inbound_ports: ports,
                    inbound_ports_exclude: excl,
                    inbound_tunnel_port: tunnel,
                    ipv6,
                    ..CaptureConfig::sidecar()
                };
                cfg.validate().is_ok().then_some(cfg)
            })
    }

    fn an_id() -> impl Strategy<Value = u32> {
        prop_oneof![Just(1337u32), Just(0), Just(1000), Just(2000), any::<u32>()]
    }

    /// A configuration with the settings the self-call rule reads varied.
    fn a_self_call_config() -> impl Strategy<Value = CaptureConfig> {
        let include = prop_oneof![
            Just(CidrSelection::All),
            Just(CidrSelection::Cidrs(vec![])),
            Just(CidrSelection::Cidrs(vec!["10.0.0.0/8".parse().unwrap()])),
            Just(CidrSelection::Cidrs(vec!["127.0.0.5/32".parse().unwrap()])),
        ];
        let host_lo = prop_oneof![
            Just("127.0.0.1/32".parse::<Ipv4Net>().unwrap()),
            Just("127.0.0.0/8".parse::<Ipv4Net>().unwrap()),
        ];
        (
            prop::collection::vec(an_id(), 1..3),
            prop::collection::vec(an_id(), 1..3),
            prop::collection::vec(a_port(), 0..3),
            a_port(),
            any::<bool>(),
            (any::<bool>(), any::<bool>()),
            include,
            host_lo,
        )
            .prop_filter_map(
                "a valid configuration",
                |(uids, gids, excl, tunnel, ipv6, (dns, all), include, host_lo)| {
                    let mut cfg = CaptureConfig {
                        proxy_uids: uids,
                        proxy_gids: gids,
                        outbound_ports_exclude: excl,
                        inbound_tunnel_port: tunnel,
                        ipv6,
                        outbound_cidrs_include: include,
                        host_ipv4_loopback_cidr: host_lo,
                        ..CaptureConfig::sidecar()
                    };
                    cfg.dns.enabled = dns;
                    cfg.dns.capture_all = all;
                    cfg.dns.servers = vec!["10.96.0.10".parse().unwrap()];
                    cfg.validate().is_ok().then_some(cfg)
                },
            )
    }

    fn an_addr_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
        let pod: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
        let pod6: IpAddr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into();
        let v4 = prop_oneof![
            Just(pod),
            Just(IpAddr::from(Ipv4Addr::LOCALHOST)),
            Just(IpAddr::from(Ipv4Addr::new(127, 0, 0, 5))),
            Just(IpAddr::from(Ipv4Addr::new(127, 0, 0, 6))),
        ];
        let v6 = prop_oneof![
            Just(pod6),
            Just(IpAddr::from(Ipv6Addr::LOCALHOST)),
            Just(IpAddr::from(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6))),
        ];
        prop_oneof![(v4.clone(), v4), (v6.clone(), v6)]
    }

    proptest! {
        /// A connect of the pod to one of its own addresses (its packet leaves over `lo`) goes
        /// to the inbound capture port under nf_tables (`eval(compile(cfg))` at output) exactly
        /// when the self-call decision of `bpf/inbound.c` (mirrored line for line by
        /// `InboundSettings::self_call`) says so.
        #[test]
        fn self_call_agrees_with_the_nf_tables_output_chain(
            cfg in a_self_call_config(),
            (src, dst) in an_addr_pair(),
            uid in an_id(),
            gid in an_id(),
            dport in prop_oneof![Just(53u16), a_port()],
        ) {
            let settings = InboundSettings::from_config(&cfg).unwrap();
            let p = Packet::local_tcp(uid, gid, src, dst, dport, "lo");
            let outcome = eval(&compile(&cfg), &p, Hook::Output).unwrap();
            let nft = outcome.redirect == Some(cfg.inbound_capture_port);
            let ebpf = settings.self_call(uid, gid, src, dst, dport);
            prop_assert_eq!(nft, ebpf, "{:?} uid {} gid {}", p, uid, gid);
        }

        /// A TCP connection arriving from outside the pod on `eth0` goes to the inbound capture
        /// port under nf_tables (the compiled ruleset, evaluated at prerouting) exactly when the
        /// programs steer it: its port in the bitmap, IPv4 or IPv6.
        #[test]
        fn steering_agrees_with_the_nf_tables_inbound_chain(
            cfg in a_config(),
            dport in a_port(),
            v6 in any::<bool>(),
        ) {
            let settings = InboundSettings::from_config(&cfg).unwrap();
            let (saddr, daddr): (IpAddr, IpAddr) = if v6 {
                (Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).into(),
                 Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into())
            } else {
                (Ipv4Addr::new(10, 0, 0, 2).into(), Ipv4Addr::new(10, 0, 0, 1).into())
            };
            let p = Packet::incoming_tcp(saddr, daddr, dport, "eth0");
            let outcome = eval(&compile(&cfg), &p, Hook::Prerouting).unwrap();
            let nft = outcome.redirect == Some(cfg.inbound_capture_port);
            // IPv6 whatever `ipv6` says: the compiled tables are `inet`, so nf_tables REDIRECTs
            // IPv6 inbound even with IPv6 capture off (Istio's nftables generator does too).
            let ebpf = settings.steers(dport);
            prop_assert_eq!(nft, ebpf, "{:?} dport {} v6 {}", cfg.inbound_ports, dport, v6);
        }
    }

    #[test]
    fn sidecar_steers_every_port_but_the_tunnel_and_the_proxys_own() {
        let s = InboundSettings::from_config(&CaptureConfig::sidecar()).unwrap();
        assert_eq!(s.capture_port, 15006);
        for p in [15008, 15090, 15021, 15020] {
            assert!(!s.steers(p), "{p}");
        }
        for p in [1, 80, 8080, 15001, 15006, 15009, 65535] {
            assert!(s.steers(p), "{p}");
        }
        assert!(!s.steers(0));
        assert_eq!(s.proxy_uids, BTreeSet::from([1337]));
    }

    #[test]
    fn a_port_list_steers_its_ports_but_not_the_tunnel_port() {
        let cfg = CaptureConfig {
            inbound_ports: PortSelection::Ports(vec![8080, 9090, 15008]),
            inbound_ports_exclude: vec![7070],
            ..CaptureConfig::default()
        };
        let s = InboundSettings::from_config(&cfg).unwrap();
        let on: Vec<u16> = (1..=u16::MAX).filter(|p| s.steers(*p)).collect();
        // As the compile: the tunnel return comes first.
        assert_eq!(on, vec![8080, 9090]);
        let none = InboundSettings::from_config(&CaptureConfig::default()).unwrap();
        assert!(none.ports.iter().all(|w| *w == 0));
    }

    #[test]
    fn refusals_name_the_setting() {
        let cases: Vec<(CaptureConfig, &str)> = vec![
            (
                CaptureConfig {
                    mode: InterceptionMode::Tproxy,
                    ..CaptureConfig::sidecar()
                },
                "mode",
            ),
            (
                CaptureConfig {
                    exclude_interfaces: vec!["eth1".into()],
                    ..CaptureConfig::sidecar()
                },
                "exclude_interfaces",
            ),
            (
                CaptureConfig {
                    reroute_virtual_interfaces: vec!["tun0".into()],
                    ..CaptureConfig::sidecar()
                },
                "reroute_virtual_interfaces",
            ),
            (
                CaptureConfig {
                    drop_invalid: true,
                    ..CaptureConfig::sidecar()
                },
                "drop_invalid",
            ),
        ];
        for (cfg, field) in cases {
            match InboundSettings::from_config(&cfg) {
                Err(EbpfError::Unsupported { setting, .. }) => assert_eq!(setting, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let bad = CaptureConfig {
            inbound_capture_port: 0,
            ..CaptureConfig::sidecar()
        };
        assert!(matches!(
            InboundSettings::from_config(&bad),
            Err(EbpfError::Config(_))
        ));
    }
}
