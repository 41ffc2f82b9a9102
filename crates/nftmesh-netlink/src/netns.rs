//! Running code inside a network namespace on a dedicated thread; the caller's thread never
//! changes namespace.

use crate::error::NetlinkError;
use nix::sched::{setns, unshare, CloneFlags};
use std::fs::File;
use std::path::Path;

/// Run `f` on a new thread that first enters the network namespace at `path`
/// (`/proc/PID/ns/net`, `/var/run/netns/NAME`), and return its result.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T, NetlinkError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| NetlinkError::Netns {
        path: shown.clone(),
        source,
    })?;
    on_new_thread(
        move || setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| (shown, e)),
        f,
    )
}

/// Run `f` on a new thread after `enter` moved that thread into a network namespace.
fn on_new_thread<T, F>(
    enter: impl FnOnce() -> Result<(), (String, nix::errno::Errno)> + Send + 'static,
    f: F,
) -> Result<T, NetlinkError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let handle = std::thread::spawn(move || {
        enter().map_err(|(path, e)| NetlinkError::Netns {
            path,
            source: std::io::Error::from_raw_os_error(e as i32),
        })?;
        Ok(f())
    });
    handle
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Run `f` in the namespace at `path` (see [`run_in`]), or on the calling thread in its own
/// namespace when `path` is `None`: for tools that take an optional namespace argument.
pub fn run_in_or_here<T, F>(path: Option<&Path>, f: F) -> Result<T, NetlinkError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match path {
        Some(p) => run_in(p, f),
        None => Ok(f()),
    }
}

/// Run `f` on a new thread inside a fresh, empty network namespace that disappears when the
/// thread ends (unless something else holds it).
///
/// ```no_run
/// // As root: the closure sees an empty namespace of its own.
/// let tables = nftmesh_netlink::netns::run_in_new(|| {
///     nftmesh_netlink::Connection::open()?.tables()
/// })??;
/// assert!(tables.is_empty());
/// # Ok::<(), nftmesh_netlink::NetlinkError>(())
/// ```
pub fn run_in_new<T, F>(f: F) -> Result<T, NetlinkError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    on_new_thread(
        || unshare(CloneFlags::CLONE_NEWNET).map_err(|e| ("(new namespace)".to_string(), e)),
        f,
    )
}

/// A network namespace given by path (`/proc/PID/ns/net`, `/var/run/netns/NAME`). Each
/// [`Netns::run`] enters it on a dedicated thread; the caller's thread never moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    path: std::path::PathBuf,
}

impl Netns {
    /// The namespace at `path` (opened when run).
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        Netns { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` inside the namespace and return its result (see [`run_in`]).
    pub fn run<T, F>(&self, f: F) -> Result<T, NetlinkError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        run_in(&self.path, f)
    }
}
