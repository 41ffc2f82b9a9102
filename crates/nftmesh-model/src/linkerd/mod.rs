//! Linkerd's capture, as linkerd2-proxy-init programs it (`pkg/iptables/iptables.go` and
//! `proxy-init/cmd/root.go` of linkerd/linkerd2-proxy-init at
//! 183e791d99dcc6d4fa765b7331cbaec7ce40c2de): nat only, two chains.
//!
//! - Inbound (`PROXY_INIT_REDIRECT`, jumped to from PREROUTING): TCP to an ignored inbound
//!   port returns, a packet *from* an ignored subnet returns (any protocol), and the rest of
//!   TCP is redirected to the incoming proxy port (only to listed ports when
//!   [`LinkerdConfig::ports_to_redirect`] is not empty).
//! - Outbound (`PROXY_INIT_OUTPUT`, jumped to from OUTPUT): the proxy's uid and gid return,
//!   anything leaving through `lo` returns, TCP to an ignored outbound port returns, and the
//!   rest of TCP is redirected to the outgoing proxy port.
//!
//! Compiled ([`compile_linkerd`]) into one table of nftmesh's own, `linkerd-proxy-init`:
//! family `inet` when IPv6 is captured too (proxy-init's second run, with ip6tables), `ip`
//! otherwise; base chains `prerouting` and `output` (nat, priority -100, as iptables-nft's
//! nat chains) jumping to `proxy-init-redirect` and `proxy-init-output`. Port and subnet
//! lists are anonymous sets (iptables needs a multiport rule per 15 ports).
//!
//! Deliberate differences from proxy-init, each listed in `tests/data/linkerd/README.md`:
//! an invalid port or subnet is an error (proxy-init logs an invalid ignored port and skips
//! it); each ignored subnet is matched in its own family (proxy-init gives every subnet to
//! both its iptables and ip6tables runs, so a dual-stack pod with an IPv4 subnet fails).
//!
//! ```
//! use nftmesh_model::linkerd::{compile_linkerd, LinkerdConfig};
//!
//! let cfg = LinkerdConfig { proxy_uid: Some(2102), ..LinkerdConfig::default() };
//! cfg.validate().unwrap();
//! let text = nftmesh_model::render(&compile_linkerd(&cfg));
//! assert!(text.contains("redirect to :4143"));
//! assert!(text.contains("meta skuid 2102 counter return"));
//! ```

mod compile;

pub use compile::{compile_linkerd, OUTPUT_CHAIN, REDIRECT_CHAIN, TABLE};

use crate::config::ConfigError;
use crate::expr::PortRange;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Linkerd's capture for one pod. Defaults are proxy-init's as Linkerd's injector passes them
/// (ports 4143 and 4140, IPv4 only), without a proxy uid (proxy-init's own default, -1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkerdConfig {
    /// The proxy's inbound port (`--incoming-proxy-port`, 4143).
    pub incoming_proxy_port: u16,
    /// The proxy's outbound port (`--outgoing-proxy-port`, 4140).
    pub outgoing_proxy_port: u16,
    /// The proxy's uid, whose traffic is not redirected (`--proxy-uid`, 2102 in Linkerd's
    /// injector; proxy-init ignores values below 1).
    pub proxy_uid: Option<u32>,
    /// The proxy's gid, likewise (`--proxy-gid`).
    pub proxy_gid: Option<u32>,
    /// Inbound ports to redirect; empty: every port (`--ports-to-redirect`).
    pub ports_to_redirect: Vec<u16>,
    /// Inbound ports and ranges not redirected (`--inbound-ports-to-ignore`).
    pub inbound_ports_to_ignore: Vec<PortRange>,
    /// Outbound ports and ranges not redirected (`--outbound-ports-to-ignore`).
    pub outbound_ports_to_ignore: Vec<PortRange>,
    /// Sources whose inbound traffic is not redirected (`--subnets-to-ignore`).
    pub subnets_to_ignore: Vec<IpNet>,
    /// Capture IPv6 too (`--ipv6`; proxy-init's default is true, Linkerd's injector passes
    /// false unless IPv6 is enabled).
    pub ipv6: bool,
}

impl Default for LinkerdConfig {
    fn default() -> Self {
        LinkerdConfig {
            incoming_proxy_port: 4143,
            outgoing_proxy_port: 4140,
            proxy_uid: None,
            proxy_gid: None,
            ports_to_redirect: Vec::new(),
            inbound_ports_to_ignore: Vec::new(),
            outbound_ports_to_ignore: Vec::new(),
            subnets_to_ignore: Vec::new(),
            ipv6: false,
        }
    }
}

impl LinkerdConfig {
    /// Check what the compiler assumes: proxy ports and redirected ports from 1 to 65535,
    /// ranges in order, and no IPv6 subnet while IPv6 is off.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let port = |field: &'static str, p: u16| {
            if p == 0 {
                Err(ConfigError::InvalidPort {
                    field,
                    value: p.to_string(),
                })
            } else {
                Ok(())
            }
        };
        port("incoming_proxy_port", self.incoming_proxy_port)?;
        port("outgoing_proxy_port", self.outgoing_proxy_port)?;
        for p in &self.ports_to_redirect {
            port("ports_to_redirect", *p)?;
        }
        for (field, list) in [
            ("inbound_ports_to_ignore", &self.inbound_ports_to_ignore),
            ("outbound_ports_to_ignore", &self.outbound_ports_to_ignore),
        ] {
            for r in list {
                if r.first > r.last {
                    return Err(ConfigError::InvalidPort {
                        field,
                        value: format!("{}-{}", r.first, r.last),
                    });
                }
            }
        }
        if !self.ipv6 {
            if let Some(s) = self.subnets_to_ignore.iter().find(|s| s.addr().is_ipv6()) {
                return Err(ConfigError::Ipv6Disabled {
                    field: "subnets_to_ignore",
                    value: s.to_string(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
