//! The agent's persisted registry: one file per registered pod under `STATE_DIR/pods/`, named
//! by the pod's namespace identity (not its path, which may be any length), written to a
//! temporary file, fsynced, renamed over the old one and the directory fsynced: an `add` is
//! acknowledged only once its record would survive a crash, and an agent killed at any moment
//! leaves each record whole (old or new). A record that cannot be read (torn, or written by a
//! newer agent) is kept and reported, never deleted. One agent per state dir ([`lock`]).

use crate::identity::NetnsId;
use nftmesh_protocol::Desired;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The record format written; version 1 (keyed by the path's hex) is still read.
pub const VERSION: u32 = 2;
/// The format of a record of an eBPF pod ([`Record::ebpf`]): an agent that reads only
/// [`VERSION`] keeps it unread rather than taking the pod for an nf_tables one.
pub const VERSION_EBPF: u32 = 3;

/// Where the eBPF backend captures a pod's outbound connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EbpfPlace {
    /// The pod's cgroup v2 directory.
    pub cgroup: PathBuf,
    /// The BPF file system its links and maps are pinned in (its mount point).
    pub bpffs: PathBuf,
}

/// One registered pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The pod's network namespace, as registered.
    pub network_namespace: PathBuf,
    /// The namespace's identity when registered; `None` in a version-1 record (found again
    /// from the path at adoption).
    #[serde(default)]
    pub identity: Option<NetnsId>,
    /// Its capture.
    pub desired: Desired,
    /// The runtime's container id, when the CNI plugin gave it.
    #[serde(default)]
    pub container_id: Option<String>,
    /// When the capture was first installed (seconds since the epoch).
    pub installed_at: f64,
    /// With the eBPF backend: its cgroup and bpffs (the outbound capture is BPF programs on
    /// the cgroup, the inbound one nf_tables in the namespace). `None`: the nf_tables backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebpf: Option<EbpfPlace>,
}

impl Record {
    /// `ebpf` or `nf_tables`.
    pub fn backend(&self) -> &'static str {
        if self.ebpf.is_some() {
            "ebpf"
        } else {
            "nf_tables"
        }
    }
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    pod: Record,
}

/// A record file that could not be used: left in place, untouched, and reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// The file.
    pub file: PathBuf,
    /// Why (unreadable, not JSON, a newer version, ...).
    pub error: String,
}

/// What [`load`] found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Loaded {
    /// Each usable record with its file, in path order.
    pub records: Vec<(PathBuf, Record)>,
    /// The files kept but not used.
    pub bad: Vec<BadRecord>,
}

/// The directory of the records in `state_dir`.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("pods")
}

/// The record file of the pod whose namespace is `id`: a short name whatever its path.
pub fn file(state_dir: &Path, id: NetnsId) -> PathBuf {
    dir(state_dir).join(format!("{:x}-{:x}.json", id.dev, id.ino))
}

/// Every record, and each file that could not be used (left in place for an operator, and for
/// a later version of the agent that reads it: never deleted here).
pub fn load(state_dir: &Path) -> Result<Loaded, String> {
    let d = dir(state_dir);
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e) => return Err(format!("{}: {e}", d.display())),
    };
    let mut out = Loaded::default();
    for entry in entries {
        let p = entry.map_err(|e| format!("{}: {e}", d.display()))?.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let read = std::fs::read_to_string(&p)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<File>(&t).map_err(|e| e.to_string()))
            .and_then(|f| match f.version {
                1 | VERSION | VERSION_EBPF => Ok(f.pod),
                v => Err(format!(
                    "record version {v}: this agent reads 1 to {VERSION_EBPF}"
                )),
            });
        match read {
            Ok(r) => out.records.push((p, r)),
            Err(error) => out.bad.push(BadRecord { file: p, error }),
        }
    }
    out.records
        .sort_by(|a, b| a.1.network_namespace.cmp(&b.1.network_namespace));
    Ok(out)
}

/// Write one pod's record durably: a temporary file, fsynced, renamed over the old one, and
/// the directory fsynced; returns only when the record would survive a crash. Its error
/// (a full disk, ...) means the record is not there.
pub fn save(state_dir: &Path, record: &Record) -> Result<PathBuf, String> {
    let id = record
        .identity
        .ok_or_else(|| "a record without its namespace's identity".to_string())?;
    let d = dir(state_dir);
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    let p = file(state_dir, id);
    let tmp = p.with_extension("tmp");
    let text = serde_json::to_vec(&File {
        version: if record.ebpf.is_some() {
            VERSION_EBPF
        } else {
            VERSION
        },
        pod: record.clone(),
    })
    .map_err(|e| e.to_string())?;
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, &p))
        .and_then(|()| sync_dir(&d));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("{}: {e}", p.display()));
    }
    Ok(p)
}

/// Delete one record file (none is fine), durably.
pub fn forget(file: &Path) -> Result<(), String> {
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("{}: {e}", file.display()))
        }
        _ => file
            .parent()
            .map_or(Ok(()), sync_dir)
            .map_err(|e| format!("{}: {e}", file.display())),
    }
}

fn sync_dir(d: &Path) -> std::io::Result<()> {
    std::fs::File::open(d)?.sync_all()
}

/// The state dir's lock: one agent per state dir, released when the agent exits however it
/// exits (the kernel drops an `flock` with its last descriptor).
#[derive(Debug)]
pub struct Lock {
    _held: nix::fcntl::Flock<std::fs::File>,
}

/// Take the state dir's lock (`STATE_DIR/lock`), or say that another agent holds it.
pub fn lock(state_dir: &Path) -> Result<Lock, String> {
    let p = state_dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(Lock { _held: held }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(format!(
            "{}: another agent uses this state dir",
            state_dir.display()
        )),
        Err((_, e)) => Err(format!("{}: {e}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftmesh_model::CaptureConfig;

    fn state(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("nftmesh-agent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    fn rec(p: &str, ino: u64) -> Record {
        Record {
            network_namespace: p.into(),
            identity: Some(NetnsId { dev: 4, ino }),
            desired: Desired::Capture(Box::new(CaptureConfig::sidecar())),
            container_id: Some("c".into()),
            installed_at: 1.5,
            ebpf: None,
        }
    }

    #[test]
    fn records_round_trip_keyed_by_identity_whatever_the_path_length() {
        let state = state("reg");
        assert_eq!(load(&state).unwrap(), Loaded::default());
        let long = format!("/run/netns/{}", "p".repeat(300));
        let fa = save(&state, &rec("/run/netns/a", 7)).unwrap();
        save(&state, &rec(&long, 8)).unwrap();
        save(&state, &rec("/run/netns/a", 7)).unwrap();
        assert!(fa.file_name().unwrap().len() < 40, "{}", fa.display());
        let got: Vec<Record> = load(&state)
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.1)
            .collect();
        assert_eq!(got, vec![rec("/run/netns/a", 7), rec(&long, 8)]);
        forget(&fa).unwrap();
        forget(&fa).unwrap();
        assert_eq!(load(&state).unwrap().records.len(), 1);
        assert!(save(
            &state,
            &Record {
                identity: None,
                ..rec("/x", 1)
            }
        )
        .is_err());
        std::fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn torn_newer_and_old_records_are_kept_and_read_as_they_can_be() {
        let state = state("bad");
        save(&state, &rec("/run/netns/a", 7)).unwrap();
        let torn = dir(&state).join("torn.json");
        std::fs::write(&torn, "{\"version\":2,\"pod\":").unwrap();
        let newer = dir(&state).join("newer.json");
        let mut v3: serde_json::Value = serde_json::from_slice(
            &std::fs::read(file(&state, NetnsId { dev: 4, ino: 7 })).unwrap(),
        )
        .unwrap();
        v3["version"] = 4.into();
        std::fs::write(&newer, v3.to_string()).unwrap();
        // A version-1 record (no identity), as an older agent wrote it.
        let mut v1 = v3.clone();
        v1["version"] = 1.into();
        v1["pod"].as_object_mut().unwrap().remove("identity");
        let old = dir(&state).join("2f72756e.json");
        std::fs::write(&old, v1.to_string()).unwrap();
        let l = load(&state).unwrap();
        assert_eq!(l.records.len(), 2, "{l:?}");
        assert!(l
            .records
            .iter()
            .any(|(f, r)| *f == old && r.identity.is_none()));
        let mut bad: Vec<&Path> = l.bad.iter().map(|b| b.file.as_path()).collect();
        bad.sort();
        assert_eq!(bad, vec![newer.as_path(), torn.as_path()]);
        assert!(
            l.bad.iter().any(|b| b.error.contains("record version 4")),
            "{l:?}"
        );
        assert!(torn.exists() && newer.exists(), "never deleted");
        std::fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn an_ebpf_record_is_version_3_and_keeps_its_cgroup_and_bpffs() {
        let state = state("ebpf");
        let r = Record {
            ebpf: Some(EbpfPlace {
                cgroup: "/sys/fs/cgroup/pod".into(),
                bpffs: "/sys/fs/bpf".into(),
            }),
            ..rec("/run/netns/e", 9)
        };
        let f = save(&state, &r).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        assert_eq!(v["version"], 3);
        assert_eq!(v["pod"]["ebpf"]["cgroup"], "/sys/fs/cgroup/pod");
        assert_eq!(load(&state).unwrap().records, vec![(f, r.clone())]);
        assert_eq!(r.backend(), "ebpf");
        // An nf_tables record stays version 2, without the key.
        let f2 = save(&state, &rec("/run/netns/n", 10)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&f2).unwrap()).unwrap();
        assert_eq!(v["version"], 2);
        assert!(v["pod"].get("ebpf").is_none());
        std::fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn one_agent_per_state_dir() {
        let state = state("lock");
        std::fs::create_dir_all(&state).unwrap();
        let held = lock(&state).unwrap();
        let e = lock(&state).unwrap_err();
        assert!(e.contains("another agent uses this state dir"), "{e}");
        drop(held);
        lock(&state).unwrap();
        std::fs::remove_dir_all(&state).unwrap();
    }
}
