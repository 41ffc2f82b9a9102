//! The pods the agent keeps, as plain state over a small kernel interface ([`PodKernel`]): the
//! real one is a pod's [`nftmesh::Namespace`] handle with its capture (in `server`), a fake
//! one makes every transition testable without root. Each pod is its namespace's identity;
//! the state says what was installed, what a notification marked, what was repaired and why;
//! the I/O loop (`server`) decides when, and logs what these functions return.

use crate::identity::NetnsId;
use crate::registry::Record;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Repair records kept per pod (the count goes on).
pub const REPAIR_LOG: usize = 16;

/// A repair to run off the I/O loop (on a worker): it touches only the pod's namespace.
pub type RepairJob = Box<dyn FnOnce() -> Result<Option<Repaired>, String> + Send>;

/// What the state needs of one pod's namespace.
pub trait PodKernel {
    /// Check the pod's capture and, where it differs, install it again in one transaction:
    /// `None` when nothing differed.
    fn repair(&mut self) -> Result<Option<Repaired>, String>;
    /// [`PodKernel::repair`] as a job for another thread.
    fn repair_job(&self) -> RepairJob;
    /// Remove the pod's capture; the tables removed.
    fn remove(&mut self) -> Result<usize, String>;
    /// What `status` shows of the pod's backend beyond nf_tables (an eBPF pod's cgroup and
    /// links); `None` for an nf_tables pod.
    fn backend(&self) -> Option<Value> {
        None
    }
}

/// A repair that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// Every difference repaired, as text.
    pub differences: Vec<String>,
    /// The differences counted ([`crate::summary::Summary`]).
    pub summary: String,
    /// Whether the tables are owned after it.
    pub owned: bool,
}

/// One repair, as `status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RepairRecord {
    /// When (seconds since the epoch).
    pub at: f64,
    /// `KIND: WHY: DIFFERENCES` (every difference).
    pub cause: String,
    /// The differences counted.
    pub summary: String,
}

/// One kept pod.
#[derive(Debug)]
pub struct Pod<K> {
    /// Its record, as persisted.
    pub record: Record,
    /// The record's file.
    pub file: PathBuf,
    /// Its namespace.
    pub kernel: K,
    /// Whether its tables are owned (the last install's).
    pub owned: bool,
    /// When it was last checked (seconds since the epoch).
    pub last_check: Option<f64>,
    /// The latest repairs.
    pub repairs: VecDeque<RepairRecord>,
    /// Every repair, counted.
    pub repair_count: u64,
    /// The last operation's error, cleared by a repair.
    pub last_error: Option<String>,
    /// Marked for a check: since when, as what kind of repair, and why (the first mark of a
    /// burst).
    pub dirty: Option<Mark>,
    /// A repair of it is running on a worker: no other starts, and requests about it wait.
    pub in_flight: bool,
    /// Which keeping of the namespace this is: a repair begun for an earlier one (the pod
    /// forgotten and the namespace registered again meanwhile) is not recorded on it.
    epoch: u64,
}

/// Why and since when a pod is to be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// When it was marked.
    pub since: Instant,
    /// The repair's kind (`notification`, `resync`, `adopt`), counted in the metrics.
    pub kind: &'static str,
    /// Why, in words.
    pub why: String,
    /// The keeping of the pod it was begun for (set by [`Pods::begin_repair`]).
    epoch: u64,
}

/// What [`Pods::repair`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum RepairOutcome {
    /// No such pod.
    Unknown,
    /// Checked: nothing differed.
    Clean,
    /// Repaired, `since` the mark (or the call).
    Repaired {
        /// The repair.
        repaired: Repaired,
        /// How long since the pod was marked.
        since: std::time::Duration,
    },
    /// The check or the install failed.
    Failed(String),
}

/// Every kept pod, by identity.
#[derive(Debug)]
pub struct Pods<K> {
    pods: BTreeMap<NetnsId, Pod<K>>,
    next_epoch: u64,
}

impl<K> Default for Pods<K> {
    fn default() -> Self {
        Pods {
            pods: BTreeMap::new(),
            next_epoch: 0,
        }
    }
}

impl<K: PodKernel> Pods<K> {
    /// Keep a pod whose capture is installed. A pod already kept under `id` is replaced (the
    /// caller registers one namespace once).
    pub fn insert(&mut self, id: NetnsId, record: Record, file: PathBuf, kernel: K, owned: bool) {
        self.next_epoch += 1;
        self.pods.insert(
            id,
            Pod {
                record,
                file,
                kernel,
                owned,
                last_check: None,
                repairs: VecDeque::new(),
                repair_count: 0,
                last_error: None,
                dirty: None,
                in_flight: false,
                epoch: self.next_epoch,
            },
        );
    }

    /// How many pods are kept.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Whether `id` is kept.
    pub fn contains(&self, id: NetnsId) -> bool {
        self.pods.contains_key(&id)
    }

    /// The pod `id`.
    pub fn get(&self, id: NetnsId) -> Option<&Pod<K>> {
        self.pods.get(&id)
    }

    /// The pod `id`, to change.
    pub fn get_mut(&mut self, id: NetnsId) -> Option<&mut Pod<K>> {
        self.pods.get_mut(&id)
    }

    /// Every pod, in identity order.
    pub fn iter(&self) -> impl Iterator<Item = (NetnsId, &Pod<K>)> {
        self.pods.iter().map(|(id, p)| (*id, p))
    }

    /// The pods' identities.
    pub fn ids(&self) -> Vec<NetnsId> {
        self.pods.keys().copied().collect()
    }

    /// The pod registered with the path `path` (for a namespace gone, which has no identity
    /// left to look up).
    pub fn find_by_path(&self, path: &Path) -> Option<NetnsId> {
        self.pods
            .iter()
            .find(|(_, p)| p.record.network_namespace == path)
            .map(|(id, _)| *id)
    }

    /// Mark `id` for a check (a repair of `kind`, `why`); a burst of marks before the check
    /// is one check, for the first one's reason and time (also while a repair runs: one more
    /// follows it).
    pub fn mark(&mut self, id: NetnsId, kind: &'static str, why: String) {
        if let Some(p) = self.pods.get_mut(&id) {
            if p.dirty.is_none() {
                p.dirty = Some(Mark {
                    since: Instant::now(),
                    kind,
                    why,
                    epoch: p.epoch,
                });
            }
        }
    }

    /// The marked pods whose repair can start now (none running for them).
    pub fn marked(&self) -> Vec<NetnsId> {
        self.pods
            .iter()
            .filter(|(_, p)| p.dirty.is_some() && !p.in_flight)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Start the repair of marked `id` on another thread: its mark (consumed) and the job;
    /// `None` when it is not kept, not marked, or a repair of it is running.
    pub fn begin_repair(&mut self, id: NetnsId) -> Option<(Mark, RepairJob)> {
        let p = self.pods.get_mut(&id)?;
        if p.in_flight || p.dirty.is_none() {
            return None;
        }
        let mut mark = p.dirty.take()?;
        mark.epoch = p.epoch;
        p.in_flight = true;
        Some((mark, p.kernel.repair_job()))
    }

    /// Whether a repair or another operation of `id` is running.
    pub fn in_flight(&self, id: NetnsId) -> bool {
        self.pods.get(&id).is_some_and(|p| p.in_flight)
    }

    /// Hold `id` for an operation running elsewhere (a check or a re-add on a worker): no
    /// repair starts until [`Pods::release`]. False when it is not kept or already held.
    pub fn hold(&mut self, id: NetnsId) -> bool {
        match self.pods.get_mut(&id) {
            Some(p) if !p.in_flight => {
                p.in_flight = true;
                true
            }
            _ => false,
        }
    }

    /// End the hold of [`Pods::hold`].
    pub fn release(&mut self, id: NetnsId) {
        if let Some(p) = self.pods.get_mut(&id) {
            p.in_flight = false;
        }
    }

    /// A check that found nothing different, at `now`.
    pub fn checked(&mut self, id: NetnsId, now: f64) {
        if let Some(p) = self.pods.get_mut(&id) {
            p.last_check = Some(now);
        }
    }

    /// A re-add installed `record`'s capture (its tables owned or not): the pod keeps it.
    pub fn replaced(&mut self, id: NetnsId, record: Record, owned: bool) {
        if let Some(p) = self.pods.get_mut(&id) {
            p.record = record;
            p.owned = owned;
            p.dirty = None;
        }
    }

    /// Record the end of the repair begun with `mark`: what it did ([`RepairOutcome`]).
    /// `Unknown` when the pod was forgotten meanwhile (even if its namespace was registered
    /// again since: a late result is never recorded on another keeping).
    pub fn end_repair(
        &mut self,
        id: NetnsId,
        mark: &Mark,
        result: Result<Option<Repaired>, String>,
        now: f64,
    ) -> RepairOutcome {
        let Some(p) = self.pods.get_mut(&id).filter(|p| p.epoch == mark.epoch) else {
            return RepairOutcome::Unknown;
        };
        p.in_flight = false;
        Self::record(p, mark.since, mark.kind, &mark.why, result, now)
    }

    /// Check `id` and repair it where it differs, here and now, recording the repair as
    /// `KIND: WHY`.
    pub fn repair(&mut self, id: NetnsId, kind: &str, why: &str, now: f64) -> RepairOutcome {
        let Some(p) = self.pods.get_mut(&id) else {
            return RepairOutcome::Unknown;
        };
        let since = p.dirty.take().map(|m| m.since).unwrap_or_else(Instant::now);
        let result = p.kernel.repair();
        Self::record(p, since, kind, why, result, now)
    }

    fn record(
        p: &mut Pod<K>,
        since: Instant,
        kind: &str,
        why: &str,
        result: Result<Option<Repaired>, String>,
        now: f64,
    ) -> RepairOutcome {
        match result {
            Ok(None) => {
                p.last_check = Some(now);
                RepairOutcome::Clean
            }
            Ok(Some(repaired)) => {
                p.last_check = Some(now);
                p.owned = repaired.owned;
                p.repairs.push_back(RepairRecord {
                    at: now,
                    cause: format!("{kind}: {why}: {}", repaired.differences.join("; ")),
                    summary: repaired.summary.clone(),
                });
                while p.repairs.len() > REPAIR_LOG {
                    p.repairs.pop_front();
                }
                p.repair_count += 1;
                p.last_error = None;
                RepairOutcome::Repaired {
                    repaired,
                    since: since.elapsed(),
                }
            }
            Err(e) => {
                p.last_error = Some(format!("repair: {e}"));
                RepairOutcome::Failed(e)
            }
        }
    }

    /// Forget `id` and remove its capture: the pod, and what the removal did.
    pub fn remove(&mut self, id: NetnsId) -> Option<(Pod<K>, Result<usize, String>)> {
        let mut p = self.pods.remove(&id)?;
        let r = p.kernel.remove();
        Some((p, r))
    }

    /// Forget `id` without touching its namespace (it is gone).
    pub fn forget(&mut self, id: NetnsId) -> Option<Pod<K>> {
        self.pods.remove(&id)
    }

    /// The `status` of every pod (or of `only`), in path order, times as seconds since the
    /// epoch.
    pub fn status(&self, only: impl Fn(NetnsId, &Pod<K>) -> bool) -> Vec<Value> {
        let mut pods: Vec<(&NetnsId, &Pod<K>)> =
            self.pods.iter().filter(|(id, p)| only(**id, p)).collect();
        pods.sort_by(|a, b| {
            a.1.record
                .network_namespace
                .cmp(&b.1.record.network_namespace)
        });
        pods.into_iter()
            .map(|(id, p)| {
                json!({
                    "network_namespace": p.record.network_namespace,
                    "identity": id,
                    "tables_owned": p.owned,
                    "kind": p.record.desired.kind(),
                    "backend": p.record.backend(),
                    "ebpf": p.kernel.backend(),
                    "desired": p.record.desired,
                    "container_id": p.record.container_id,
                    "installed_at": p.record.installed_at,
                    "last_check": p.last_check,
                    "repairs": p.repair_count,
                    "recent_repairs": p.repairs.iter().map(|r| json!({"at": r.at, "cause": r.cause, "summary": r.summary})).collect::<Vec<_>>(),
                    "last_error": p.last_error,
                })
            })
            .collect()
    }
}

/// What to do with a record found at start (or kept unadopted), given its recorded identity
/// and what its path names now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    /// The namespace is there: keep the pod (the identity it has, which an old record
    /// without one takes).
    Adopt(NetnsId),
    /// The namespace is gone (nothing at the path, another namespace there, or a namespace
    /// that is never a pod): the record can go.
    Forget(String),
    /// The path could not be examined now (descriptors, permission): keep the record, try
    /// again later. Never a reason to delete it.
    Keep(String),
}

/// Decide a record's adoption from its recorded identity and what its path names now.
pub fn adoption(
    recorded: Option<NetnsId>,
    found: Result<NetnsId, crate::identity::IdentityError>,
) -> Adoption {
    use crate::identity::IdentityError;
    match found {
        Ok(id) if recorded.is_none_or(|r| r == id) => Adoption::Adopt(id),
        Ok(other) => Adoption::Forget(format!("another namespace ({other}) is at its path now")),
        Err(e @ (IdentityError::Gone { .. } | IdentityError::Node { .. })) => {
            Adoption::Forget(e.to_string())
        }
        Err(e @ IdentityError::NotNamespace { .. }) => Adoption::Forget(e.to_string()),
        Err(e) => Adoption::Keep(e.to_string()),
    }
}

#[cfg(test)]
mod tests;
