//! The node's table after the probe SNAT is installed: what cleaning it up leaves
//! ([`host_flushed`], reported by [`HostCleanup`]) and what removing probe addresses deletes
//! ([`ProbeRemoval`]). Both are decided from the live table alone, so neither needs the node's
//! settings (kubelet's uid, IPv6 on or off).
//!
//! Istio's node cleanup (`DeleteHostRules` in `cni/pkg/nftables/nftables.go`, istio/istio
//! 6e79bf77c49bcf97f2dc10eb162b49ae3102eccc, unchanged at 86c9f01fd735fb01d8192f5bcaf0d424afb7f14c)
//! runs `flush table inet istio-ambient-nat`: the rules go, the chains stay, and both probe sets
//! (`istio-inpod-probes-v4`/`-v6`, created by `initializeSets` in `host_sets.go`) keep their
//! elements ("by using Flush, we only clear the chains and keep the set elements intact"). Only
//! the node agent's own shutdown flushes and deletes the sets.

use super::{HOST_TABLE, PROBE_SET_V4, PROBE_SET_V6};
use crate::ruleset::{SetElement, Table};
use std::fmt;
use std::net::IpAddr;

/// The live host table `live` with its rules flushed, as the desired state of a transaction
/// that keeps the elements of the sets it declares: the same chains (a base chain keeps its
/// hook, priority, type and policy) with no rule, and the same named sets declared with no
/// element, so that each keeps the elements it has live, whatever its family.
pub fn host_flushed(live: &Table) -> Table {
    let mut t = live.clone();
    for c in &mut t.chains {
        c.rules.clear();
    }
    for s in &mut t.sets {
        s.elements.clear();
    }
    t
}

/// What cleaning up the node's probe SNAT did (`flush table inet istio-ambient-nat`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCleanup {
    /// Whether the namespace has the host table; when it has not, nothing was changed (no
    /// table is created).
    pub table_found: bool,
    /// The rules flushed.
    pub rules_flushed: usize,
    /// The sets kept, each with the number of elements it holds.
    pub sets_kept: Vec<(String, usize)>,
}

impl HostCleanup {
    /// The report of cleaning up `live`, the host table as it was before (`None`: absent).
    pub fn of(live: Option<&Table>) -> Self {
        let Some(t) = live else {
            return HostCleanup::default();
        };
        HostCleanup {
            table_found: true,
            rules_flushed: t.chains.iter().map(|c| c.rules.len()).sum(),
            sets_kept: t
                .sets
                .iter()
                .map(|s| (s.name.clone(), s.elements.len()))
                .collect(),
        }
    }
}

impl fmt::Display for HostCleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.table_found {
            return write!(
                f,
                "no table inet {HOST_TABLE} in this namespace: the host rules are not \
                 installed here; nothing changed"
            );
        }
        write!(
            f,
            "flushed {} rule(s) of table inet {HOST_TABLE} (the probe SNAT); its chains stay",
            self.rules_flushed
        )?;
        if self.sets_kept.is_empty() {
            return write!(f, "; it has no probe set");
        }
        write!(f, " and so do its sets, with their addresses:")?;
        for (i, (name, n)) in self.sets_kept.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            let s = if *n == 1 { "" } else { "es" };
            write!(f, "{sep}{name} ({n} address{s})")?;
        }
        Ok(())
    }
}

/// The probe set an address belongs in: [`PROBE_SET_V6`] for IPv6, else [`PROBE_SET_V4`].
pub fn probe_set_for(addr: IpAddr) -> &'static str {
    if addr.is_ipv6() {
        PROBE_SET_V6
    } else {
        PROBE_SET_V4
    }
}

/// Which probe addresses a removal deletes, and why the others are left: each address asked
/// for lands in exactly one list (once, however often it was asked for).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeRemoval {
    /// In their probe set: deleted from it.
    pub removed: Vec<IpAddr>,
    /// Not in their probe set: nothing to delete.
    pub not_in_set: Vec<IpAddr>,
    /// Their probe set does not exist in the namespace (the host rules are not installed
    /// there, or, for IPv6, were installed without IPv6): nothing to delete.
    pub no_set: Vec<IpAddr>,
}

impl ProbeRemoval {
    /// Sort `addrs` by what the live host table `live` (`None`: absent) holds.
    pub fn plan(live: Option<&Table>, addrs: &[IpAddr]) -> Self {
        let mut out = ProbeRemoval::default();
        let mut seen: Vec<IpAddr> = Vec::with_capacity(addrs.len());
        for a in addrs {
            if seen.contains(a) {
                continue;
            }
            seen.push(*a);
            let set = live.and_then(|t| t.sets.iter().find(|s| s.name == probe_set_for(*a)));
            let Some(set) = set else {
                out.no_set.push(*a);
                continue;
            };
            let holds = set.elements.iter().any(|e| {
                matches!(e, SetElement::Prefix(n)
                    if n.addr() == *a && n.prefix_len() == n.max_prefix_len())
            });
            if holds {
                out.removed.push(*a);
            } else {
                out.not_in_set.push(*a);
            }
        }
        out
    }
}

impl fmt::Display for ProbeRemoval {
    /// One line per address: removed, not in its set, or its set missing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines = Vec::new();
        for a in &self.removed {
            lines.push(format!("removed {a} from set {}", probe_set_for(*a)));
        }
        for a in &self.not_in_set {
            lines.push(format!(
                "{a} was not in set {}: nothing to remove",
                probe_set_for(*a)
            ));
        }
        for a in &self.no_set {
            let set = probe_set_for(*a);
            let why = if a.is_ipv6() {
                "the host rules are not installed in this namespace, or were installed without IPv6"
            } else {
                "the host rules are not installed in this namespace"
            };
            lines.push(format!(
                "{a} was not removed: table inet {HOST_TABLE} has no set {set} here ({why}); \
                 nothing to remove"
            ));
        }
        write!(f, "{}", lines.join("\n"))
    }
}
