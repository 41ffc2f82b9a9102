//! Istio ambient mode: ztunnel's in-pod capture ([`AmbientConfig`], compiled by
//! [`compile_inpod`]) and the node's SNAT of kubelet health probes ([`AmbientHostConfig`],
//! [`compile_host`]; cleaned up by [`host_flushed`], which keeps the probe sets), in the layout
//! of Istio's native nftables generator (`cni/pkg/nftables/nftables.go`): tables
//! `inet istio-ambient-nat`, `-mangle`, `-raw`, each with base chains `prerouting` and `output`
//! and regular chains `istio-prerouting` and `istio-output`. The constants are Istio's
//! (`cni/pkg/config/config.go`); the cases and their goldens are in `tests/data/istio/ambient/`.
//!
//! Unlike sidecar mode there is no uid/gid bypass: ztunnel marks its own sockets with
//! [`AmbientConfig::inpod_mark`], and packets of connections it originated carry the conn mark
//! [`AmbientConfig::inpod_tproxy_mark`]; both are left alone.
//!
//! ```
//! use nftmesh_model::ambient::{compile_inpod, AmbientConfig};
//!
//! let cfg = AmbientConfig { dns_capture: true, ..AmbientConfig::default() };
//! cfg.validate().unwrap();
//! let text = nftmesh_model::render(&compile_inpod(&cfg));
//! assert!(text.contains("redirect to :15001"));
//! assert!(text.contains("redirect to :15053"));
//! ```

mod compile;
mod host;

pub use compile::{compile_host, compile_inpod, HOST_TABLE, MANGLE_TABLE, NAT_TABLE, RAW_TABLE};
pub use host::{host_flushed, probe_set_for, HostCleanup, ProbeRemoval};

use crate::config::ConfigError;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The IPv4 address kubelet probes are SNATed to (Istio's `HostProbeSNATAddress`).
pub const PROBE_SNAT_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 7, 127);
/// The IPv6 twin (Istio's `HOST_PROBE_SNAT_IPV6` default). Istio's ambient goldens were
/// generated with another value, `e9ac:1e77:90ca:399f:4d6d:ece2:2f9b:3164`, which the
/// conformance tests pass explicitly.
pub const PROBE_SNAT_IPV6: Ipv6Addr = Ipv6Addr::new(
    0xfd16, 0x9254, 0x7127, 0x1337, 0xffff, 0xffff, 0xffff, 0xffff,
);
/// The names of the host's probe address sets (Istio's `ProbeIPSet` + `-v4`/`-v6`).
pub const PROBE_SET_V4: &str = "istio-inpod-probes-v4";
/// See [`PROBE_SET_V4`].
pub const PROBE_SET_V6: &str = "istio-inpod-probes-v6";

/// ztunnel's in-pod capture for one pod. Defaults are Istio's constants with DNS capture off
/// (Istio's global `RedirectDNS`, which a pod's `ambient.istio.io/dns-capture` overrides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmbientConfig {
    /// ztunnel's outbound port (`ZtunnelOutboundPort`, 15001).
    pub ztunnel_outbound_port: u16,
    /// ztunnel's inbound plaintext port (`ZtunnelInboundPlaintextPort`, 15006).
    pub ztunnel_inbound_plaintext_port: u16,
    /// ztunnel's inbound HBONE port (`ZtunnelInboundPort`, 15008), never redirected inbound.
    pub ztunnel_inbound_port: u16,
    /// ztunnel's DNS proxy port (`DNSCapturePort`, 15053).
    pub dns_capture_port: u16,
    /// The packet mark ztunnel sets on its own sockets (`InpodMark`, 0x539).
    pub inpod_mark: u32,
    /// The bits of [`AmbientConfig::inpod_mark`] that count (`InpodMask`, 0xfff).
    pub inpod_mask: u32,
    /// The connection mark of connections ztunnel originated (`InpodTProxyMark`, 0x111).
    pub inpod_tproxy_mark: u32,
    /// The bits of that mark that count (`InpodTProxyMask`, 0xfff).
    pub inpod_tproxy_mask: u32,
    /// Redirect the pod's DNS to ztunnel (Istio's `RedirectDNS` / `ambient.istio.io/dns-capture`).
    pub dns_capture: bool,
    /// Leave inbound traffic alone (`ambient.istio.io/bypass-inbound-capture`).
    pub bypass_inbound_capture: bool,
    /// Interfaces whose inbound TCP goes to ztunnel's outbound port
    /// (`istio.io/reroute-virtual-interfaces`).
    pub reroute_virtual_interfaces: Vec<String>,
    /// Capture IPv6 too (dual stack).
    pub ipv6: bool,
    /// The kubelet probes' IPv4 source after the host's SNAT, exempt from capture.
    pub probe_snat_ipv4: Ipv4Addr,
    /// Their IPv6 source.
    pub probe_snat_ipv6: Ipv6Addr,
    /// The policy-routing table for ztunnel's transparent sockets (`RouteTableInbound`, 100).
    pub route_table: u32,
    /// The conntrack zone of DNS to and from the upstream resolver (1).
    pub dns_zone: u16,
}

impl Default for AmbientConfig {
    fn default() -> Self {
        AmbientConfig {
            ztunnel_outbound_port: 15001,
            ztunnel_inbound_plaintext_port: 15006,
            ztunnel_inbound_port: 15008,
            dns_capture_port: 15053,
            inpod_mark: 0x539,
            inpod_mask: 0xfff,
            inpod_tproxy_mark: 0x111,
            inpod_tproxy_mask: 0xfff,
            dns_capture: false,
            bypass_inbound_capture: false,
            reroute_virtual_interfaces: Vec::new(),
            ipv6: false,
            probe_snat_ipv4: PROBE_SNAT_IPV4,
            probe_snat_ipv6: PROBE_SNAT_IPV6,
            route_table: 100,
            dns_zone: 1,
        }
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

fn check_mark(field: &'static str, mark: u32, mask: u32) -> Result<(), ConfigError> {
    if mark == 0 || mask == 0 || mark & !mask != 0 {
        return Err(ConfigError::InvalidMark {
            field,
            value: format!("{mark:#x}/{mask:#x} (the mark must be non-zero and within its mask)"),
        });
    }
    Ok(())
}

impl AmbientConfig {
    /// Check every field: non-zero, distinct ports; marks within their masks and apart; valid
    /// interface names; a route table other than the kernel's own (253–255) and 0.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ports = [
            ("ztunnel_outbound_port", self.ztunnel_outbound_port),
            (
                "ztunnel_inbound_plaintext_port",
                self.ztunnel_inbound_plaintext_port,
            ),
            ("ztunnel_inbound_port", self.ztunnel_inbound_port),
            ("dns_capture_port", self.dns_capture_port),
        ];
        for (i, (field, p)) in ports.iter().enumerate() {
            check_port(field, *p)?;
            if let Some((other, _)) = ports[..i].iter().find(|(_, q)| q == p) {
                return Err(ConfigError::Contradictory {
                    first: other,
                    second: field,
                    reason: format!("both are port {p}"),
                });
            }
        }
        check_mark("inpod_mark", self.inpod_mark, self.inpod_mask)?;
        check_mark(
            "inpod_tproxy_mark",
            self.inpod_tproxy_mark,
            self.inpod_tproxy_mask,
        )?;
        if self.inpod_mark & self.inpod_tproxy_mask == self.inpod_tproxy_mark
            && self.inpod_mask == self.inpod_tproxy_mask
        {
            return Err(ConfigError::Contradictory {
                first: "inpod_mark",
                second: "inpod_tproxy_mark",
                reason: "the two marks must differ".into(),
            });
        }
        for n in &self.reroute_virtual_interfaces {
            crate::config::check_interface("reroute_virtual_interfaces", n)?;
        }
        if matches!(self.route_table, 0 | 253..=255) {
            return Err(ConfigError::InvalidRouteTable {
                field: "route_table",
                value: self.route_table.to_string(),
            });
        }
        Ok(())
    }
}

/// The node's SNAT of kubelet health probes to ambient pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmbientHostConfig {
    /// The uid kubelet runs as (Istio finds it by the process name kubelet, kubelite or k3s).
    pub kubelet_uid: u32,
    /// The IPv6 rule and set too.
    pub ipv6: bool,
    /// The IPv4 source probes get.
    pub probe_snat_ipv4: Ipv4Addr,
    /// The IPv6 source probes get.
    pub probe_snat_ipv6: Ipv6Addr,
}

impl AmbientHostConfig {
    /// The host rules for kubelet running as `kubelet_uid`, with Istio's addresses.
    pub fn new(kubelet_uid: u32) -> Self {
        AmbientHostConfig {
            kubelet_uid,
            ipv6: false,
            probe_snat_ipv4: PROBE_SNAT_IPV4,
            probe_snat_ipv6: PROBE_SNAT_IPV6,
        }
    }
}

#[cfg(test)]
mod tests;
