//! The `bpf(2)` commands for cgroup links that aya 0.14 does not offer (it cannot pin a
//! `cgroup/getsockopt` link, nor update or force-detach any cgroup link): create a link
//! (`BPF_LINK_CREATE`), pin it (`BPF_OBJ_PIN`) and open it again (`BPF_OBJ_GET`), swap its
//! program (`BPF_LINK_UPDATE`, the atomic replace), and detach it whoever holds it
//! (`BPF_LINK_DETACH`). The crate's only `unsafe` kernel calls live here.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `enum bpf_cmd` values (`linux/bpf.h`).
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_LINK_DETACH: libc::c_long = 34;

/// The `BPF_OBJ_*` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    /// The union's 8-byte alignment; the kernel wants it zero.
    pad: u32,
}

/// The start of the `link_create` member of `union bpf_attr` (the rest, zero, is for other
/// link kinds).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// The `link_update` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// The `link_detach` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct LinkDetachAttr {
    link_fd: u32,
}

/// `bpf(cmd, attr, sizeof attr)`: the non-negative result, or errno.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    let size = libc::c_uint::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `attr` is a live, exclusively borrowed `repr(C)` struct of `size` bytes, the
    // prefix of `union bpf_attr` that `cmd` reads; its padding is zeroed (every field is, by
    // `Default`, before the caller sets some), as the kernel requires of the bytes past the
    // command's last field. The kernel reads and writes at most `size` bytes of it and keeps
    // no reference after the call. Pointers inside (`ObjAttr::pathname`) point to a
    // NUL-terminated string the caller keeps alive across the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `path` as the kernel reads it.
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// A file descriptor the kernel just returned, owned.
fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: `fd` is what a successful BPF_OBJ_GET or BPF_LINK_CREATE returned: a new file
    // descriptor (the kernel opens BPF objects O_CLOEXEC) that nothing else in this process
    // knows about, so it is ours to own and close.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attach `program` to the cgroup `cgroup` as a new BPF link of `attach_type` (an
/// `enum bpf_attach_type` value), beside the programs already there; the link is detached when
/// its last file descriptor closes, unless it is pinned.
pub(crate) fn link_create(
    program: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: fd_u32(program)?,
        target_fd: fd_u32(cgroup)?,
        attach_type,
        ..LinkCreateAttr::default()
    };
    owned(bpf(BPF_LINK_CREATE, &mut attr)?)
}

/// Pin the object `fd` (a link or map) at `path`, on a BPF file system.
pub(crate) fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let name = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: name.as_ptr() as u64,
        bpf_fd: fd_u32(fd)?,
        ..ObjAttr::default()
    };
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// Open the object pinned at `path` (a link, map or program): a new file descriptor for it,
/// closed on exec.
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let name = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: name.as_ptr() as u64,
        ..ObjAttr::default()
    };
    owned(bpf(BPF_OBJ_GET, &mut attr)?)
}

/// Make the link `link` run `program` instead of its program, in one step: the hook never runs
/// without one of them.
pub(crate) fn link_update(link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkUpdateAttr {
        link_fd: fd_u32(link)?,
        new_prog_fd: fd_u32(program)?,
        ..LinkUpdateAttr::default()
    };
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

/// Detach the link `link` now, even while other file descriptors or pins hold it.
pub(crate) fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkDetachAttr {
        link_fd: fd_u32(link)?,
    };
    bpf(BPF_LINK_DETACH, &mut attr).map(|_| ())
}

fn fd_u32(fd: BorrowedFd<'_>) -> io::Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_kernel() {
        // offsetof(union bpf_attr, file_flags) == 12, path_fd == 16 (linux/bpf.h).
        assert_eq!(std::mem::size_of::<ObjAttr>(), 24);
        assert_eq!(std::mem::size_of::<LinkUpdateAttr>(), 16);
        assert_eq!(std::mem::size_of::<LinkCreateAttr>(), 16);
        assert_eq!(std::mem::size_of::<LinkDetachAttr>(), 4);
    }

    #[test]
    fn obj_get_of_a_missing_path_is_an_error() {
        let e = obj_get(Path::new("/nonexistent/nftmesh-pin")).unwrap_err();
        // ENOENT as root; EPERM without CAP_BPF (the kernel checks that first).
        assert!(
            matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EPERM)),
            "{e}"
        );
    }
}
