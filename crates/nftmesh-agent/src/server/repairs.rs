//! Noticing and repairing: change notifications read into marks, repairs started on the
//! workers and logged when done, and the periodic resync.

use super::*;

impl Agent {
    /// Start the repair of marked pod `id` on a worker.
    pub(super) fn start_repair(&mut self, id: NetnsId) {
        let Some((mark, job)) = self.pods.begin_repair(id) else {
            return;
        };
        let work: Job = Box::new(move || {
            let result = job();
            Done::Repaired(id, mark, result)
        });
        if self.pool.jobs.send(work).is_err() {
            self.log.error("the worker pool is gone");
        }
    }

    /// Read a pod's notifications; mark it when another process changed one of its tables
    /// or its routing changed.
    pub(super) fn drain(&mut self, id: NetnsId) {
        let Some(pod) = self.pods.get_mut(id) else {
            return;
        };
        let k = &mut pod.kernel;
        let mut why = None;
        match k.monitor.drain(Own::Ports(&[k.port])) {
            Ok(changes) => {
                // Any of nftmesh's tables (the capture's, or one it must not have).
                let owned = nftmesh::owned_tables();
                let touched: Vec<&str> = changes
                    .foreign_tables
                    .iter()
                    .filter(|t| owned.iter().any(|(_, o)| o == *t))
                    .map(String::as_str)
                    .collect();
                if changes.overrun {
                    why = Some("notifications lost: full check".to_string());
                } else if !touched.is_empty() {
                    why = Some(format!(
                        "changed by another process: table {}",
                        touched.join(", ")
                    ));
                }
            }
            Err(e) => pod.last_error = Some(format!("notifications: {e}")),
        }
        if let Some(r) = &mut pod.kernel.routes {
            match r.drain() {
                Ok(c) if c.any() && why.is_none() => why = Some("routing changed".to_string()),
                Ok(_) => {}
                Err(e) => pod.last_error = Some(format!("routing notifications: {e}")),
            }
        }
        if let Some(why) = why {
            self.pods.mark(id, "notification", why);
        }
    }

    /// Check one pod here and now (at adoption); reinstall when it differs. `kind` counts the
    /// repair, `why` says it.
    pub(super) fn repair(&mut self, id: NetnsId, kind: &'static str, why: String) {
        let Some(path) = self
            .pods
            .get(id)
            .map(|p| p.record.network_namespace.clone())
        else {
            return;
        };
        let outcome = self.pods.repair(id, kind, &why, now());
        self.log_repair(&path, kind, &why, outcome);
    }

    /// Log a repair's outcome (one line; each difference at debug) and count it.
    pub(super) fn log_repair(
        &mut self,
        path: &Path,
        kind: &'static str,
        why: &str,
        outcome: RepairOutcome,
    ) {
        match outcome {
            RepairOutcome::Unknown | RepairOutcome::Clean => {}
            RepairOutcome::Repaired { repaired, since } => {
                self.log.log(
                    &pod_event(Level::Info, "repaired", path)
                        .field("cause", kind)
                        .field("why", why)
                        .field("differences", repaired.summary.as_str()),
                );
                if self.log.enabled(Level::Debug) {
                    for d in &repaired.differences {
                        self.log.log(
                            &pod_event(Level::Debug, "repaired a difference", path)
                                .field("difference", d.as_str()),
                        );
                    }
                }
                let mut m = self.metrics();
                *m.repairs.entry(kind).or_insert(0) += 1;
                m.repair_seconds.observe(since);
            }
            RepairOutcome::Failed(e) => {
                self.log.log(
                    &pod_event(Level::Error, "repair failed", path)
                        .field("cause", kind)
                        .field("why", why)
                        .field("error", e.as_str()),
                );
                *self.metrics().errors.entry("repair").or_insert(0) += 1;
            }
        }
    }

    /// Check every pod; forget those whose namespace is gone; retry the unadopted records.
    /// When an eBPF pod is forgotten, the pins of cgroups that are gone are removed on a
    /// worker (its programs stay while its cgroup does: a new sandbox of the same pod may
    /// have been installed there).
    pub(super) fn resync(&mut self) {
        let mut sweep = false;
        for id in self.pods.ids() {
            let Some(path) = self
                .pods
                .get(id)
                .map(|p| p.record.network_namespace.clone())
            else {
                continue;
            };
            match identity::of(&path) {
                // Checked on a worker like any marked pod.
                Ok(now) if now == id => self.pods.mark(id, "resync", "periodic check".into()),
                // Gone, or another namespace at its path: this pod's namespace is gone.
                Ok(_)
                | Err(IdentityError::Gone { .. })
                | Err(IdentityError::NotNamespace { .. }) => {
                    if let Some(pod) = self.pods.forget(id) {
                        sweep |= pod.kernel.ebpf.is_some();
                        self.forget_record(&pod.file, &path, "the namespace is gone");
                    }
                    self.metrics().pods = self.pods.len() as u64;
                }
                // Not examinable now (descriptors, ...): kept, checked next time.
                Err(e) => {
                    if let Some(pod) = self.pods.get_mut(id) {
                        pod.last_error = Some(format!("resync: {e}"));
                    }
                }
            }
        }
        for (file, r, _) in std::mem::take(&mut self.unadopted) {
            self.adopt_one(file, r);
        }
        self.metrics().pods = self.pods.len() as u64;
        if let (true, Ok(bpffs)) = (sweep, &self.bpffs) {
            let bpffs = bpffs.clone();
            let job: Job = Box::new(move || {
                Done::Swept(
                    bpffs
                        .remove_stale_within(Duration::from_secs(1))
                        .map_err(|e| e.to_string()),
                )
            });
            if self.pool.jobs.send(job).is_err() {
                self.log.error("the worker pool is gone");
            }
        }
    }

    /// Log what a sweep of stale pins removed.
    pub(super) fn log_swept(&mut self, result: Result<Vec<nftmesh::ebpf::StalePins>, String>) {
        match result {
            Ok(removed) => {
                for s in removed {
                    self.log.log(
                        &Event::new(Level::Info, "removed the pins of a cgroup that is gone")
                            .field("pins", s.dir.as_path())
                            .field("cgroup_id", s.cgroup_id),
                    );
                }
            }
            Err(e) => {
                self.log.log(
                    &Event::new(Level::Error, "removing stale pins failed")
                        .field("error", e.as_str()),
                );
                *self.metrics().errors.entry("stale pins").or_insert(0) += 1;
            }
        }
    }
}
