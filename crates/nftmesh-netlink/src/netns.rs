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
    let file = open(path)?;
    let shown = path.display().to_string();
    on_new_thread(
        move || {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| match e {
                // An nsfs file (checked on open) of another kind of namespace.
                nix::errno::Errno::EINVAL => NetlinkError::NotNetns {
                    path: shown,
                    what: "another kind of namespace".into(),
                },
                e => NetlinkError::Netns {
                    path: shown,
                    source: std::io::Error::from_raw_os_error(e as i32),
                },
            })
        },
        f,
    )
}

/// Open `path` as a namespace file: without blocking (a FIFO given by mistake must not hang the
/// caller), and refused ([`NetlinkError::NotNetns`], naming what it is) unless it is a file of
/// the kernel's namespace filesystem (nsfs). Its metadata's device and inode are the
/// namespace's identity.
pub fn open(path: &Path) -> Result<File, NetlinkError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let shown = || path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| NetlinkError::Netns {
            path: shown(),
            source,
        })?;
    let fs = nix::sys::statfs::fstatfs(&file).map_err(|e| NetlinkError::Netns {
        path: shown(),
        source: std::io::Error::from_raw_os_error(e as i32),
    })?;
    if fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC {
        return Ok(file);
    }
    let what = match file.metadata().map(|m| m.file_type()) {
        Ok(t) if t.is_dir() => "a directory",
        Ok(t) if t.is_fifo() => "a FIFO",
        Ok(t) if t.is_socket() => "a socket",
        Ok(t) if t.is_char_device() || t.is_block_device() => "a device",
        Ok(t) if t.is_file() => "a regular file",
        _ => "not a namespace file",
    };
    Err(NetlinkError::NotNetns {
        path: shown(),
        what: what.into(),
    })
}

/// Run `f` on a new thread after `enter` moved that thread into a network namespace.
fn on_new_thread<T, F>(
    enter: impl FnOnce() -> Result<(), NetlinkError> + Send + 'static,
    f: F,
) -> Result<T, NetlinkError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let handle = std::thread::spawn(move || {
        enter()?;
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
        || {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| NetlinkError::Netns {
                path: "(new namespace)".into(),
                source: std::io::Error::from_raw_os_error(e as i32),
            })
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(path: &Path) -> String {
        match run_in(path, || ()) {
            Err(e @ NetlinkError::NotNetns { .. }) => e.to_string(),
            other => panic!("{}: {other:?}", path.display()),
        }
    }

    #[test]
    fn what_is_not_a_network_namespace_is_named_and_never_entered() {
        let dir = std::env::temp_dir().join(format!("nftmesh-netns-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("regular");
        std::fs::write(&file, b"").unwrap();
        let msg = refused(&file);
        assert!(
            msg.contains("is not a network namespace but a regular file"),
            "{msg}"
        );
        assert!(msg.contains("/proc/PID/ns/net"), "{msg}");
        assert!(refused(&dir).contains("but a directory"));
        // A FIFO without a writer: opening it must not wait for one.
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR).unwrap();
        assert!(refused(&fifo).contains("but a FIFO"));
        // A namespace file of another kind: the kernel refuses it as a network namespace.
        let msg = refused(Path::new("/proc/self/ns/mnt"));
        assert!(msg.contains("another kind of namespace"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_path_names_the_path_and_the_os_error() {
        let e = run_in(Path::new("/nonexistent/nftmesh-ns"), || ()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("cannot enter network namespace /nonexistent/nftmesh-ns: "),
            "{msg}"
        );
        assert!(!msg.contains("needs root"), "{msg}");
    }

    #[test]
    fn permission_denied_says_root_is_needed() {
        let e = NetlinkError::Netns {
            path: "/proc/1/ns/net".into(),
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        let msg = e.to_string();
        assert!(msg.contains("needs root: CAP_SYS_ADMIN"), "{msg}");
    }
}
