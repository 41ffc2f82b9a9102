//! A new pod's add: opened and installed on a worker, its record written durably, and the
//! reply sent when the result comes back; every worker result is collected here.

use super::*;

impl Agent {
    /// Open and install a new pod on a worker; its reply comes with the result.
    pub(super) fn start_add(
        &mut self,
        target: Target,
        id: NetnsId,
        netns: PathBuf,
        desired: Desired,
        container_id: Option<String>,
        ebpf: Option<registry::EbpfPlace>,
    ) {
        let record = Record {
            network_namespace: netns.clone(),
            identity: Some(id),
            desired,
            container_id,
            installed_at: now(),
            ebpf,
        };
        let kernel = capture_of_record(&record, self.opts.own_tables)
            .and_then(|c| EbpfPod::of(&record).map(|e| (c, e)));
        let (capture, ebpf) = match kernel {
            Ok(c) => c,
            Err(e) => {
                self.answer(target, self.add_failed(&netns, ErrorKind::Invalid, &e));
                return;
            }
        };
        let job = self.next_job;
        self.next_job += 1;
        let state_dir = self.opts.state_dir.clone();
        let work: Job = Box::new(move || {
            let path = record.network_namespace.clone();
            let r = RealPod::open(&path, id, capture).and_then(|mut pod| {
                pod.ebpf = ebpf.map(Arc::new);
                match pod.install() {
                    // Acknowledged only once the record is on disk.
                    Ok((report, owned)) => match registry::save(&state_dir, &record) {
                        Ok(file) => Ok((pod, record, file, owned, report)),
                        Err(e) => {
                            let _ = pod.remove();
                            Err(format!("saving the record: {e}; the capture was removed"))
                        }
                    },
                    Err(e) => {
                        let _ = pod.remove();
                        Err(e)
                    }
                }
            });
            Done::Added(job, Box::new(r))
        });
        if self.pool.jobs.send(work).is_err() {
            self.log.error("the worker pool is gone");
            self.answer(
                target,
                protocol::error(ErrorKind::Busy, "busy: the agent's workers are gone"),
            );
            return;
        }
        self.adding.insert(
            job,
            PendingAdd {
                target,
                id,
                path: netns,
                started: Instant::now(),
                queued: Vec::new(),
            },
        );
    }

    /// What the workers finished: adds registered and answered, repairs recorded and logged;
    /// then what waited for them replayed.
    pub(super) fn collect_done(&mut self) {
        while let Ok(done) = self.pool.done.try_recv() {
            match done {
                Done::Added(job, opened) => {
                    let Some(p) = self.adding.remove(&job) else {
                        // Every add job is in `adding`: nothing else to answer.
                        continue;
                    };
                    let reply = match *opened {
                        Ok((pod, record, file, owned, report)) => {
                            self.pods.insert(p.id, record, file, pod, owned);
                            self.added(&p.path, p.started, report)
                        }
                        Err(e) => self.add_failed(&p.path, ErrorKind::Failed, &e),
                    };
                    self.answer(p.target, reply);
                    for (target, command) in p.queued {
                        self.dispatch(target, command);
                    }
                }
                Done::Op(job, done) => self.op_done(job, *done),
                Done::Swept(result) => self.log_swept(result),
                Done::Repaired(id, mark, result) => {
                    let path = self
                        .pods
                        .get(id)
                        .map(|p| p.record.network_namespace.clone());
                    let outcome = self.pods.end_repair(id, &mark, result, now());
                    if let Some(path) = path {
                        self.log_repair(&path, mark.kind, &mark.why, outcome);
                    }
                    for (target, command) in self.waiting.remove(&id).unwrap_or_default() {
                        self.dispatch(target, command);
                    }
                }
            }
        }
    }

    /// The eBPF backend's place for an add with `cgroup`, checked before anything changes
    /// (the cgroup a cgroup v2 directory and no mount's root, the capture a sidecar's that the
    /// programs can apply, a bpffs to pin in); `None` without one (nf_tables).
    pub(super) fn ebpf_place(
        &self,
        desired: &Desired,
        cgroup: Option<&Path>,
    ) -> Result<Option<registry::EbpfPlace>, String> {
        let Some(cgroup) = cgroup else {
            return Ok(None);
        };
        let bpffs = self
            .bpffs
            .as_ref()
            .map_err(|e| format!("cgroup {}: no BPF file system: {e}", cgroup.display()))?;
        EbpfPod::check(desired, cgroup, bpffs).map(Some)
    }

    pub(super) fn added(&mut self, netns: &Path, started: Instant, report: String) -> Value {
        let mut m = self.metrics();
        m.applies += 1;
        m.apply_seconds.observe(started.elapsed());
        m.pods = self.pods.len() as u64;
        drop(m);
        self.log
            .log(&pod_event(Level::Info, "added", netns).field("report", report.as_str()));
        json!({"ok": true, "report": report})
    }

    pub(super) fn add_failed(&self, netns: &Path, kind: ErrorKind, e: &str) -> Value {
        *self.metrics().errors.entry("add").or_insert(0) += 1;
        self.log
            .log(&pod_event(Level::Error, "add failed", netns).field("error", e));
        protocol::error(kind, e)
    }
}
