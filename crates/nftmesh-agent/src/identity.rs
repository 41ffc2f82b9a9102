//! A pod is its network namespace, not a path: the namespace file's device and inode on the
//! kernel's namespace filesystem (nsfs). Two spellings of one namespace (`//run/netns/p`, a
//! symlink, `/var/run` for `/run`) are one pod; a path reused by another namespace is another
//! pod. The agent's own namespace and the node's (PID 1's) are never pods: capture installed
//! there would rewrite the node's own traffic.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A network namespace's identity: (device, inode) of its nsfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NetnsId {
    /// The nsfs device.
    pub dev: u64,
    /// The namespace's inode (what `ip netns identify` and `/proc/PID/ns/net` show).
    pub ino: u64,
}

impl fmt::Display for NetnsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net:[{}] (dev {:#x})", self.ino, self.dev)
    }
}

/// Why a path is not a pod's namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Nothing is at the path (the namespace is gone).
    #[error("{path}: no such namespace")]
    Gone {
        /// The path.
        path: String,
    },
    /// The path names something that is not a namespace (a regular file, a FIFO, ...).
    #[error("{path} is not a network namespace but {what}")]
    NotNamespace {
        /// The path.
        path: String,
        /// What it is ("a regular file", "a FIFO", ...).
        what: String,
    },
    /// The path names the agent's own network namespace or the node's.
    #[error("{path} is {whose} network namespace ({id}): capture there would change the node's own traffic")]
    Node {
        /// The path.
        path: String,
        /// `the agent's own` or `the node's (PID 1's)`.
        whose: &'static str,
        /// Its identity.
        id: NetnsId,
    },
    /// The path could not be opened or examined for another reason (descriptors, permission).
    #[error("{path}: {error}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        error: String,
    },
}

impl IdentityError {
    /// Whether the namespace is known to be gone (its record can be forgotten), as opposed to
    /// not examinable now (descriptors exhausted, ...: the record must be kept).
    pub fn is_gone(&self) -> bool {
        matches!(self, IdentityError::Gone { .. })
    }
}

/// The identity of the network namespace at `path`, opened without blocking (a FIFO given by
/// mistake does not hang the agent) and checked to be a namespace file.
pub fn of(path: &Path) -> Result<NetnsId, IdentityError> {
    use nftmesh_netlink::NetlinkError;
    let shown = || path.display().to_string();
    let file = nftmesh_netlink::netns::open(path).map_err(|e| match e {
        NetlinkError::Netns { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            IdentityError::Gone { path: shown() }
        }
        NetlinkError::NotNetns { what, .. } => IdentityError::NotNamespace {
            path: shown(),
            what,
        },
        NetlinkError::Netns { source, .. } => IdentityError::Io {
            path: shown(),
            error: source.to_string(),
        },
        e => IdentityError::Io {
            path: shown(),
            error: e.to_string(),
        },
    })?;
    let meta = file.metadata().map_err(|e| IdentityError::Io {
        path: shown(),
        error: e.to_string(),
    })?;
    Ok(NetnsId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// The namespaces that are never pods: the agent's own (its process's and the calling
/// thread's) and the node's (PID 1's, when visible), with whose they are.
pub fn forbidden() -> Vec<(NetnsId, &'static str)> {
    let mut out = Vec::new();
    for (p, whose) in [
        ("/proc/self/ns/net", "the agent's own"),
        ("/proc/thread-self/ns/net", "the agent's own"),
        ("/proc/1/ns/net", "the node's (PID 1's)"),
    ] {
        if let Ok(id) = of(Path::new(p)) {
            if !out.iter().any(|(o, _)| *o == id) {
                out.push((id, whose));
            }
        }
    }
    out
}

/// [`of`], refusing the namespaces of [`forbidden`].
pub fn of_pod(
    path: &Path,
    forbidden: &[(NetnsId, &'static str)],
) -> Result<NetnsId, IdentityError> {
    let id = of(path)?;
    match forbidden.iter().find(|(f, _)| *f == id) {
        Some((_, whose)) => Err(IdentityError::Node {
            path: path.display().to_string(),
            whose,
            id,
        }),
        None => Ok(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_namespace_are_one_identity_and_the_agents_own_is_refused() {
        let a = of(Path::new("/proc/self/ns/net")).unwrap();
        assert_eq!(of(Path::new("//proc//self/ns/net")).unwrap(), a);
        assert_eq!(of(Path::new("/proc/thread-self/ns/net")).unwrap(), a);
        let f = forbidden();
        let e = of_pod(Path::new("/proc/self/ns/net"), &f).unwrap_err();
        assert!(matches!(e, IdentityError::Node { .. }), "{e}");
        assert!(e.to_string().contains("the agent's own"), "{e}");
        assert!(!e.is_gone());
    }

    #[test]
    fn what_is_not_a_namespace_is_named_without_blocking() {
        let dir = std::env::temp_dir().join(format!("nftmesh-agent-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR).unwrap();
        let e = of(&fifo).unwrap_err();
        assert_eq!(
            e,
            IdentityError::NotNamespace {
                path: fifo.display().to_string(),
                what: "a FIFO".into()
            }
        );
        let file = dir.join("file");
        std::fs::write(&file, "").unwrap();
        assert!(of(&file)
            .unwrap_err()
            .to_string()
            .contains("a regular file"));
        let gone = of(&dir.join("nothing")).unwrap_err();
        assert!(gone.is_gone(), "{gone}");
        // Another kind of namespace is nsfs too: refused when entered (netns::run_in).
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
