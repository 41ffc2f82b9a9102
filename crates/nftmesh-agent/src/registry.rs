//! The agent's persisted registry: which namespaces it keeps and with which capture, in
//! `STATE_DIR/pods.json`, written whole to a temporary file, synced and renamed over the old
//! one, so a crash at any moment leaves the old registry or the new one, never a torn file.

use crate::protocol::Desired;
use serde::{Deserialize, Serialize};
use std::io::Write;
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
    pods: Vec<Record>,
}

/// The registry file of `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("pods.json")
}

/// Read the registry (empty when there is none yet).
pub fn load(state_dir: &Path) -> Result<Vec<Record>, String> {
    let p = path(state_dir);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    let f: File = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
    if f.version != 1 {
        return Err(format!("{}: version {} is not 1", p.display(), f.version));
    }
    Ok(f.pods)
}

/// Write the registry atomically (temporary file, fsync, rename, fsync of the directory).
pub fn save(state_dir: &Path, pods: &[Record]) -> Result<(), String> {
    let p = path(state_dir);
    let tmp = state_dir.join(".pods.json.tmp");
    let text = serde_json::to_string_pretty(&File {
        version: 1,
        pods: pods.to_vec(),
    })
    .map_err(|e| e.to_string())?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)?;
        std::fs::File::open(state_dir)?.sync_all()
    };
    write().map_err(|e| format!("{}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftmesh_model::CaptureConfig;

    #[test]
    fn the_registry_round_trips_and_a_torn_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("nftmesh-agent-reg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(load(&dir).unwrap(), Vec::new());
        let pods = vec![Record {
            network_namespace: "/run/netns/p".into(),
            desired: Desired::Capture(Box::new(CaptureConfig::sidecar())),
            container_id: Some("c".into()),
            installed_at: 1.5,
        }];
        save(&dir, &pods).unwrap();
        assert_eq!(load(&dir).unwrap(), pods);
        std::fs::write(path(&dir), "{\"version\":1,\"pods\":[").unwrap();
        assert!(load(&dir).unwrap_err().contains("pods.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
