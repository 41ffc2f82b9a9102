//! Istio's string syntax for capture settings, parsed once into a [`CaptureConfig`].
//!
//! Lists are comma separated; blanks around items and empty items (trailing commas) are
//! ignored, as Istio's `config.Split` does. `"*"` means "all" where Istio allows it.

use super::{
    CaptureConfig, CidrSelection, ConfigError, DnsCapture, GroupRef, InterceptionMode, OwnerGroups,
    PortSelection,
};
use ipnet::{IpNet, Ipv4Net};
use std::net::IpAddr;

/// Capture settings as Istio spells them: flag and environment values, unparsed.
///
/// `Default` is Istio's default for every setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IstioSettings {
    /// `-p` / `ENVOY_PORT`.
    pub proxy_port: String,
    /// `-z` / `INBOUND_CAPTURE_PORT`.
    pub inbound_capture_port: String,
    /// `-e` / `INBOUND_TUNNEL_PORT`.
    pub inbound_tunnel_port: String,
    /// `-u` / `PROXY_UID`: comma-separated uids.
    pub proxy_uid: String,
    /// `-g` / `PROXY_GID`: comma-separated gids; empty means "same as the uids".
    pub proxy_gid: String,
    /// `-m` / `ISTIO_INBOUND_INTERCEPTION_MODE`: `REDIRECT` or `TPROXY` (empty: REDIRECT).
    pub inbound_interception_mode: String,
    /// `-t` / `ISTIO_INBOUND_TPROXY_MARK`.
    pub inbound_tproxy_mark: String,
    /// `-r` / `ISTIO_INBOUND_TPROXY_ROUTE_TABLE`.
    pub inbound_tproxy_route_table: String,
    /// `-b` / `ISTIO_INBOUND_PORTS`: ports or `*`.
    pub inbound_ports: String,
    /// `-d` / `ISTIO_LOCAL_EXCLUDE_PORTS`.
    pub inbound_ports_exclude: String,
    /// `-q` / `ISTIO_OUTBOUND_PORTS`.
    pub outbound_ports_include: String,
    /// `-o` / `ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE`.
    pub outbound_ports_exclude: String,
    /// `-i` / `ISTIO_SERVICE_CIDR`: CIDRs or `*`.
    pub outbound_ip_ranges_include: String,
    /// `-x` / `ISTIO_SERVICE_EXCLUDE_CIDR`.
    pub outbound_ip_ranges_exclude: String,
    /// `ISTIO_OUTBOUND_OWNER_GROUPS`: groups or `*`.
    pub owner_groups_include: String,
    /// `ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE`.
    pub owner_groups_exclude: String,
    /// `-c` / `ISTIO_EXCLUDE_INTERFACES`.
    pub exclude_interfaces: String,
    /// `-k` / `KUBE_VIRT_INTERFACES`.
    pub kube_virt_interfaces: String,
    /// `--redirect-dns` / `ISTIO_META_DNS_CAPTURE`.
    pub redirect_dns: bool,
    /// `--capture-all-dns`.
    pub capture_all_dns: bool,
    /// DNS servers (Istio reads them from `/etc/resolv.conf`), comma separated.
    pub dns_servers: String,
    /// `--drop-invalid` / `INVALID_DROP`.
    pub drop_invalid: bool,
    /// Whether IPv6 is captured (Istio detects it from the pod's addresses).
    pub ipv6: bool,
    /// `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`.
    pub host_ipv4_loopback_cidr: String,
}

impl Default for IstioSettings {
    fn default() -> Self {
        IstioSettings {
            proxy_port: "15001".into(),
            inbound_capture_port: "15006".into(),
            inbound_tunnel_port: "15008".into(),
            proxy_uid: "1337".into(),
            proxy_gid: String::new(),
            inbound_interception_mode: String::new(),
            inbound_tproxy_mark: "1337".into(),
            inbound_tproxy_route_table: "133".into(),
            inbound_ports: String::new(),
            inbound_ports_exclude: String::new(),
            outbound_ports_include: String::new(),
            outbound_ports_exclude: String::new(),
            outbound_ip_ranges_include: String::new(),
            outbound_ip_ranges_exclude: String::new(),
            owner_groups_include: "*".into(),
            owner_groups_exclude: String::new(),
            exclude_interfaces: String::new(),
            kube_virt_interfaces: String::new(),
            redirect_dns: false,
            capture_all_dns: false,
            dns_servers: String::new(),
            drop_invalid: false,
            ipv6: false,
            host_ipv4_loopback_cidr: "127.0.0.1/32".into(),
        }
    }
}

/// Split an Istio list: comma separated, items trimmed, empty items dropped.
pub fn split_list(s: &str) -> Vec<&str> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .collect()
}

fn port(field: &'static str, s: &str) -> Result<u16, ConfigError> {
    match s.trim().parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ConfigError::InvalidPort {
            field,
            value: s.to_string(),
        }),
    }
}

fn ports(field: &'static str, s: &str) -> Result<Vec<u16>, ConfigError> {
    split_list(s).into_iter().map(|p| port(field, p)).collect()
}

fn port_selection(field: &'static str, s: &str) -> Result<PortSelection, ConfigError> {
    if s.trim() == "*" {
        Ok(PortSelection::All)
    } else {
        Ok(PortSelection::Ports(ports(field, s)?))
    }
}

fn cidr(field: &'static str, s: &str) -> Result<IpNet, ConfigError> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| ConfigError::InvalidCidr {
            field,
            value: s.to_string(),
        })
}

fn cidr_selection(field: &'static str, s: &str) -> Result<CidrSelection, ConfigError> {
    let items = split_list(s);
    if items.contains(&"*") {
        return Ok(CidrSelection::All);
    }
    Ok(CidrSelection::Cidrs(
        items
            .into_iter()
            .map(|c| cidr(field, c))
            .collect::<Result<_, _>>()?,
    ))
}

fn ids(field: &'static str, s: &str) -> Result<Vec<u32>, ConfigError> {
    let items = split_list(s);
    if items.is_empty() {
        return Err(ConfigError::EmptyIdList { field });
    }
    items
        .into_iter()
        .map(|x| {
            x.parse::<u32>().map_err(|_| ConfigError::InvalidId {
                field,
                value: x.to_string(),
            })
        })
        .collect()
}

fn groups(s: &str) -> Vec<GroupRef> {
    split_list(s)
        .into_iter()
        .map(|g| match g.parse::<u32>() {
            Ok(id) => GroupRef::Id(id),
            Err(_) => GroupRef::Name(g.to_string()),
        })
        .collect()
}

fn number(s: &str) -> Option<u32> {
    s.trim().parse::<u32>().ok()
}

/// Parse a boolean the way Istio's environment does (`true`/`false`, `1`/`0`, any case).
pub fn parse_bool(field: &'static str, s: &str) -> Result<bool, ConfigError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" | "" => Ok(false),
        _ => Err(ConfigError::InvalidBool {
            field,
            value: s.to_string(),
        }),
    }
}

impl IstioSettings {
    /// Parse every setting and validate the result.
    pub fn to_config(&self) -> Result<CaptureConfig, ConfigError> {
        let proxy_uids = ids("proxy_uids", &self.proxy_uid)?;
        let proxy_gids = if self.proxy_gid.trim().is_empty() {
            proxy_uids.clone()
        } else {
            ids("proxy_gids", &self.proxy_gid)?
        };
        let mode = match self.inbound_interception_mode.trim() {
            "" | "REDIRECT" => InterceptionMode::Redirect,
            "TPROXY" => InterceptionMode::Tproxy,
            other => {
                return Err(ConfigError::UnknownMode {
                    field: "mode",
                    value: other.to_string(),
                })
            }
        };
        let tproxy_mark = match number(&self.inbound_tproxy_mark) {
            Some(m) if m != 0 => m,
            _ => {
                return Err(ConfigError::InvalidMark {
                    field: "tproxy_mark",
                    value: self.inbound_tproxy_mark.clone(),
                })
            }
        };
        let tproxy_route_table = number(&self.inbound_tproxy_route_table).ok_or_else(|| {
            ConfigError::InvalidRouteTable {
                field: "tproxy_route_table",
                value: self.inbound_tproxy_route_table.clone(),
            }
        })?;
        let exclude = cidr_selection("outbound_cidrs_exclude", &self.outbound_ip_ranges_exclude)?;
        let outbound_cidrs_exclude = match exclude {
            CidrSelection::All => {
                return Err(ConfigError::WildcardNotAllowed {
                    field: "outbound_cidrs_exclude",
                })
            }
            CidrSelection::Cidrs(c) => c,
        };
        let include_groups = self.owner_groups_include.trim();
        let exclude_groups = groups(&self.owner_groups_exclude);
        let owner_groups = match (include_groups, exclude_groups.is_empty()) {
            ("*", true) => OwnerGroups::All,
            ("*", false) => OwnerGroups::Exclude(exclude_groups),
            (inc, true) => OwnerGroups::Include(groups(inc)),
            (_, false) => {
                return Err(ConfigError::Contradictory {
                    first: "owner_groups.include",
                    second: "owner_groups.exclude",
                    reason: "only one of them may be set".into(),
                })
            }
        };
        let servers = split_list(&self.dns_servers)
            .into_iter()
            .map(|s| {
                s.parse::<IpAddr>()
                    .map_err(|_| ConfigError::InvalidAddress {
                        field: "dns.servers",
                        value: s.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let host_ipv4_loopback_cidr = self
            .host_ipv4_loopback_cidr
            .trim()
            .parse::<Ipv4Net>()
            .map_err(|_| ConfigError::InvalidCidr {
                field: "host_ipv4_loopback_cidr",
                value: self.host_ipv4_loopback_cidr.clone(),
            })?;
        let cfg = CaptureConfig {
            proxy_port: port("proxy_port", &self.proxy_port)?,
            inbound_capture_port: port("inbound_capture_port", &self.inbound_capture_port)?,
            inbound_tunnel_port: port("inbound_tunnel_port", &self.inbound_tunnel_port)?,
            proxy_uids,
            proxy_gids,
            mode,
            tproxy_mark,
            tproxy_route_table,
            inbound_ports: port_selection("inbound_ports", &self.inbound_ports)?,
            inbound_ports_exclude: ports("inbound_ports_exclude", &self.inbound_ports_exclude)?,
            outbound_ports_include: ports("outbound_ports_include", &self.outbound_ports_include)?,
            outbound_ports_exclude: ports("outbound_ports_exclude", &self.outbound_ports_exclude)?,
            outbound_cidrs_include: cidr_selection(
                "outbound_cidrs_include",
                &self.outbound_ip_ranges_include,
            )?,
            outbound_cidrs_exclude,
            owner_groups,
            exclude_interfaces: split_list(&self.exclude_interfaces)
                .into_iter()
                .map(String::from)
                .collect(),
            reroute_virtual_interfaces: split_list(&self.kube_virt_interfaces)
                .into_iter()
                .map(String::from)
                .collect(),
            dns: DnsCapture {
                enabled: self.redirect_dns,
                capture_all: self.capture_all_dns,
                servers,
            },
            drop_invalid: self.drop_invalid,
            ipv6: self.ipv6,
            host_ipv4_loopback_cidr,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
