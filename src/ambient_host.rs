//! Istio ambient's node rules: the SNAT of kubelet health probes to ambient pods
//! ([`HostCapture`]), installed into the node's namespace with [`Namespace::install_host`]; the
//! probe address sets are maintained element by element ([`Namespace::add_probes`],
//! [`Namespace::remove_probes`]) and survive re-installs and [`Namespace::remove_host`], as
//! Istio's do (it flushes the table's rules, not its sets).

use crate::namespace::{Namespace, Report};
use crate::CaptureError;
use nftmesh_model::ambient::{
    compile_host, AmbientHostConfig, HOST_TABLE, PROBE_SET_V4, PROBE_SET_V6,
};
use nftmesh_model::ruleset::{Family, Ruleset, Set, SetElement, SetKeyType, Table};
use std::net::IpAddr;

/// The node's probe SNAT, compiled from an [`AmbientHostConfig`].
///
/// ```
/// use nftmesh::ambient::{AmbientHostConfig, HostCapture};
///
/// let host = HostCapture::new(&AmbientHostConfig::new(1000));
/// assert!(host.render().contains("snat ip to 169.254.7.127"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCapture {
    ruleset: Ruleset,
}

impl HostCapture {
    /// The host rules for `cfg`.
    pub fn new(cfg: &AmbientHostConfig) -> Self {
        HostCapture {
            ruleset: compile_host(cfg),
        }
    }

    /// The table it installs (`inet istio-ambient-nat`: the probe sets and chain `postrouting`).
    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    /// The table as an `nft -f` script.
    pub fn render(&self) -> String {
        nftmesh_model::render(&self.ruleset)
    }

    /// The table with its sets and no chain: what is left after [`Namespace::remove_host`].
    fn sets_only(&self) -> Ruleset {
        let mut rs = self.ruleset.clone();
        for t in &mut rs.tables {
            t.chains.clear();
        }
        rs
    }
}

/// A probe set holding `addrs` of one family, for an element update.
fn probe_set(v6: bool, addrs: &[IpAddr]) -> Set {
    Set {
        name: if v6 { PROBE_SET_V6 } else { PROBE_SET_V4 }.into(),
        key_type: if v6 {
            SetKeyType::Ipv6Addr
        } else {
            SetKeyType::Ipv4Addr
        },
        interval: false,
        elements: addrs
            .iter()
            .filter(|a| a.is_ipv6() == v6)
            .map(|a| SetElement::Prefix((*a).into()))
            .collect(),
    }
}

impl Namespace {
    /// Install the node's probe SNAT (one transaction), keeping the probe sets' elements.
    pub fn install_host(&self, host: &HostCapture) -> Result<Report, CaptureError> {
        let r = self.lock().conn.apply_keeping_sets(host.ruleset())?;
        Ok(Report {
            rules: host.ruleset().rule_count(),
            tables: host.ruleset().tables.len(),
            messages: r.messages,
            bytes: r.bytes,
            attempts: r.attempts,
            deleted_chains: r.deleted_chains,
            ..Report::default()
        })
    }

    /// Remove the node's probe SNAT rule and chain (one transaction); the table and the probe
    /// sets stay with their elements, as Istio's cleanup flushes only the rules.
    pub fn remove_host(&self, host: &HostCapture) -> Result<Report, CaptureError> {
        let sets = host.sets_only();
        let r = self.lock().conn.apply_keeping_sets(&sets)?;
        Ok(Report {
            tables: sets.tables.len(),
            messages: r.messages,
            bytes: r.bytes,
            attempts: r.attempts,
            deleted_chains: r.deleted_chains,
            ..Report::default()
        })
    }

    /// Add pod addresses to the probe sets (IPv4 and IPv6 to theirs), in one small
    /// transaction per family that touches no rule.
    pub fn add_probes(&self, addrs: &[IpAddr]) -> Result<(), CaptureError> {
        self.update_probes(addrs, true)
    }

    /// Remove pod addresses from the probe sets, as [`Namespace::add_probes`].
    pub fn remove_probes(&self, addrs: &[IpAddr]) -> Result<(), CaptureError> {
        self.update_probes(addrs, false)
    }

    fn update_probes(&self, addrs: &[IpAddr], add: bool) -> Result<(), CaptureError> {
        let mut s = self.lock();
        for v6 in [false, true] {
            let set = probe_set(v6, addrs);
            if !set.elements.is_empty() {
                s.conn.update_set(Family::Inet, HOST_TABLE, &set, add)?;
            }
        }
        Ok(())
    }

    /// The addresses in the probe sets now.
    pub fn probes(&self) -> Result<Vec<IpAddr>, CaptureError> {
        let live = self
            .lock()
            .conn
            .dump_ruleset(&[(Family::Inet, HOST_TABLE.to_string())])?;
        Ok(live
            .tables
            .iter()
            .flat_map(|t: &Table| &t.sets)
            .flat_map(|s| &s.elements)
            .filter_map(|e| match e {
                SetElement::Prefix(n) => Some(n.addr()),
                _ => None,
            })
            .collect())
    }
}
