//! `CaptureConfig` reduced to what the BPF programs decide with: the outbound settings, checked,
//! as sets. Settings this backend cannot apply exactly are refused here, before anything is
//! loaded.

use crate::error::EbpfError;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nftmesh_model::config::{
    CaptureConfig, CidrSelection, GroupRef, OwnerGroups, DNS_CAPTURE_PORT,
};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Which destinations are captured after the exclusions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Include {
    /// Every destination (`-i '*'`).
    All,
    /// These prefixes only (possibly none), per family.
    Cidrs(Vec<Ipv4Net>, Vec<Ipv6Net>),
}

/// Which owner groups are captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owners {
    /// Every group.
    All,
    /// Only these gids.
    Include(BTreeSet<u32>),
    /// Every gid but these.
    Exclude(BTreeSet<u32>),
}

/// Which DNS traffic (UDP and TCP to port 53) goes to the DNS capture port, as the nf_tables
/// capture's `istio-output-dns` chain decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dns {
    /// DNS capture is not in effect.
    Off,
    /// Port 53 of these servers, per family (IPv6 ones only with IPv6 capture on).
    Servers(BTreeSet<Ipv4Addr>, BTreeSet<Ipv6Addr>),
    /// Port 53 of every address (`capture_all`).
    All,
}

/// The outbound capture as `bpf/capture.c` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub proxy_port: u16,
    pub proxy_uids: BTreeSet<u32>,
    pub proxy_gids: BTreeSet<u32>,
    pub ports_exclude: BTreeSet<u16>,
    pub ports_include: BTreeSet<u16>,
    pub include: Include,
    pub cidrs_exclude: Vec<Ipv4Net>,
    pub cidrs6_exclude: Vec<Ipv6Net>,
    pub owners: Owners,
    /// Native IPv6 connects are captured too (to `[::1]:proxy_port`); IPv4-mapped ones always
    /// are, as IPv4.
    pub ipv6: bool,
    /// An included CIDR is a loopback address: loopback traffic is not let through wholesale
    /// (Istio's `HasLoopBackIP`).
    pub loopback_included: bool,
    pub host_loopback: Ipv4Net,
    /// DNS capture, to [`Settings::dns_port`].
    pub dns: Dns,
    /// The DNS agent's port (Istio's 15053).
    pub dns_port: u16,
    /// The network namespace cookie the capture applies in; 0: every namespace.
    pub netns_cookie: u64,
}

impl Settings {
    /// Check `cfg` and keep its outbound settings. The inbound settings (ports, mode, tunnel
    /// port) are not this backend's: inbound stays with nf_tables for now.
    pub(crate) fn from_config(cfg: &CaptureConfig) -> Result<Self, EbpfError> {
        cfg.validate()?;
        refuse_unsupported(cfg)?;
        let include = match &cfg.outbound_cidrs_include {
            CidrSelection::All => Include::All,
            CidrSelection::Cidrs(c) => Include::Cidrs(v4(c), v6(c)),
        };
        // Whether an included CIDR's address, as configured (not its network: `127.1.2.3/4` counts,
        // as Istio's `HasLoopBackIP` and the nf_tables compiler ask), is a loopback address.
        let loopback_included = match &include {
            Include::All => false,
            Include::Cidrs(..) => included(cfg).any(|n| n.addr().is_loopback()),
        };
        let owners = match &cfg.owner_groups {
            OwnerGroups::All => Owners::All,
            OwnerGroups::Include(g) => Owners::Include(gids(g)?),
            OwnerGroups::Exclude(g) => Owners::Exclude(gids(g)?),
        };
        Ok(Settings {
            proxy_port: cfg.proxy_port,
            proxy_uids: cfg.proxy_uids.iter().copied().collect(),
            proxy_gids: cfg.proxy_gids.iter().copied().collect(),
            ports_exclude: cfg.outbound_ports_exclude.iter().copied().collect(),
            ports_include: cfg.outbound_ports_include.iter().copied().collect(),
            include,
            cidrs_exclude: v4(&cfg.outbound_cidrs_exclude),
            cidrs6_exclude: v6(&cfg.outbound_cidrs_exclude),
            owners,
            ipv6: cfg.ipv6,
            loopback_included,
            host_loopback: cfg.host_ipv4_loopback_cidr,
            dns: dns(cfg),
            dns_port: DNS_CAPTURE_PORT,
            netns_cookie: 0,
        })
    }
}

/// The DNS capture in effect (Istio turns it off without servers or capture-all). With IPv6 off
/// `validate` has refused IPv6 servers.
fn dns(cfg: &CaptureConfig) -> Dns {
    if !cfg.dns_in_effect() {
        return Dns::Off;
    }
    if cfg.dns.capture_all {
        return Dns::All;
    }
    let (mut v4, mut v6) = (BTreeSet::new(), BTreeSet::new());
    for s in &cfg.dns.servers {
        match s {
            IpAddr::V4(a) => v4.insert(*a),
            IpAddr::V6(a) => v6.insert(*a),
        };
    }
    Dns::Servers(v4, v6)
}

/// Refuse what the programs do not implement yet, rather than capture differently from
/// nf_tables.
fn refuse_unsupported(cfg: &CaptureConfig) -> Result<(), EbpfError> {
    let refuse = |setting, reason| Err(EbpfError::Unsupported { setting, reason });
    if !cfg.exclude_interfaces.is_empty() {
        return refuse(
            "exclude_interfaces",
            "the output interface is not known at connect()",
        );
    }
    if !cfg.reroute_virtual_interfaces.is_empty() {
        return refuse(
            "reroute_virtual_interfaces",
            "traffic arriving on an interface is no socket of the pod's cgroup",
        );
    }
    Ok(())
}

/// The IPv4 prefixes of `nets` (with IPv6 off, `validate` has refused IPv6 ones), normalised to
/// their network address.
fn v4(nets: &[IpNet]) -> Vec<Ipv4Net> {
    nets.iter()
        .filter_map(|n| match n {
            IpNet::V4(n) => Some(n.trunc()),
            IpNet::V6(_) => None,
        })
        .collect()
}

/// The IPv6 prefixes of `nets` (with IPv6 off, `validate` has refused them), normalised to
/// their network address.
fn v6(nets: &[IpNet]) -> Vec<Ipv6Net> {
    nets.iter()
        .filter_map(|n| match n {
            IpNet::V6(n) => Some(n.trunc()),
            IpNet::V4(_) => None,
        })
        .collect()
}

/// The configured included prefixes, as written (none with `*`).
fn included(cfg: &CaptureConfig) -> impl Iterator<Item = &IpNet> {
    let nets = match &cfg.outbound_cidrs_include {
        CidrSelection::All => &[][..],
        CidrSelection::Cidrs(c) => c.as_slice(),
    };
    nets.iter()
}

fn gids(groups: &[GroupRef]) -> Result<BTreeSet<u32>, EbpfError> {
    groups
        .iter()
        .map(|g| match g {
            GroupRef::Id(id) => Ok(*id),
            GroupRef::Name(name) => Err(EbpfError::UnresolvedGroup { name: name.clone() }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftmesh_model::config::DnsCapture;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn sidecar_defaults() {
        let s = Settings::from_config(&CaptureConfig::sidecar()).unwrap();
        assert_eq!(s.proxy_port, 15001);
        assert_eq!(s.proxy_uids, BTreeSet::from([1337]));
        assert_eq!(s.proxy_gids, BTreeSet::from([1337]));
        assert_eq!(s.include, Include::All);
        assert_eq!(s.owners, Owners::All);
        assert!(!s.loopback_included);
        assert_eq!(s.host_loopback, "127.0.0.1/32".parse::<Ipv4Net>().unwrap());
    }

    #[test]
    fn lists_and_prefixes() {
        let cfg = CaptureConfig {
            outbound_ports_exclude: vec![22, 22, 9000],
            outbound_ports_include: vec![443],
            outbound_cidrs_include: CidrSelection::Cidrs(vec![
                net("10.1.2.3/16"),
                net("127.0.0.5/32"),
            ]),
            outbound_cidrs_exclude: vec![net("10.1.9.0/24")],
            owner_groups: OwnerGroups::Exclude(vec![GroupRef::Id(7)]),
            ..CaptureConfig::default()
        };
        let s = Settings::from_config(&cfg).unwrap();
        assert_eq!(s.ports_exclude, BTreeSet::from([22, 9000]));
        assert_eq!(s.ports_include, BTreeSet::from([443]));
        assert_eq!(
            s.include,
            Include::Cidrs(
                vec![
                    "10.1.0.0/16".parse().unwrap(),
                    "127.0.0.5/32".parse().unwrap()
                ],
                vec![]
            )
        );
        assert!(s.loopback_included);
        assert_eq!(
            s.cidrs_exclude,
            vec!["10.1.9.0/24".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(s.owners, Owners::Exclude(BTreeSet::from([7])));
    }

    #[test]
    fn an_included_prefix_counts_as_loopback_by_its_address_as_written() {
        // As Istio's HasLoopBackIP and the nf_tables compiler: 127.1.2.3/4's network is
        // 112.0.0.0, its address is loopback.
        let cfg = CaptureConfig {
            outbound_cidrs_include: CidrSelection::Cidrs(vec!["127.1.2.3/4".parse().unwrap()]),
            ..CaptureConfig::sidecar()
        };
        let s = Settings::from_config(&cfg).unwrap();
        assert!(s.loopback_included);
        assert_eq!(
            s.include,
            Include::Cidrs(vec!["112.0.0.0/4".parse().unwrap()], vec![])
        );
    }

    #[test]
    fn refusals_name_the_setting() {
        let cases: Vec<(CaptureConfig, &str)> = vec![
            (
                CaptureConfig {
                    exclude_interfaces: vec!["eth1".into()],
                    ..CaptureConfig::default()
                },
                "exclude_interfaces",
            ),
            (
                CaptureConfig {
                    reroute_virtual_interfaces: vec!["tun0".into()],
                    ..CaptureConfig::default()
                },
                "reroute_virtual_interfaces",
            ),
        ];
        for (cfg, field) in cases {
            match Settings::from_config(&cfg) {
                Err(EbpfError::Unsupported { setting, .. }) => assert_eq!(setting, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn dns_as_in_effect() {
        let with = |enabled, capture_all, servers: &[&str]| {
            let cfg = CaptureConfig {
                ipv6: true,
                dns: DnsCapture {
                    enabled,
                    capture_all,
                    servers: servers.iter().map(|s| s.parse().unwrap()).collect(),
                },
                ..CaptureConfig::sidecar()
            };
            Settings::from_config(&cfg).unwrap()
        };
        assert_eq!(with(false, true, &["10.96.0.10"]).dns, Dns::Off);
        // On without servers or capture-all: Istio turns it off.
        assert_eq!(with(true, false, &[]).dns, Dns::Off);
        assert_eq!(with(true, true, &["10.96.0.10"]).dns, Dns::All);
        let s = with(true, false, &["10.96.0.10", "127.0.0.53", "fd00:10::a"]);
        assert_eq!(
            s.dns,
            Dns::Servers(
                BTreeSet::from([Ipv4Addr::new(10, 96, 0, 10), Ipv4Addr::new(127, 0, 0, 53)]),
                BTreeSet::from([Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0xa)])
            )
        );
        assert_eq!(s.dns_port, 15053);
    }

    #[test]
    fn ipv6_prefixes_per_family() {
        let cfg = CaptureConfig {
            ipv6: true,
            outbound_cidrs_include: CidrSelection::Cidrs(vec![
                net("10.0.0.0/8"),
                net("fd00:1::5/64"),
                net("::1/128"),
            ]),
            outbound_cidrs_exclude: vec![net("fd00:2::/48"), net("10.9.0.0/16")],
            ..CaptureConfig::default()
        };
        let s = Settings::from_config(&cfg).unwrap();
        assert!(s.ipv6);
        assert_eq!(
            s.include,
            Include::Cidrs(
                vec!["10.0.0.0/8".parse().unwrap()],
                vec!["fd00:1::/64".parse().unwrap(), "::1/128".parse().unwrap()]
            )
        );
        assert_eq!(
            s.cidrs6_exclude,
            vec!["fd00:2::/48".parse::<Ipv6Net>().unwrap()]
        );
        assert_eq!(
            s.cidrs_exclude,
            vec!["10.9.0.0/16".parse::<Ipv4Net>().unwrap()]
        );
        // ::1 is included: loopback is not let through wholesale.
        assert!(s.loopback_included);
    }

    #[test]
    fn invalid_and_unresolved() {
        let bad = CaptureConfig {
            proxy_uids: vec![],
            ..CaptureConfig::default()
        };
        assert!(matches!(
            Settings::from_config(&bad),
            Err(EbpfError::Config(_))
        ));
        let named = CaptureConfig {
            owner_groups: OwnerGroups::Include(vec![GroupRef::Name("mesh".into())]),
            ..CaptureConfig::default()
        };
        assert!(matches!(
            Settings::from_config(&named),
            Err(EbpfError::UnresolvedGroup { name }) if name == "mesh"
        ));
    }
}
