//! [`Capture`]: the desired state of one network namespace's traffic capture, compiled from a
//! [`CaptureConfig`] once and installable into any number of namespaces.

use crate::CaptureError;
use nftmesh_model::config::{CaptureConfig, InterceptionMode};
use nftmesh_model::ruleset::{Family, Ruleset};
use nftmesh_netlink::routes::TproxyRouting;

/// Every table nftmesh's sidecar capture may own, in any mode and with any option. Installing
/// a capture deletes those of them it does not have (in the same transaction); removing the
/// capture deletes them all. No other table is ever touched.
pub fn owned_tables() -> Vec<(Family, String)> {
    use nftmesh_model::compile::{MANGLE_TABLE, NAT_TABLE, RAW_TABLE};
    [NAT_TABLE, MANGLE_TABLE, RAW_TABLE]
        .into_iter()
        .map(|t| (Family::Inet, t.to_string()))
        .collect()
}

/// What to do with Istio's own iptables rules when installing (see [`Capture::migrating`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Migration {
    /// Leave every iptables rule alone (the default).
    #[default]
    None,
    /// Delete Istio's `ISTIO_*` chains and the rules jumping to them from the iptables-nft
    /// tables in the same transaction; refuse while iptables-legacy tables exist.
    FromIptables,
    /// As `FromIptables`, but go ahead although iptables-legacy tables exist (their rules, a
    /// separate kernel subsystem, stay in place and keep matching).
    FromIptablesAllowLegacy,
}

/// The desired capture of one network namespace: nftmesh's nf_tables tables, the TPROXY
/// policy routing they need, and the IPv6 loopback address. Built once from a
/// [`CaptureConfig`]; [`crate::Namespace::install`] makes a namespace hold exactly this.
///
/// ```
/// use nftmesh::{Capture, CaptureConfig};
///
/// let capture = Capture::new(&CaptureConfig::sidecar()).unwrap();
/// assert!(capture.render().contains("redirect to :15001"));
/// assert!(capture.tproxy_routing().is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    ruleset: Ruleset,
    mode: InterceptionMode,
    routing: TproxyRouting,
    migration: Migration,
    proxy_uids: Vec<u32>,
    proxy_port: u16,
}

impl Capture {
    /// Validate `cfg` and compile it.
    pub fn new(cfg: &CaptureConfig) -> Result<Self, CaptureError> {
        cfg.validate()?;
        Ok(Capture {
            ruleset: nftmesh_model::compile(cfg),
            mode: cfg.mode,
            routing: TproxyRouting {
                mark: cfg.tproxy_mark,
                table: cfg.tproxy_route_table,
                ipv6: cfg.ipv6,
            },
            migration: Migration::None,
            proxy_uids: cfg.proxy_uids.clone(),
            proxy_port: cfg.proxy_port,
        })
    }

    /// This capture, taking over from Istio's iptables rules as `migration` says when
    /// installed.
    pub fn migrating(mut self, migration: Migration) -> Self {
        self.migration = migration;
        self
    }

    /// The nf_tables tables it installs.
    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    /// The tables it installs, as (family, name).
    pub fn tables(&self) -> Vec<(Family, String)> {
        self.ruleset
            .tables
            .iter()
            .map(|t| (t.family, t.name.clone()))
            .collect()
    }

    /// REDIRECT or TPROXY.
    pub fn mode(&self) -> InterceptionMode {
        self.mode
    }

    /// The policy routing TPROXY mode needs (`fwmark MARK lookup TABLE` and a local default
    /// route in TABLE); `None` in REDIRECT mode.
    pub fn tproxy_routing(&self) -> Option<TproxyRouting> {
        (self.mode == InterceptionMode::Tproxy).then_some(self.routing)
    }

    /// The mark and route table of the TPROXY routing, whatever the mode: what installing a
    /// REDIRECT capture removes when it finds it (left by an earlier TPROXY install).
    pub fn routing_settings(&self) -> TproxyRouting {
        self.routing
    }

    /// Whether `::6/128` goes on `lo` (with IPv6, in both modes, as Istio adds it).
    pub fn loopback_v6(&self) -> bool {
        self.routing.ipv6
    }

    /// The proxy's uids (never captured).
    pub fn proxy_uids(&self) -> &[u32] {
        &self.proxy_uids
    }

    /// The outbound capture port.
    pub fn proxy_port(&self) -> u16 {
        self.proxy_port
    }

    /// How it treats Istio's iptables rules.
    pub fn migration(&self) -> Migration {
        self.migration
    }

    /// The tables as an `nft -f` script (what a dry run prints).
    pub fn render(&self) -> String {
        nftmesh_model::render(&self.ruleset)
    }
}
