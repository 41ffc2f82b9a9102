//! [`Namespace`]: a handle on one network namespace that keeps its netlink sockets open, and
//! installs, checks, verifies and removes a [`Capture`] there.

use crate::capture::{owned_tables, Capture, Migration};
use crate::CaptureError;
use nftmesh_model::diff::Difference;
use nftmesh_model::ruleset::{Family, Ruleset};
use nftmesh_netlink::routes::{Routing, RoutingState, TproxyRouting};
use nftmesh_netlink::Removal;
use nftmesh_netlink::{netns, Connection, LiveTable, NetlinkError, TableOwner};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// What [`Namespace::install`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Rules installed.
    pub rules: usize,
    /// Tables installed.
    pub tables: usize,
    /// Messages in the one nf_tables transaction (begin and end included).
    pub messages: usize,
    /// Bytes of that transaction.
    pub bytes: usize,
    /// Attempts (more than one when another writer committed meanwhile).
    pub attempts: u32,
    /// nftmesh tables the capture no longer has, deleted in the same transaction.
    pub deleted_tables: Vec<String>,
    /// Chains deleted in the same transaction (stale ones, and Istio's when migrating).
    pub deleted_chains: Vec<String>,
    /// Whether TPROXY routing was installed before the transaction.
    pub routing_installed: bool,
    /// Whether stale TPROXY routing (of an earlier TPROXY install) was removed after it.
    pub routing_removed: bool,
    /// With migration: jump rules to Istio's chains removed in the same transaction.
    pub migrated_jumps: usize,
    /// With migration: other rules left in the iptables-nft nat/mangle/raw tables.
    pub iptables_rules_left: usize,
    /// The ownership the tables were declared with: the capture's
    /// ([`Capture::with_owner`]) where the kernel has those flags, [`TableOwner::None`]
    /// where it does not. Owned tables belong to the handle's socket
    /// ([`Namespace::netlink_port_id`]).
    pub table_owner: TableOwner,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "applied {} rule(s) in {} table(s): one transaction of {} messages, {} bytes",
            self.rules, self.tables, self.messages, self.bytes
        )?;
        for t in &self.deleted_tables {
            write!(f, "\ndeleted table {t}")?;
        }
        for c in &self.deleted_chains {
            write!(f, "\ndeleted chain {c}")?;
        }
        if self.routing_removed {
            write!(f, "\nremoved the TPROXY routing")?;
        }
        match self.table_owner {
            TableOwner::None => {}
            TableOwner::Owner => write!(f, "\ntables owned by this handle's socket")?,
            TableOwner::OwnerPersist => write!(
                f,
                "\ntables owned by this handle's socket, kept when it closes"
            )?,
        }
        Ok(())
    }
}

/// One way the live namespace differs from a capture ([`Namespace::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// The nf_tables tables differ.
    Rules(Difference),
    /// The TPROXY routing the capture needs is (partly) missing.
    MissingRouting(RoutingState),
    /// TPROXY routing is present although the capture is in REDIRECT mode.
    ExtraRouting(RoutingState),
    /// `::6` is missing from `lo` although the capture has IPv6 on.
    MissingLoopbackV6,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drift::Rules(d) => write!(f, "{d}"),
            Drift::MissingRouting(s) => write!(f, "TPROXY routing incomplete: {s:?}"),
            Drift::ExtraRouting(s) => write!(f, "TPROXY routing present in REDIRECT mode: {s:?}"),
            Drift::MissingLoopbackV6 => write!(f, "::6/128 is missing on lo"),
        }
    }
}

/// What [`Namespace::remove`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// Tables deleted (one transaction).
    pub tables: usize,
}

pub(crate) struct Sockets {
    pub(crate) conn: Connection,
    pub(crate) routing: Routing,
    /// The TPROXY routing (mark, table) this handle last saw absent: set after a REDIRECT
    /// install found or removed it, cleared by a TPROXY install. Spares the routing dumps on
    /// every later REDIRECT install through this handle.
    no_tproxy_routing: Vec<(u32, u32)>,
}

/// A handle on one network namespace: its netfilter and rtnetlink sockets, opened inside the
/// namespace once (on a helper thread; the caller's thread never changes namespace) and kept
/// open. Use it from any thread; operations on one handle run one at a time. Keeping the
/// handle spares the kernel's socket release (milliseconds) on every operation, and lets a
/// replace go out in one round trip.
///
/// ```no_run
/// use nftmesh::{Capture, CaptureConfig, Namespace};
///
/// let ns = Namespace::open("/var/run/netns/pod1")?;
/// let report = ns.install(&Capture::new(&CaptureConfig::sidecar())?)?;
/// println!("{report}");
/// # Ok::<(), nftmesh::CaptureError>(())
/// ```
pub struct Namespace {
    path: Option<PathBuf>,
    sockets: Mutex<Sockets>,
}

fn open_sockets() -> Result<Sockets, NetlinkError> {
    Ok(Sockets {
        conn: Connection::open()?,
        routing: Routing::open()?,
        no_tproxy_routing: Vec::new(),
    })
}

impl Namespace {
    /// A handle on the network namespace at `path` (`/proc/PID/ns/net`,
    /// `/var/run/netns/NAME`).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, CaptureError> {
        let path = path.into();
        let sockets = netns::run_in(&path, open_sockets)??;
        Ok(Namespace {
            path: Some(path),
            sockets: Mutex::new(sockets),
        })
    }

    /// [`Namespace::open`], also running `f` inside the namespace, on the same helper thread
    /// (for a caller that opens sockets of its own there: one namespace switch for both).
    pub fn open_with<T: Send + 'static>(
        path: impl Into<PathBuf>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<(Self, T), CaptureError> {
        let path = path.into();
        let (sockets, extra) = netns::run_in(&path, move || open_sockets().map(|s| (s, f())))??;
        Ok((
            Namespace {
                path: Some(path),
                sockets: Mutex::new(sockets),
            },
            extra,
        ))
    }

    /// A handle on the calling thread's own network namespace.
    pub fn current() -> Result<Self, CaptureError> {
        Ok(Namespace {
            path: None,
            sockets: Mutex::new(open_sockets()?),
        })
    }

    /// [`Namespace::open`] for `Some(path)`, [`Namespace::current`] for `None`.
    pub fn open_or_current(path: Option<&Path>) -> Result<Self, CaptureError> {
        match path {
            Some(p) => Self::open(p),
            None => Self::current(),
        }
    }

    /// The namespace's path; `None` for the caller's own namespace.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Sockets> {
        // A panic while holding the lock leaves the sockets usable: every operation reads
        // the state it needs from the kernel or refuses stale state by generation.
        self.sockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Run `f` inside the namespace (on a helper thread) or here, for work that must create
    /// sockets or read `/proc` there.
    fn inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CaptureError> {
        Ok(netns::run_in_or_here(self.path.as_deref(), f)?)
    }

    /// Make the namespace hold exactly `capture`: TPROXY routing (and `::6` on `lo` with IPv6)
    /// first, so that rules needing it never run without it; then ONE nf_tables transaction
    /// that replaces nftmesh's tables in place, deletes the nftmesh tables `capture` does not
    /// have (a REDIRECT ↔ TPROXY switch is atomic) and, when migrating, Istio's iptables
    /// chains; then, in REDIRECT mode, the TPROXY routing an earlier install left (looked for
    /// unless this handle already saw it absent and no [`Namespace::check`] has found it
    /// since). Tables nftmesh does not own are never touched. If the transaction fails nothing
    /// of it applies.
    ///
    /// With [`Capture::with_owner`], the tables are declared owned by this handle's socket
    /// where the kernel has the flags (see [`Report::table_owner`]; the kernel's support is
    /// found once per process, [`Connection::table_owner_support`]): a re-install through
    /// this handle replaces them in place, an orphan left by a closed handle or a killed
    /// process is claimed in place, and tables anyone may change are deleted and re-created
    /// owned in the same transaction. Tables another live socket owns are refused
    /// ([`NetlinkError::is_owned_elsewhere`]) and nothing is applied.
    pub fn install(&self, capture: &Capture) -> Result<Report, CaptureError> {
        self.install_locked(&mut self.lock(), capture)
    }

    /// Check `capture` ([`Namespace::check`]) and, where it differs, install it again in one
    /// transaction planned against the state just read (a keeper's repair after another
    /// process's change: the commit cache of this handle is stale then, and would cost a
    /// refused batch and a second send). `None` when nothing differed; else the differences
    /// repaired and the install's report. One operation on the handle: nothing of this
    /// handle's runs between the check and the install.
    pub fn repair(&self, capture: &Capture) -> Result<Option<(Vec<Drift>, Report)>, CaptureError> {
        let mut s = self.lock();
        let drift = check_locked(&mut s, capture)?;
        if drift.is_empty() {
            return Ok(None);
        }
        s.conn.forget_commit();
        let report = self.install_locked(&mut s, capture)?;
        Ok(Some((drift, report)))
    }

    fn install_locked(&self, s: &mut Sockets, capture: &Capture) -> Result<Report, CaptureError> {
        let owner = supported_owner(capture.owner())?;
        let migrate = capture.migration();
        if migrate == Migration::FromIptables {
            let legacy = self.inside(crate::migrate::legacy_tables)?;
            if !legacy.is_empty() {
                return Err(CaptureError::LegacyTables(legacy));
            }
        }
        let mut report = Report::default();
        if let Some(r) = capture.tproxy_routing() {
            s.routing.ensure(&r)?;
            report.routing_installed = true;
        } else if capture.loopback_v6() {
            // As Istio does in both modes: ::6 on lo, the proxy's IPv6 passthrough source.
            s.routing.ensure_loopback_v6()?;
        }
        let keep = capture.tables();
        let stale: Vec<(Family, String)> = owned_tables()
            .into_iter()
            .filter(|t| !keep.contains(t))
            .collect();
        let mut found = None;
        let applied = s.conn.apply_owned(capture.ruleset(), owner, |conn, live| {
            let mut removals: Vec<Removal> = stale
                .iter()
                .filter(|(f, n)| live.tables.iter().any(|l| l.family == *f && &l.name == n))
                .map(|(family, table)| Removal::Table {
                    family: *family,
                    table: table.clone(),
                })
                .collect();
            if migrate != Migration::None {
                let istio = crate::migrate::find_istio_iptables(conn)?;
                removals.extend(istio.removals.iter().cloned());
                found = Some(istio);
            }
            Ok(removals)
        })?;
        report.rules = capture.ruleset().rule_count();
        report.tables = capture.ruleset().tables.len();
        report.messages = applied.messages;
        report.bytes = applied.bytes;
        report.attempts = applied.attempts;
        report.deleted_tables = applied.deleted_tables;
        report.deleted_chains = applied.deleted_chains;
        report.table_owner = owner;
        if let Some(istio) = found {
            report.migrated_jumps = istio
                .removals
                .iter()
                .filter(|x| matches!(x, Removal::Rule { .. }))
                .count();
            report.iptables_rules_left = istio.leftover_rules;
        }
        if let Some(r) = capture.tproxy_routing() {
            s.no_tproxy_routing.retain(|k| *k != (r.mark, r.table));
        }
        for r in capture.stale_routings() {
            if s.no_tproxy_routing.contains(&(r.mark, r.table)) {
                continue;
            }
            // One rule dump: an earlier install of the other mode or kind left its fwmark
            // rule (and route).
            if s.routing.has_tproxy_rule(&r)? {
                s.routing.remove_tproxy(&r)?;
                report.routing_removed = true;
            }
            s.no_tproxy_routing.push((r.mark, r.table));
        }
        Ok(report)
    }

    /// Replace exactly the tables of `ruleset` (whatever their names) in ONE transaction and
    /// leave every other table alone: a native `iptables-restore` of translated iptables text
    /// (see [`crate::iptables`]). Not for captures, which [`Namespace::install`] installs.
    pub fn restore(&self, ruleset: &Ruleset) -> Result<nftmesh_netlink::ApplyReport, CaptureError> {
        Ok(self.lock().conn.apply(ruleset)?)
    }

    /// nftmesh's tables as the kernel holds them, decoded into the model.
    pub fn live(&self) -> Result<Ruleset, CaptureError> {
        Ok(self.lock().conn.dump_ruleset(&owned_tables())?)
    }

    /// What the counters of nftmesh's live tables say: every counted rule with its packets,
    /// bytes and [`nftmesh_model::stats::Reason`], summed by reason with
    /// [`nftmesh_model::stats::Stats::total`] (captured outbound, inbound, DNS, passthrough
    /// by why). Rules and counts come from one dump.
    pub fn stats(&self) -> Result<nftmesh_model::stats::Stats, CaptureError> {
        let (ruleset, rules) = self.lock().conn.dump_counted(&owned_tables())?;
        let counted = rules
            .into_iter()
            .filter_map(|r| r.counter.map(|c| (r.place, c)));
        Ok(nftmesh_model::stats::Stats::new(&ruleset, counted))
    }

    /// How the namespace differs from `capture`: its tables (compared in canonical form, see
    /// [`nftmesh_model::diff`]), the TPROXY routing and `::6` on `lo`. Empty when it holds
    /// exactly `capture`.
    pub fn check(&self, capture: &Capture) -> Result<Vec<Drift>, CaptureError> {
        check_locked(&mut self.lock(), capture)
    }

    /// nftmesh's tables as the kernel lists them, with their flags and owning socket
    /// ([`LiveTable::owner`]: compare with [`Namespace::netlink_port_id`] to tell this
    /// handle's tables from another process's, and [`LiveTable::is_orphan`] for tables whose
    /// owner is gone).
    pub fn live_tables(&self) -> Result<Vec<LiveTable>, CaptureError> {
        let owned = owned_tables();
        let mut tables = self.lock().conn.tables()?;
        tables.retain(|t| owned.iter().any(|(f, n)| t.family == *f && t.name == *n));
        Ok(tables)
    }

    /// The netlink port id of this handle's netfilter socket: the owner the kernel reports
    /// for the tables it installed owned ([`LiveTable::owner`]), and the port id in the
    /// notifications of its commits (how a monitor tells this handle's commits from others').
    /// Fixed for the handle's life.
    pub fn netlink_port_id(&self) -> u32 {
        self.lock().conn.port_id()
    }

    /// Check capture with real connections, as Istio's validation container does (run it
    /// before the proxy listens): see [`crate::verify`].
    pub fn verify(
        &self,
        probe: &crate::verify::Probe,
    ) -> Result<crate::verify::Verified, CaptureError> {
        let probe = probe.clone();
        self.inside(move || crate::verify::run(&probe))?
    }

    /// `::6` on `lo` when `capture` has IPv6 on (as [`Namespace::install`] puts it, the proxy's
    /// IPv6 passthrough source), and nothing else: for a capture whose inbound is not in
    /// nf_tables. Whether it is wanted.
    pub fn ensure_loopback_v6(&self, capture: &Capture) -> Result<bool, CaptureError> {
        if !capture.loopback_v6() {
            return Ok(false);
        }
        self.lock().routing.ensure_loopback_v6()?;
        Ok(true)
    }

    /// Delete every nftmesh table (one transaction), leaving routes and addresses (`::6`)
    /// as they are; how many were deleted.
    pub fn remove_tables(&self) -> Result<usize, CaptureError> {
        Ok(self.lock().conn.delete_tables(&owned_tables())?)
    }

    /// Delete every nftmesh table (one transaction) and the TPROXY routing and `::6` that
    /// `capture`'s settings name. Every other table, rule and route stays. Owned tables are
    /// deleted through the handle that owns them, and orphans through any; tables another
    /// live socket owns are refused ([`NetlinkError::is_owned_elsewhere`]), none is deleted.
    pub fn remove(&self, capture: &Capture) -> Result<Removed, CaptureError> {
        let mut s = self.lock();
        let tables = s.conn.delete_tables(&owned_tables())?;
        let r = capture.routing_settings();
        s.routing.remove(&r)?;
        s.no_tproxy_routing.retain(|k| *k != (r.mark, r.table));
        s.no_tproxy_routing.push((r.mark, r.table));
        Ok(Removed { tables })
    }

    /// Remove whatever nftmesh owns here, whatever configuration installed it: every nftmesh
    /// table (one transaction), the policy routing of `capture` when the caller still knows
    /// it, the default sidecar (mark 1337, table 133) and ambient (0x111/0xfff, table 100)
    /// routings, and `::6` on `lo`. For a teardown that must not depend on a configuration
    /// that may since have changed or broken (a CNI DEL). Absent pieces are fine. Tables
    /// another live socket owns are refused as in [`Namespace::remove`].
    pub fn remove_owned(&self, capture: Option<&Capture>) -> Result<Removed, CaptureError> {
        let mut s = self.lock();
        let tables = s.conn.delete_tables(&owned_tables())?;
        let mut routings = vec![
            TproxyRouting::sidecar(1337, 133, true),
            TproxyRouting::ambient(0x111, 0xfff, 100, true),
        ];
        if let Some(c) = capture {
            routings.insert(0, c.routing_settings());
        }
        let mut done: Vec<(u32, u32)> = Vec::new();
        for r in routings {
            if !done.contains(&(r.mark, r.table)) {
                s.routing.remove_tproxy(&r)?;
                done.push((r.mark, r.table));
            }
        }
        s.routing.remove_loopback_v6()?;
        s.no_tproxy_routing.clear();
        s.no_tproxy_routing.extend(done);
        Ok(Removed { tables })
    }

    /// What the kernel has of the TPROXY routing and `::6` that `capture`'s settings name.
    pub fn routing(&self, capture: &Capture) -> Result<RoutingState, CaptureError> {
        Ok(self.lock().routing.state(&capture.routing_settings())?)
    }

    /// The nf_tables ruleset generation: one more after each committed transaction.
    pub fn generation(&self) -> Result<u32, CaptureError> {
        Ok(self.lock().conn.generation()?)
    }

    /// For a command about to exit: close the netfilter socket only after this process has
    /// exited, so that the kernel's deferred cleanup of the committed transaction does not
    /// delay the exit (see [`Connection::close_after_exit`]).
    pub fn close_after_exit(self) {
        let s = self
            .sockets
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.conn.close_after_exit();
    }
}

/// The ownership `wanted` is installed with here: itself where the kernel has its flags,
/// none where it lacks them (never owner without persist in place of owner + persist).
fn supported_owner(wanted: TableOwner) -> Result<TableOwner, CaptureError> {
    if wanted == TableOwner::None {
        return Ok(TableOwner::None);
    }
    let supported = Connection::table_owner_support()?;
    Ok(if wanted <= supported {
        wanted
    } else {
        TableOwner::None
    })
}

/// [`Namespace::check`] on sockets already locked.
fn check_locked(s: &mut Sockets, capture: &Capture) -> Result<Vec<Drift>, CaptureError> {
    let live = s.conn.dump_ruleset(&owned_tables())?;
    let mut out: Vec<Drift> = nftmesh_model::diff::diff(capture.ruleset(), &live)
        .into_iter()
        .map(Drift::Rules)
        .collect();
    let r = capture.routing_settings();
    let state = s.routing.state(&r)?;
    let want: &[u8] = if r.ipv6 { &[4, 6] } else { &[4] };
    match capture.tproxy_routing() {
        Some(_) if state.rules != want || state.local_routes != want => {
            out.push(Drift::MissingRouting(state.clone()))
        }
        None if !state.rules.is_empty() || !state.local_routes.is_empty() => {
            // The next install removes it again (it no longer assumes it absent).
            s.no_tproxy_routing.clear();
            out.push(Drift::ExtraRouting(state.clone()))
        }
        _ => {}
    }
    if capture.loopback_v6() && !state.loopback_v6 {
        out.push(Drift::MissingLoopbackV6);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_handle_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<super::Namespace>();
    }
}
