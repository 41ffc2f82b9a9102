//! [`Capture`]: the desired state of one network namespace's traffic capture, compiled from a
//! [`CaptureConfig`] once and installable into any number of namespaces.

use crate::CaptureError;
use nftmesh_model::config::{CaptureConfig, InterceptionMode};
use nftmesh_model::ruleset::{Family, Ruleset};
use nftmesh_netlink::routes::TproxyRouting;
use nftmesh_netlink::TableOwner;

/// Every table nftmesh's in-pod capture may own: the sidecar's, ambient's and Linkerd's, in any
/// mode and with any option. Installing a capture deletes those of them it does not have (in the same
/// transaction: a sidecar ↔ ambient switch is atomic too); removing the capture deletes them
/// all. No other table is ever touched.
pub fn owned_tables() -> Vec<(Family, String)> {
    use nftmesh_model::{ambient, compile};
    [
        compile::NAT_TABLE,
        compile::MANGLE_TABLE,
        compile::RAW_TABLE,
        ambient::NAT_TABLE,
        ambient::MANGLE_TABLE,
        ambient::RAW_TABLE,
    ]
    .into_iter()
    .map(|t| (Family::Inet, t.to_string()))
    .chain([Family::Inet, Family::Ip].map(|f| (f, nftmesh_model::linkerd::TABLE.to_string())))
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
    /// Whether the routing is installed (TPROXY sidecar, ambient) or removed when found.
    needs_routing: bool,
    routing: TproxyRouting,
    migration: Migration,
    owner: TableOwner,
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
            needs_routing: cfg.mode == InterceptionMode::Tproxy,
            routing: TproxyRouting::sidecar(cfg.tproxy_mark, cfg.tproxy_route_table, cfg.ipv6),
            migration: Migration::None,
            owner: TableOwner::None,
            proxy_uids: cfg.proxy_uids.clone(),
            proxy_port: cfg.proxy_port,
        })
    }

    /// Validate `cfg` and compile Istio ambient's in-pod capture for ztunnel: the
    /// `inet istio-ambient-*` tables and the policy routing of ztunnel's transparent sockets
    /// (`fwmark 0x111/0xfff pref 32764 lookup 100`, `local default dev lo table 100`), which
    /// is installed before the tables. There is no uid bypass: ztunnel's own traffic carries its
    /// mark. [`Capture::mode`] reports `Redirect` (ambient's inbound and outbound redirects).
    pub fn ambient(cfg: &nftmesh_model::ambient::AmbientConfig) -> Result<Self, CaptureError> {
        cfg.validate()?;
        Ok(Capture {
            ruleset: nftmesh_model::ambient::compile_inpod(cfg),
            mode: InterceptionMode::Redirect,
            needs_routing: true,
            routing: TproxyRouting::ambient(
                cfg.inpod_tproxy_mark,
                cfg.inpod_tproxy_mask,
                cfg.route_table,
                cfg.ipv6,
            ),
            migration: Migration::None,
            owner: TableOwner::None,
            proxy_uids: Vec::new(),
            proxy_port: cfg.ztunnel_outbound_port,
        })
    }

    /// Validate `cfg` and compile Linkerd's capture (linkerd2-proxy-init's rules, see
    /// [`nftmesh_model::linkerd`]): table `linkerd-proxy-init`, no policy routing (TPROXY or
    /// ambient routing an earlier capture left is removed). [`Capture::mode`] reports
    /// `Redirect`; [`Capture::proxy_uids`] the proxy's uid when it has one.
    ///
    /// ```
    /// use nftmesh::Capture;
    /// use nftmesh::model::linkerd::LinkerdConfig;
    ///
    /// let cfg = LinkerdConfig { proxy_uid: Some(2102), ..LinkerdConfig::default() };
    /// let capture = Capture::linkerd(&cfg).unwrap();
    /// assert!(capture.render().contains("redirect to :4140"));
    /// assert_eq!(capture.proxy_port(), 4140);
    /// ```
    pub fn linkerd(cfg: &nftmesh_model::linkerd::LinkerdConfig) -> Result<Self, CaptureError> {
        cfg.validate()?;
        let mut routing = TproxyRouting::sidecar(1337, 133, cfg.ipv6);
        routing.loopback_v6 = false;
        Ok(Capture {
            ruleset: nftmesh_model::linkerd::compile_linkerd(cfg),
            mode: InterceptionMode::Redirect,
            needs_routing: false,
            routing,
            migration: Migration::None,
            owner: TableOwner::None,
            proxy_uids: cfg.proxy_uid.into_iter().collect(),
            proxy_port: cfg.outgoing_proxy_port,
        })
    }

    /// This capture, taking over from Istio's iptables rules as `migration` says when
    /// installed.
    pub fn migrating(mut self, migration: Migration) -> Self {
        self.migration = migration;
        self
    }

    /// This capture, its tables owned by the installing handle's netfilter socket when
    /// installed (nf_tables' table flags, see [`TableOwner`]): then only that
    /// [`crate::Namespace`] handle can change or delete them (`nft flush table`, `nft delete
    /// table` or another process's install fail with `EPERM`), and with
    /// [`TableOwner::OwnerPersist`] they stay when the handle closes (or its process dies),
    /// ownerless, until the next owned install claims them. Installed with the flags asked
    /// for where the kernel has them ([`crate::Report::table_owner`] says what was used), and
    /// without any where it lacks them: [`TableOwner::OwnerPersist`] never falls back to
    /// [`TableOwner::Owner`], whose tables would vanish with the process and leave the
    /// namespace uncaptured.
    ///
    /// ```
    /// use nftmesh::{Capture, CaptureConfig, TableOwner};
    ///
    /// let capture = Capture::new(&CaptureConfig::sidecar())
    ///     .unwrap()
    ///     .with_owner(TableOwner::OwnerPersist);
    /// assert_eq!(capture.owner(), TableOwner::OwnerPersist);
    /// ```
    pub fn with_owner(mut self, owner: TableOwner) -> Self {
        self.owner = owner;
        self
    }

    /// The table ownership it asks for ([`Capture::with_owner`]; [`TableOwner::None`] by
    /// default).
    pub fn owner(&self) -> TableOwner {
        self.owner
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

    /// The policy routing the capture needs (`fwmark MARK lookup TABLE` and a local default
    /// route in TABLE): sidecar TPROXY mode and ambient; `None` in sidecar REDIRECT mode.
    pub fn tproxy_routing(&self) -> Option<TproxyRouting> {
        self.needs_routing.then_some(self.routing)
    }

    /// The mark and route table of the TPROXY routing, whatever the mode: what installing a
    /// REDIRECT capture removes when it finds it (left by an earlier TPROXY install).
    pub fn routing_settings(&self) -> TproxyRouting {
        self.routing
    }

    /// The policy routings this capture does not want but an earlier install of the other
    /// sidecar mode or of the other kind (sidecar, ambient) leaves: installing it removes them
    /// where found.
    pub fn stale_routings(&self) -> Vec<TproxyRouting> {
        let ipv6 = self.routing.ipv6;
        let sidecar_default = TproxyRouting::sidecar(1337, 133, ipv6);
        let ambient_default = TproxyRouting::ambient(0x111, 0xfff, 100, ipv6);
        let mut out = Vec::new();
        if !self.needs_routing {
            out.push(self.routing);
        }
        for r in [sidecar_default, ambient_default] {
            let wanted =
                self.needs_routing && (r.mark, r.table) == (self.routing.mark, self.routing.table);
            if !wanted && !out.iter().any(|o| (o.mark, o.table) == (r.mark, r.table)) {
                out.push(r);
            }
        }
        out
    }

    /// Whether `::6/128` goes on `lo` (sidecar with IPv6, in both modes, as Istio adds it).
    pub fn loopback_v6(&self) -> bool {
        self.routing.loopback_v6
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
