//! Istio ambient's node rules: the SNAT of kubelet health probes to ambient pods
//! ([`HostCapture`]), installed into the node's namespace with [`Namespace::install_host`]; the
//! probe address sets are maintained element by element ([`Namespace::add_probes`],
//! [`Namespace::remove_probes`]) and survive re-installs and [`Namespace::remove_host`], as
//! Istio's do: its node cleanup (`DeleteHostRules`, `cni/pkg/nftables/nftables.go`, istio/istio
//! 6e79bf77c49bcf97f2dc10eb162b49ae3102eccc) is `flush table inet istio-ambient-nat`, which
//! takes the rules and leaves the chains and both families' sets with their elements.

use crate::namespace::{Namespace, Report};
use crate::CaptureError;
use nftmesh_model::ambient::{
    compile_host, host_flushed, AmbientHostConfig, HostCleanup, ProbeRemoval, HOST_TABLE,
    PROBE_SET_V4, PROBE_SET_V6,
};
use nftmesh_model::ruleset::{Family, Ruleset, Set, SetElement, SetKeyType, Table};
use nftmesh_netlink::Connection;
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

    /// Remove the node's probe SNAT as Istio's node cleanup does (`flush table inet
    /// istio-ambient-nat`), in one transaction: every rule of the host table goes; its chains
    /// and its sets stay, the probe sets of both families with their elements, whatever the
    /// node's settings (none is needed). A namespace without the host table is left as it is
    /// ([`HostCleanup::table_found`] is false).
    pub fn remove_host(&self) -> Result<HostCleanup, CaptureError> {
        let mut s = self.lock();
        let Some(live) = host_table(&mut s.conn)? else {
            return Ok(HostCleanup::of(None));
        };
        let flushed = Ruleset {
            tables: vec![host_flushed(&live)],
        };
        s.conn.apply_keeping_sets(&flushed)?;
        Ok(HostCleanup::of(Some(&live)))
    }

    /// Add pod addresses to the probe sets (IPv4 and IPv6 to theirs), in one small
    /// transaction per family that touches no rule.
    pub fn add_probes(&self, addrs: &[IpAddr]) -> Result<(), CaptureError> {
        update_probes(&mut self.lock().conn, addrs, true)
    }

    /// Remove pod addresses from the probe sets, in one small transaction per family that
    /// touches no rule. Only addresses their set holds are deleted; an address not in its set,
    /// or whose set does not exist, is left (no error) and listed as such in the answer.
    pub fn remove_probes(&self, addrs: &[IpAddr]) -> Result<ProbeRemoval, CaptureError> {
        let mut s = self.lock();
        let live = host_table(&mut s.conn)?;
        let plan = ProbeRemoval::plan(live.as_ref(), addrs);
        update_probes(&mut s.conn, &plan.removed, false)?;
        Ok(plan)
    }

    /// The addresses in the probe sets now.
    pub fn probes(&self) -> Result<Vec<IpAddr>, CaptureError> {
        let live = host_table(&mut self.lock().conn)?;
        Ok(live
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

/// The host table as it is live (`None`: the namespace has none).
fn host_table(conn: &mut Connection) -> Result<Option<Table>, CaptureError> {
    let live = conn.dump_ruleset(&[(Family::Inet, HOST_TABLE.to_string())])?;
    Ok(live.tables.into_iter().next())
}

/// Add (`add`) or delete `addrs` in their probe sets: one transaction per family with any.
fn update_probes(conn: &mut Connection, addrs: &[IpAddr], add: bool) -> Result<(), CaptureError> {
    for v6 in [false, true] {
        let set = probe_set(v6, addrs);
        if !set.elements.is_empty() {
            conn.update_set(Family::Inet, HOST_TABLE, &set, add)?;
        }
    }
    Ok(())
}
