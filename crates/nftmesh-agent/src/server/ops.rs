//! Clients' checks, re-adds and removes of kept pods, run on the workers: the pod held
//! meanwhile, the reply and the requests that waited for it handled when the worker is done.

use super::*;

impl Agent {
    /// Run `work` for `target` on a worker as operation `job` about `id` at `path`.
    pub(super) fn start_op(
        &mut self,
        target: Target,
        id: Option<NetnsId>,
        path: PathBuf,
        work: impl FnOnce() -> OpDone + Send + 'static,
    ) {
        let job = self.next_job;
        self.next_job += 1;
        if self
            .pool
            .jobs
            .send(Box::new(move || Done::Op(job, Box::new(work()))))
            .is_err()
        {
            self.log.error("the worker pool is gone");
            if let Some(id) = id {
                self.pods.release(id);
            }
            let e = "busy: the agent's workers are gone";
            self.answer(target, protocol::error(ErrorKind::Busy, e));
            return;
        }
        self.ops.insert(
            job,
            PendingOp {
                target,
                id,
                path,
                started: Instant::now(),
                queued: Vec::new(),
            },
        );
    }

    /// An add of a registered pod, on a worker: the record saved first, then the (maybe new)
    /// capture installed; on a failure the old record is saved back (the old capture stays).
    pub(super) fn start_readd(
        &mut self,
        target: Target,
        id: NetnsId,
        netns: PathBuf,
        desired: Desired,
        container_id: Option<String>,
        ebpf: Option<registry::EbpfPlace>,
    ) {
        let Some(pod) = self.pods.get(id) else {
            return self.answer(
                target,
                protocol::error(ErrorKind::Invalid, "not registered"),
            );
        };
        if pod.record.ebpf != ebpf {
            // Another backend or cgroup: the old capture would stay behind.
            let was = match &pod.record.ebpf {
                Some(p) => format!("the eBPF backend on {}", p.cgroup.display()),
                None => "the nf_tables backend".into(),
            };
            let e = format!(
                "{} is registered with {was}: remove it before adding it with another backend or cgroup",
                netns.display()
            );
            return self.answer(target, self.add_failed(&netns, ErrorKind::Invalid, &e));
        }
        let old = pod.record.clone();
        let mut record = old.clone();
        record.desired = desired;
        record.container_id = container_id;
        let ebpf = match EbpfPod::of(&record) {
            Ok(e) => e,
            Err(e) => return self.answer(target, self.add_failed(&netns, ErrorKind::Invalid, &e)),
        };
        let (ns, has_routes) = (pod.kernel.ns.clone(), pod.kernel.routes.is_some());
        let (own, state_dir, path) = (
            self.opts.own_tables,
            self.opts.state_dir.clone(),
            netns.clone(),
        );
        self.pods.hold(id);
        self.start_op(target, Some(id), netns, move || {
            let replaced = (|| {
                registry::save(&state_dir, &record)
                    .map_err(|e| format!("saving the record: {e}"))?;
                let capture = capture_of_record(&record, own)?;
                let installed = match &ebpf {
                    // Programs replaced in place, then the inbound table.
                    Some(e) => e
                        .backend
                        .install(&ns, &e.cfg)
                        .map(|r| r.inbound)
                        .map_err(|e| e.to_string()),
                    None => ns.install(&capture).map_err(|e| e.to_string()),
                };
                let report = match installed {
                    Ok(r) => r,
                    Err(e) => {
                        // The old record stays the truth for the old capture, still installed.
                        let _ = registry::save(&state_dir, &old);
                        return Err(e);
                    }
                };
                // Now with routing to keep: watched from now on.
                let routes = (!has_routes && crate::kernel::watches_routes(&capture))
                    .then(|| nftmesh_netlink::netns::run_in(&path, RouteMonitor::open).ok())
                    .flatten()
                    .and_then(Result::ok);
                let owned = report.table_owner != nftmesh::TableOwner::None;
                Ok((capture, owned, routes))
            })();
            OpDone::Replaced(replaced, Box::new(record))
        });
    }

    /// A remove, on a worker: the pod forgotten now, its capture removed and its record
    /// deleted there; a namespace the agent does not keep gets nftmesh's tables removed.
    pub(super) fn start_remove(
        &mut self,
        target: Target,
        netns: PathBuf,
        found: Result<NetnsId, IdentityError>,
    ) {
        // The pod is its namespace; a namespace already gone is found by its registered path.
        let id = match &found {
            Ok(id) => Some(*id),
            Err(_) => self.pods.find_by_path(&netns),
        };
        let kept = id.and_then(|id| self.pods.forget(id));
        self.metrics().pods = self.pods.len() as u64;
        let path = netns.clone();
        match kept {
            Some(mut pod) => self.start_op(target, id, netns, move || {
                let r = pod.kernel.remove();
                let forgot = registry::forget(&pod.file);
                OpDone::Removed(r.and_then(|t| {
                    forgot
                        .map(|()| t)
                        .map_err(|e| format!("deleting the record: {e}"))
                }))
            }),
            // Not ours (or forgotten): nftmesh's tables removed if the namespace is there.
            None => self.start_op(target, None, netns, move || {
                OpDone::Removed(match found {
                    Ok(_) => Namespace::open(&path)
                        .and_then(|ns| ns.remove_owned(None).map(|r| r.tables))
                        .map_err(|e| e.to_string()),
                    Err(e) if e.is_gone() => Ok(0),
                    Err(e) => Err(e.to_string()),
                })
            }),
        }
    }

    /// A check, on a worker.
    pub(super) fn start_check(
        &mut self,
        target: Target,
        netns: PathBuf,
        found: Result<NetnsId, IdentityError>,
    ) {
        let held = found.ok().filter(|id| self.pods.hold(*id));
        let Some((id, pod)) = held.and_then(|id| self.pods.get(id).map(|p| (id, p))) else {
            let e = format!("{} is not registered", netns.display());
            return self.answer(target, protocol::error(ErrorKind::Invalid, &e));
        };
        let (ns, capture) = (pod.kernel.ns.clone(), pod.kernel.capture.clone());
        let ebpf = pod.kernel.ebpf.clone();
        self.start_op(target, Some(id), netns, move || {
            OpDone::Checked((|| {
                // An eBPF pod's programs first: each one not attached is a difference.
                let mut d = match &ebpf {
                    Some(e) => e.missing().map_err(|e| e.to_string())?,
                    None => Vec::new(),
                };
                let tables = ns.check(&capture).map_err(|e| e.to_string())?;
                d.extend(tables.iter().map(|x| x.to_string()));
                Ok(d)
            })())
        });
    }

    /// Answer a client's operation that finished, and replay what waited for it.
    pub(super) fn op_done(&mut self, job: u64, done: OpDone) {
        let Some(op) = self.ops.remove(&job) else {
            return;
        };
        let reply = match done {
            OpDone::Checked(r) => {
                if let Some(id) = op.id {
                    self.pods.release(id);
                    if matches!(&r, Ok(d) if d.is_empty()) {
                        self.pods.checked(id, now());
                    }
                }
                match r {
                    Ok(d) if d.is_empty() => json!({"ok": true}),
                    Ok(d) => json!({
                        "ok": false,
                        "kind": "failed",
                        "error": "the capture differs from the desired one",
                        "differences": d,
                    }),
                    Err(e) => protocol::error(ErrorKind::Failed, &e),
                }
            }
            OpDone::Replaced(r, record) => {
                let id = op.id;
                if let Some(id) = id {
                    self.pods.release(id);
                }
                match (r, id.and_then(|id| self.pods.get_mut(id).map(|p| (id, p)))) {
                    (Ok((capture, owned, routes)), Some((id, pod))) => {
                        pod.kernel.capture = capture;
                        pod.kernel.ebpf = EbpfPod::of(&record).ok().flatten().map(Arc::new);
                        if routes.is_some() {
                            pod.kernel.routes = routes;
                        }
                        self.pods.replaced(id, *record, owned);
                        self.added(&op.path, op.started, "reinstalled".into())
                    }
                    (Ok(_), None) => protocol::error(ErrorKind::Failed, "forgotten meanwhile"),
                    (Err(e), _) => self.add_failed(&op.path, ErrorKind::Failed, &e),
                }
            }
            OpDone::Removed(Ok(tables)) => {
                self.log
                    .log(&pod_event(Level::Info, "removed", &op.path).field("tables", tables));
                json!({"ok": true, "tables": tables})
            }
            OpDone::Removed(Err(e)) => {
                self.log.log(
                    &pod_event(Level::Error, "remove failed", &op.path).field("error", e.as_str()),
                );
                *self.metrics().errors.entry("remove").or_insert(0) += 1;
                protocol::error(ErrorKind::Failed, &e)
            }
        };
        self.answer(op.target, reply);
        if let Some(id) = op.id {
            // Repairs marked meanwhile start next turn; requests that waited go now.
            for q in self.waiting.remove(&id).unwrap_or_default() {
                self.dispatch(q.0, q.1);
            }
        }
        for (target, command) in op.queued {
            self.dispatch(target, command);
        }
    }
}
