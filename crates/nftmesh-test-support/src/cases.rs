//! The 28 Istio conformance cases of `tests/data/istio/sidecar/CASES.md`, as settings.

use nftmesh_model::config::{CaptureConfig, GroupNames, IstioSettings};

/// Gids the test group database gives the group names Istio's cases use.
pub const TEST_GROUPS: [(&str, u32); 2] = [("java", 50001), ("ftp", 50002)];

/// One Istio case: its name (the golden's file stem) and its settings.
pub struct Case {
    pub name: &'static str,
    pub settings: IstioSettings,
}

impl Case {
    /// The validated config, owner groups resolved through [`TEST_GROUPS`].
    pub fn config(&self) -> CaptureConfig {
        let mut cfg = self
            .settings
            .to_config()
            .unwrap_or_else(|e| panic!("case {}: {e}", self.name));
        let db = |n: &str| TEST_GROUPS.iter().find(|(g, _)| *g == n).map(|(_, id)| *id);
        cfg.resolve_groups(&db, GroupNames::Strict)
            .unwrap_or_else(|e| panic!("case {}: {e}", self.name));
        cfg
    }

    /// Whether the case names groups (its goldens need them in the group database).
    pub fn uses_group_names(&self) -> bool {
        self.name.contains("owner-groups")
    }
}

fn case(name: &'static str, f: impl FnOnce(&mut IstioSettings)) -> Case {
    let mut settings = IstioSettings {
        proxy_gid: "1337".into(),
        ..IstioSettings::default()
    };
    f(&mut settings);
    Case { name, settings }
}

/// Every case, in CASES.md order.
pub fn cases() -> Vec<Case> {
    vec![
        case("empty", |_| {}),
        case("ipv6-empty-inbound-ports", |s| s.ipv6 = true),
        case("ip-range", |s| {
            s.outbound_ip_ranges_exclude = "1.1.0.0/16".into();
            s.outbound_ip_ranges_include = "9.9.0.0/16".into();
            s.redirect_dns = true;
            s.dns_servers = "127.0.0.53".into();
            s.proxy_gid = "1,2".into();
            s.proxy_uid = "3,4".into();
        }),
        case("tproxy", |s| {
            s.inbound_interception_mode = "TPROXY".into();
            s.inbound_ports = "*".into();
            s.outbound_ip_ranges_exclude = "1.1.0.0/16".into();
            s.outbound_ip_ranges_include = "9.9.0.0/16".into();
            s.redirect_dns = true;
            s.dns_servers = "127.0.0.53".into();
            s.exclude_interfaces = "not-istio-nic".into();
            s.ipv6 = true;
        }),
        case("ipv6-inbound-ports", |s| {
            s.inbound_ports = "4000,5000".into();
            s.ipv6 = true;
        }),
        case("ipv6-virt-interfaces", |s| {
            s.inbound_ports = "4000,5000".into();
            s.kube_virt_interfaces = "eth0,eth1".into();
            s.ipv6 = true;
        }),
        case("ipv6-ipnets", |s| {
            s.inbound_ports = "4000,5000".into();
            s.inbound_ports_exclude = "6000,7000,".into();
            s.kube_virt_interfaces = "eth0,eth1".into();
            s.outbound_ip_ranges_exclude = "2001:db8::/32".into();
            s.outbound_ip_ranges_include = "2001:db8::/32".into();
            s.ipv6 = true;
        }),
        case("ipv6-uid-gid", |s| {
            s.inbound_ports = "4000,5000".into();
            s.inbound_ports_exclude = "6000,7000".into();
            s.kube_virt_interfaces = "eth0,eth1".into();
            s.proxy_gid = "1,2".into();
            s.proxy_uid = "3,4".into();
            s.outbound_ip_ranges_exclude = "2001:db8::/32".into();
            s.outbound_ip_ranges_include = "2001:db8::/32".into();
            s.ipv6 = true;
        }),
        case("ipv6-outbound-ports", |s| {
            s.outbound_ports_include = "32000,31000".into();
            s.ipv6 = true;
        }),
        case("kube-virt-interfaces", |s| {
            s.kube_virt_interfaces = "eth1,eth2".into();
            s.outbound_ip_ranges_include = "*".into();
        }),
        case("ipnets", |s| {
            s.outbound_ip_ranges_include = "10.0.0.0/8".into()
        }),
        case("ipnets-with-kube-virt-interfaces", |s| {
            s.kube_virt_interfaces = "eth1,eth2".into();
            s.outbound_ip_ranges_include = "10.0.0.0/8".into();
        }),
        case("inbound-ports-include", |s| {
            s.inbound_ports = "32000,31000".into()
        }),
        case("inbound-ports-wildcard", |s| s.inbound_ports = "*".into()),
        case("inbound-ports-tproxy", |s| {
            s.inbound_ports = "32000,31000".into();
            s.inbound_interception_mode = "TPROXY".into();
        }),
        case("inbound-ports-wildcard-tproxy", |s| {
            s.inbound_ports = "*".into();
            s.inbound_interception_mode = "TPROXY".into();
        }),
        case("inbound-ports-empty-tproxy", |s| {
            s.inbound_interception_mode = "TPROXY".into();
        }),
        case("dns-uid-gid", |s| {
            s.redirect_dns = true;
            s.dns_servers = "127.0.0.53,::127.0.0.53".into();
            s.proxy_gid = "1,2".into();
            s.proxy_uid = "3,4".into();
            s.ipv6 = true;
        }),
        case("ipv6-dns-uid-gid", |s| {
            s.ipv6 = true;
            s.redirect_dns = true;
            s.proxy_gid = "1,2".into();
            s.proxy_uid = "3,4".into();
        }),
        case("outbound-owner-groups", |s| {
            s.owner_groups_include = "java,202".into()
        }),
        case("outbound-owner-groups-exclude", |s| {
            s.owner_groups_exclude = "888,ftp".into()
        }),
        case("ipv6-dns-outbound-owner-groups", |s| {
            s.ipv6 = true;
            s.redirect_dns = true;
            s.owner_groups_include = "java,202".into();
        }),
        case("ipv6-dns-outbound-owner-groups-exclude", |s| {
            s.ipv6 = true;
            s.redirect_dns = true;
            s.owner_groups_exclude = "888,ftp".into();
        }),
        case("outbound-ports-include", |s| {
            s.outbound_ports_include = "32000,31000".into()
        }),
        case("loopback-outbound-iprange", |s| {
            s.outbound_ip_ranges_include = "127.1.2.3/32".into();
            s.redirect_dns = true;
            s.dns_servers = "127.0.0.53".into();
            s.proxy_gid = "1,2".into();
            s.proxy_uid = "3,4".into();
        }),
        case("basic-exclude-nic", |s| {
            s.exclude_interfaces = "not-istio-nic".into()
        }),
        case("drop-invalid", |s| s.drop_invalid = true),
        case("host-ipv4-loopback-cidr", |s| {
            s.host_ipv4_loopback_cidr = "127.0.0.1/8".into()
        }),
    ]
}
