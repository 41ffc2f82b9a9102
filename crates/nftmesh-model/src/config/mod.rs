//! The capture configuration: every setting of Istio's `istio-iptables`, typed.
//!
//! [`CaptureConfig::default`] holds Istio's defaults. Values come from three edges, each parsed
//! once: Istio's string syntax ([`IstioSettings`]), a JSON file ([`CaptureConfig::from_json`]),
//! or Rust code. [`CaptureConfig::validate`] checks what types cannot; owner group names are
//! resolved by [`CaptureConfig::resolve_groups`] with a caller-supplied group database, so this
//! crate stays free of I/O.

mod error;
mod istio;

pub use error::ConfigError;
pub use istio::{parse_bool, split_list, IstioSettings};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

/// How inbound connections reach the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum InterceptionMode {
    /// NAT `redirect` to the inbound capture port (the original destination is read with
    /// `SO_ORIGINAL_DST`).
    #[default]
    Redirect,
    /// `tproxy` to the inbound capture port, keeping the original destination as the local
    /// address; needs a mark and policy routing.
    Tproxy,
}

/// A selection of ports: all of them, or a list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortSelection {
    /// Every port (Istio's `"*"`).
    All,
    /// These ports only; empty means none.
    Ports(Vec<u16>),
}

impl Default for PortSelection {
    fn default() -> Self {
        PortSelection::Ports(Vec::new())
    }
}

/// A selection of destination prefixes: everything, or a list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CidrSelection {
    /// Every destination (Istio's `"*"`).
    All,
    /// These prefixes only; empty means none.
    Cidrs(Vec<IpNet>),
}

impl Default for CidrSelection {
    fn default() -> Self {
        CidrSelection::Cidrs(Vec::new())
    }
}

/// An owner group given by gid or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GroupRef {
    /// A numeric gid.
    Id(u32),
    /// A group name, resolved through the group database.
    Name(String),
}

/// Which sockets' outbound traffic is captured, by owner group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerGroups {
    /// Every group (Istio's default `ISTIO_OUTBOUND_OWNER_GROUPS="*"`).
    #[default]
    All,
    /// Only these groups (`ISTIO_OUTBOUND_OWNER_GROUPS`).
    Include(Vec<GroupRef>),
    /// Every group but these (`ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE`).
    Exclude(Vec<GroupRef>),
}

/// DNS capture to the agent's DNS proxy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsCapture {
    /// Capture DNS at all (`--redirect-dns`, `ISTIO_META_DNS_CAPTURE`).
    pub enabled: bool,
    /// Capture DNS to every address, not only the listed servers (`--capture-all-dns`).
    pub capture_all: bool,
    /// The DNS servers whose traffic is captured (from `/etc/resolv.conf` in Istio).
    pub servers: Vec<IpAddr>,
}

/// What to do with owner group names the group database does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupNames {
    /// Refuse them with [`ConfigError::UnknownGroup`] (the default).
    #[default]
    Strict,
    /// Keep them as names, as Istio does; `nft` resolves them when it loads the text, and the
    /// netlink backend refuses them.
    PassThrough,
}

/// A group database: resolves group names to gids.
pub trait GroupResolver {
    /// The gid of the group called `name`, if there is one.
    fn gid_of(&self, name: &str) -> Option<u32>;
}

impl<F: Fn(&str) -> Option<u32>> GroupResolver for F {
    fn gid_of(&self, name: &str) -> Option<u32> {
        self(name)
    }
}

/// The DNS agent's listener port, fixed in Istio.
pub const DNS_CAPTURE_PORT: u16 = 15053;
/// The mark Istio puts on the proxy's own connections to the pod's address in TPROXY mode.
pub const OUTBOUND_MARK: u32 = 1338;

/// Every capture setting of Istio's `istio-iptables`, typed. `Default` is Istio's default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Outbound capture port, where the proxy listens for outbound traffic (`-p`, 15001).
    pub proxy_port: u16,
    /// Inbound capture port (`-z`, 15006).
    pub inbound_capture_port: u16,
    /// Inbound tunnel (HBONE) port, never captured inbound (`-e`, 15008).
    pub inbound_tunnel_port: u16,
    /// Uids of the proxy, whose traffic is not captured outbound (`-u`, 1337).
    pub proxy_uids: Vec<u32>,
    /// Gids of the proxy, whose traffic is not captured outbound (`-g`, 1337).
    pub proxy_gids: Vec<u32>,
    /// Inbound interception mode (`-m`, REDIRECT).
    pub mode: InterceptionMode,
    /// Packet mark of TPROXY-diverted packets (`-t`, 1337).
    pub tproxy_mark: u32,
    /// Routing table for TPROXY-marked packets (`-r`, 133).
    pub tproxy_route_table: u32,
    /// Inbound ports captured (`-b`; none by default).
    pub inbound_ports: PortSelection,
    /// Inbound ports not captured when all are (`-d`).
    pub inbound_ports_exclude: Vec<u16>,
    /// Outbound ports always captured (`-q`).
    pub outbound_ports_include: Vec<u16>,
    /// Outbound ports never captured (`-o`).
    pub outbound_ports_exclude: Vec<u16>,
    /// Outbound destinations captured (`-i`; none by default).
    pub outbound_cidrs_include: CidrSelection,
    /// Outbound destinations never captured (`-x`).
    pub outbound_cidrs_exclude: Vec<IpNet>,
    /// Owner groups whose outbound traffic is captured.
    pub owner_groups: OwnerGroups,
    /// Interfaces whose traffic is never captured (`-c`).
    pub exclude_interfaces: Vec<String>,
    /// Virtual interfaces whose inbound traffic is treated as outbound (`-k`).
    pub reroute_virtual_interfaces: Vec<String>,
    /// DNS capture.
    pub dns: DnsCapture,
    /// Drop packets conntrack finds invalid instead of resetting (`--drop-invalid`).
    pub drop_invalid: bool,
    /// Capture IPv6 too.
    pub ipv6: bool,
    /// The host's IPv4 loopback range (`ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`, 127.0.0.1/32).
    pub host_ipv4_loopback_cidr: Ipv4Net,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            proxy_port: 15001,
            inbound_capture_port: 15006,
            inbound_tunnel_port: 15008,
            proxy_uids: vec![1337],
            proxy_gids: vec![1337],
            mode: InterceptionMode::Redirect,
            tproxy_mark: 1337,
            tproxy_route_table: 133,
            inbound_ports: PortSelection::default(),
            inbound_ports_exclude: Vec::new(),
            outbound_ports_include: Vec::new(),
            outbound_ports_exclude: Vec::new(),
            outbound_cidrs_include: CidrSelection::default(),
            outbound_cidrs_exclude: Vec::new(),
            owner_groups: OwnerGroups::All,
            exclude_interfaces: Vec::new(),
            reroute_virtual_interfaces: Vec::new(),
            dns: DnsCapture::default(),
            drop_invalid: false,
            ipv6: false,
            host_ipv4_loopback_cidr: Ipv4Net::new(Ipv4Addr::LOCALHOST, 32)
                .unwrap_or_else(|_| unreachable!("32 is a valid IPv4 prefix length")),
        }
    }
}

impl CaptureConfig {
    /// The settings Istio's sidecar injector passes by default: capture every inbound port
    /// except the proxy's own 15090 (metrics), 15021 (health) and 15020 (merged metrics), and
    /// every outbound destination.
    pub fn sidecar() -> Self {
        CaptureConfig {
            inbound_ports: PortSelection::All,
            inbound_ports_exclude: vec![15090, 15021, 15020],
            outbound_cidrs_include: CidrSelection::All,
            ..CaptureConfig::default()
        }
    }

    /// Parse a JSON configuration file (fields as in this struct, missing ones defaulted) and
    /// validate it.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let cfg: CaptureConfig = serde_json::from_str(text).map_err(|e| ConfigError::File {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check everything the types do not: non-zero ports and marks, non-empty id lists, IPv6
    /// values only with IPv6 on, valid interface names, and no contradictions.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, port) in [
            ("proxy_port", self.proxy_port),
            ("inbound_capture_port", self.inbound_capture_port),
            ("inbound_tunnel_port", self.inbound_tunnel_port),
        ] {
            check_port(field, port)?;
        }
        if let PortSelection::Ports(ports) = &self.inbound_ports {
            ports
                .iter()
                .try_for_each(|p| check_port("inbound_ports", *p))?;
        }
        for (field, ports) in [
            ("inbound_ports_exclude", &self.inbound_ports_exclude),
            ("outbound_ports_include", &self.outbound_ports_include),
            ("outbound_ports_exclude", &self.outbound_ports_exclude),
        ] {
            ports.iter().try_for_each(|p| check_port(field, *p))?;
        }
        if self.proxy_uids.is_empty() {
            return Err(ConfigError::EmptyIdList {
                field: "proxy_uids",
            });
        }
        if self.proxy_gids.is_empty() {
            return Err(ConfigError::EmptyIdList {
                field: "proxy_gids",
            });
        }
        if self.tproxy_mark == 0 {
            return Err(ConfigError::InvalidMark {
                field: "tproxy_mark",
                value: "0".into(),
            });
        }
        if self.tproxy_mark == OUTBOUND_MARK {
            return Err(ConfigError::Contradictory {
                first: "tproxy_mark",
                second: "outbound mark",
                reason: format!("{OUTBOUND_MARK} marks the proxy's own connections to the pod"),
            });
        }
        if matches!(self.tproxy_route_table, 0 | 253..=255) {
            return Err(ConfigError::InvalidRouteTable {
                field: "tproxy_route_table",
                value: self.tproxy_route_table.to_string(),
            });
        }
        if self.proxy_port == self.inbound_capture_port {
            return Err(ConfigError::Contradictory {
                first: "proxy_port",
                second: "inbound_capture_port",
                reason: format!("both are {}", self.proxy_port),
            });
        }
        if let CidrSelection::Cidrs(cidrs) = &self.outbound_cidrs_include {
            self.check_cidrs("outbound_cidrs_include", cidrs)?;
        }
        self.check_cidrs("outbound_cidrs_exclude", &self.outbound_cidrs_exclude)?;
        if !self.ipv6 {
            if let Some(s) = self.dns.servers.iter().find(|s| s.is_ipv6()) {
                return Err(ConfigError::Ipv6Disabled {
                    field: "dns.servers",
                    value: s.to_string(),
                });
            }
        }
        for (field, names) in [
            ("exclude_interfaces", &self.exclude_interfaces),
            (
                "reroute_virtual_interfaces",
                &self.reroute_virtual_interfaces,
            ),
        ] {
            names.iter().try_for_each(|n| check_interface(field, n))?;
        }
        if let PortSelection::Ports(ports) = &self.inbound_ports {
            clash(
                ("inbound_ports", ports),
                ("inbound_ports_exclude", &self.inbound_ports_exclude),
            )?;
        }
        clash(
            ("outbound_ports_include", &self.outbound_ports_include),
            ("outbound_ports_exclude", &self.outbound_ports_exclude),
        )?;
        Ok(())
    }

    fn check_cidrs(&self, field: &'static str, cidrs: &[IpNet]) -> Result<(), ConfigError> {
        if !self.ipv6 {
            if let Some(c) = cidrs.iter().find(|c| matches!(c, IpNet::V6(_))) {
                return Err(ConfigError::Ipv6Disabled {
                    field,
                    value: c.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Resolve owner group names to gids with `db`. With [`GroupNames::Strict`] an unknown
    /// name is [`ConfigError::UnknownGroup`]; with [`GroupNames::PassThrough`] it stays a name.
    pub fn resolve_groups(
        &mut self,
        db: &dyn GroupResolver,
        names: GroupNames,
    ) -> Result<(), ConfigError> {
        let (field, groups) = match &mut self.owner_groups {
            OwnerGroups::All => return Ok(()),
            OwnerGroups::Include(g) => ("owner_groups.include", g),
            OwnerGroups::Exclude(g) => ("owner_groups.exclude", g),
        };
        for g in groups.iter_mut() {
            if let GroupRef::Name(name) = g {
                match (db.gid_of(name), names) {
                    (Some(gid), _) => *g = GroupRef::Id(gid),
                    (None, GroupNames::PassThrough) => {}
                    (None, GroupNames::Strict) => {
                        return Err(ConfigError::UnknownGroup {
                            field,
                            name: name.clone(),
                        })
                    }
                }
            }
        }
        Ok(())
    }

    /// The DNS capture actually in effect: Istio turns it off when it is on but neither
    /// capture-all nor any server is given.
    pub fn dns_in_effect(&self) -> bool {
        self.dns.enabled && (self.dns.capture_all || !self.dns.servers.is_empty())
    }
}

fn check_port(field: &'static str, port: u16) -> Result<(), ConfigError> {
    if port == 0 {
        return Err(ConfigError::InvalidPort {
            field,
            value: "0".into(),
        });
    }
    Ok(())
}

fn clash(a: (&'static str, &[u16]), b: (&'static str, &[u16])) -> Result<(), ConfigError> {
    let first: BTreeSet<u16> = a.1.iter().copied().collect();
    if let Some(p) = b.1.iter().find(|p| first.contains(p)) {
        return Err(ConfigError::Contradictory {
            first: a.0,
            second: b.0,
            reason: format!("port {p} is in both"),
        });
    }
    Ok(())
}

pub(crate) fn check_interface(field: &'static str, name: &str) -> Result<(), ConfigError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > crate::limits::IFNAME_MAX {
        "longer than 15 bytes"
    } else if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '"' || c == '\\')
    {
        "contains whitespace, a control character, '/', '\"' or '\\'"
    } else {
        return Ok(());
    };
    Err(ConfigError::InvalidInterface {
        field,
        value: name.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests;
