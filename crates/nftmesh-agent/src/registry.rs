//! The agent's persisted registry: one file per registered pod under `STATE_DIR/pods/`,
//! written to a temporary file and renamed over the old one, so an agent killed at any
//! moment leaves each record whole (old or new), and an add or remove costs one small file
//! whatever the number of pods. The files are not fsynced: what they must survive is the
//! agent's own death (the page cache outlives the process); a node reboot takes every pod
//! namespace with it, and the records of vanished namespaces are forgotten on start anyway.

use crate::protocol::Desired;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One registered pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The pod's network namespace.
    pub network_namespace: PathBuf,
    /// Its capture.
    pub desired: Desired,
    /// The runtime's container id, when the CNI plugin gave it.
    #[serde(default)]
    pub container_id: Option<String>,
    /// When the capture was first installed (seconds since the epoch).
    pub installed_at: f64,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    pod: Record,
}

/// The directory of the records in `state_dir`.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("pods")
}

/// The record file of the pod at `netns`: its path's bytes in hex, so any path maps to one
/// plain file name.
pub fn file(state_dir: &Path, netns: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let hex: String = netns
        .as_os_str()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    dir(state_dir).join(format!("{hex}.json"))
}

/// Every record, in path order, and an error naming each file that could not be read (left
/// in place for an operator to look at; one bad record must not stop the others' keeping).
pub fn load(state_dir: &Path) -> Result<(Vec<Record>, Vec<String>), String> {
    let d = dir(state_dir);
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(format!("{}: {e}", d.display())),
    };
    let (mut out, mut bad) = (Vec::new(), Vec::new());
    for entry in entries {
        let p = entry.map_err(|e| format!("{}: {e}", d.display()))?.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let read = std::fs::read_to_string(&p)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<File>(&t).map_err(|e| e.to_string()))
            .and_then(|f| match f.version {
                1 => Ok(f.pod),
                v => Err(format!("version {v} is not 1")),
            });
        match read {
            Ok(r) => out.push(r),
            Err(e) => bad.push(format!("{}: {e}", p.display())),
        }
    }
    out.sort_by(|a, b| a.network_namespace.cmp(&b.network_namespace));
    Ok((out, bad))
}

/// Write one pod's record (temporary file, then rename).
pub fn save(state_dir: &Path, record: &Record) -> Result<(), String> {
    let d = dir(state_dir);
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    let p = file(state_dir, &record.network_namespace);
    let tmp = p.with_extension("tmp");
    let text = serde_json::to_string(&File {
        version: 1,
        pod: record.clone(),
    })
    .map_err(|e| e.to_string())?;
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &p))
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// Delete one pod's record (none is fine).
pub fn forget(state_dir: &Path, netns: &Path) -> Result<(), String> {
    let p = file(state_dir, netns);
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("{}: {e}", p.display())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftmesh_model::CaptureConfig;

    #[test]
    fn records_round_trip_and_a_torn_file_is_named_and_skipped() {
        let state = std::env::temp_dir().join(format!("nftmesh-agent-reg-{}", std::process::id()));
        assert_eq!(load(&state).unwrap(), (Vec::new(), Vec::new()));
        let rec = |p: &str| Record {
            network_namespace: p.into(),
            desired: Desired::Capture(Box::new(CaptureConfig::sidecar())),
            container_id: Some("c".into()),
            installed_at: 1.5,
        };
        save(&state, &rec("/run/netns/b")).unwrap();
        save(&state, &rec("/run/netns/a")).unwrap();
        save(&state, &rec("/run/netns/a")).unwrap();
        assert_eq!(
            load(&state).unwrap().0,
            vec![rec("/run/netns/a"), rec("/run/netns/b")]
        );
        forget(&state, Path::new("/run/netns/b")).unwrap();
        forget(&state, Path::new("/run/netns/never")).unwrap();
        assert_eq!(load(&state).unwrap().0, vec![rec("/run/netns/a")]);
        std::fs::write(file(&state, Path::new("/x")), "{\"version\":1,\"pod\":").unwrap();
        let (good, bad) = load(&state).unwrap();
        assert_eq!(
            good,
            vec![rec("/run/netns/a")],
            "a torn record does not hide the others"
        );
        assert!(bad.len() == 1 && bad[0].contains(".json"), "{bad:?}");
        std::fs::remove_dir_all(&state).unwrap();
    }
}
