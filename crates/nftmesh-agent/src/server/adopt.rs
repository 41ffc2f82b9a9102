//! Adopting the registry at start: every record's pod kept again, forgotten (its namespace is
//! gone) or kept unadopted (not examinable now), never deleted for that. An eBPF pod's pinned
//! programs are adopted as they are when complete (nothing re-attached: same links, same
//! programs), re-attached when not, and removed with the pod when its cgroup is gone; pins of
//! cgroups that are gone are removed from the agent's bpffs first.

use super::*;

impl Agent {
    /// Adopt every record whose namespace still exists (checked, repaired only if it
    /// differs); forget those whose namespace is gone; keep the others (not examinable now)
    /// for the next resync, and keep unreadable files untouched.
    pub(super) fn adopt(&mut self) -> Result<(), AgentError> {
        let loaded = registry::load(&self.opts.state_dir).map_err(|e| setup("registry", e))?;
        for b in &loaded.bad {
            self.log.log(
                &Event::new(Level::Warn, "keeping a record this agent cannot read")
                    .field("file", b.file.as_path())
                    .field("error", b.error.as_str()),
            );
            *self.metrics().errors.entry("load").or_insert(0) += 1;
        }
        self.unreadable = loaded.bad;
        self.remove_stale_pins();
        for (file, r) in loaded.records {
            self.adopt_one(file, r);
        }
        self.metrics().pods = self.pods.len() as u64;
        self.log.log(
            &Event::new(Level::Info, "listening")
                .field("socket", self.opts.socket.as_path())
                .field("pods", self.pods.len()),
        );
        Ok(())
    }

    /// Adopt one record: a pod again, forgotten (its namespace is gone: nothing at its path,
    /// or another namespace there), or kept unadopted (not examinable now).
    pub(super) fn adopt_one(&mut self, file: PathBuf, mut r: Record) {
        let path = r.network_namespace.clone();
        let found = identity::of_pod(&path, &self.forbidden);
        let id = match pods::adoption(r.identity, found) {
            Adoption::Adopt(id) => id,
            Adoption::Forget(why) => {
                self.forget_record(&file, &path, &why);
                return;
            }
            Adoption::Keep(why) => {
                self.keep_unadopted(file, r, why);
                return;
            }
        };
        if self.pods.contains(id) {
            // Two records of one namespace (another spelling, or an old record): one pod.
            let _ = registry::forget(&file);
            return;
        }
        let old_file = r.identity.is_none().then(|| file.clone());
        r.identity = Some(id);
        if let Some(place) = &r.ebpf {
            if matches!(std::fs::symlink_metadata(&place.cgroup), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
            {
                return self.forget_cgroup_gone(&file, &r);
            }
        }
        let opened = capture_of_record(&r, self.opts.own_tables)
            .and_then(|c| EbpfPod::of(&r).map(|e| (c, e)))
            .and_then(|(c, e)| {
                RealPod::open(&path, id, c).map(|mut pod| {
                    pod.ebpf = e.map(Arc::new);
                    pod
                })
            });
        let mut pod = match opened {
            Ok(pod) => pod,
            Err(e) => return self.keep_unadopted(file, r, e),
        };
        let mut file = file;
        if let Some(old) = old_file {
            // A version-1 record: rewritten under its identity's name.
            if let Ok(f) = registry::save(&self.opts.state_dir, &r) {
                file = f;
                let _ = registry::forget(&old);
            }
        }
        let mut owned = false;
        let mut claim_error = None;
        if self.opts.own_tables && pod.ebpf.is_none() {
            // Claim the tables the previous agent left ownerless (persist), in place, or take
            // over unowned ones, in one transaction.
            match pod.install() {
                Ok((_, o)) => owned = o,
                Err(e) => {
                    self.log.log(
                        &pod_event(Level::Error, "claiming the tables failed", &path)
                            .field("error", e.as_str()),
                    );
                    claim_error = Some(format!("claiming the tables: {e}"));
                }
            }
        }
        self.pods.insert(id, r, file, pod, owned);
        if let Some(p) = self.pods.get_mut(id) {
            p.last_error = claim_error;
        }
        self.repair(id, "adopt", "adopted after a restart".into());
    }

    /// Remove the pins of cgroups that are gone from the agent's bpffs (logged).
    pub(super) fn remove_stale_pins(&mut self) {
        let Ok(bpffs) = &self.bpffs else {
            return;
        };
        let result = bpffs
            .remove_stale_within(std::time::Duration::from_secs(1))
            .map_err(|e| format!("{}: {e}", bpffs.mount().display()));
        self.log_swept(result);
    }

    /// An eBPF pod whose cgroup is gone (its processes are): its pins (stale) and its inbound
    /// table removed, its record deleted.
    fn forget_cgroup_gone(&mut self, file: &Path, r: &Record) {
        let path = r.network_namespace.clone();
        let removed = (|| {
            let place = r.ebpf.as_ref().ok_or("not an eBPF pod")?;
            let Desired::Capture(cfg) = &r.desired else {
                return Err("not a sidecar capture".to_string());
            };
            let bpffs = Bpffs::at(&place.bpffs).map_err(|e| e.to_string())?;
            let ns = Namespace::open(&path).map_err(|e| e.to_string())?;
            nftmesh::ebpf::EbpfBackend::new(place.cgroup.clone(), bpffs)
                .remove_even_if_gone(&ns, cfg)
                .map_err(|e| e.to_string())
        })();
        if let Err(e) = removed {
            self.log.log(
                &pod_event(
                    Level::Warn,
                    "removing the capture of a pod whose cgroup is gone",
                    &path,
                )
                .field("error", e.as_str()),
            );
        }
        let cgroup = r.ebpf.as_ref().map(|p| p.cgroup.display().to_string());
        self.forget_record(
            file,
            &path,
            &format!("its cgroup {} is gone", cgroup.unwrap_or_default()),
        );
    }

    pub(super) fn forget_record(&mut self, file: &Path, path: &Path, why: &str) {
        self.log
            .log(&pod_event(Level::Info, "forgot a recorded pod", path).field("why", why));
        self.metrics().forgotten += 1;
        if let Err(e) = registry::forget(file) {
            self.log
                .log(&pod_event(Level::Error, "deleting a record failed", path).field("error", e));
        }
    }

    pub(super) fn keep_unadopted(&mut self, file: PathBuf, r: Record, why: String) {
        self.log.log(
            &pod_event(
                Level::Warn,
                "could not adopt a recorded pod: kept, retried at resync",
                &r.network_namespace,
            )
            .field("error", why.as_str()),
        );
        *self.metrics().errors.entry("adopt").or_insert(0) += 1;
        self.unadopted.push((file, r, why));
    }
}
