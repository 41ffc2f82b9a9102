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
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `CGROUP2_SUPER_MAGIC` (`linux/magic.h`): `statfs`'s `f_type` of a cgroup v2 file system.
pub(crate) const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

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
    // no reference after the call. Pointers inside point to memory the caller keeps alive
    // and exclusively borrowed across the call: `ObjAttr::pathname` to a NUL-terminated
    // string, `InfoAttr::info` to a `LinkInfo` of `info_len` bytes, which the kernel writes
    // at most `info_len` bytes of.
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

/// The `info` member of `union bpf_attr` (`BPF_OBJ_GET_INFO_BY_FD`).
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The start of `struct bpf_link_info` up to its `cgroup` member (the union is 8-aligned, at
/// offset 16); the kernel fills at most `info_len` bytes of it.
#[repr(C)]
#[derive(Default)]
struct LinkInfo {
    kind: u32,
    id: u32,
    prog_id: u32,
    pad: u32,
    cgroup_id: u64,
    attach_type: u32,
    pad2: u32,
}

/// What the kernel says of a link: its id, its program's id and, for a cgroup link, the id
/// of the cgroup it is attached to (0 once it is detached, or its cgroup is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkFacts {
    pub id: u32,
    pub prog_id: u32,
    pub cgroup_id: u64,
}

/// `BPF_LINK_TYPE_CGROUP` (`enum bpf_link_type`).
const BPF_LINK_TYPE_CGROUP: u32 = 3;

/// `BPF_OBJ_GET_INFO_BY_FD` of the link `link`. A link of another kind reports cgroup id 0.
pub(crate) fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkFacts> {
    let mut info = LinkInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd_u32(link)?,
        info_len: u32::try_from(std::mem::size_of::<LinkInfo>())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        info: &mut info as *mut LinkInfo as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(LinkFacts {
        id: info.id,
        prog_id: info.prog_id,
        cgroup_id: if info.kind == BPF_LINK_TYPE_CGROUP {
            info.cgroup_id
        } else {
            0
        },
    })
}

/// `statfs(2)`'s `f_type` of the file system `file` is on.
pub(crate) fn fs_type(file: BorrowedFd<'_>) -> io::Result<i64> {
    // SAFETY: `statfs` is plain old data, for which all-zero bytes are a valid value.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `file` is a file descriptor open for the duration of the call (borrowed), and
    // `buf` a live, exclusively borrowed `struct statfs` the kernel writes whole and keeps no
    // reference to.
    let r = unsafe { libc::fstatfs(file.as_raw_fd(), &mut buf) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // `f_type`'s width differs between libcs.
    Ok(buf.f_type as i64)
}

/// `flock(file, LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file holds the lock.
pub(crate) fn try_lock_exclusive(file: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: `file` is a file descriptor open for the duration of the call (borrowed); flock
    // touches no memory of ours.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
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
        // offsetof(struct bpf_link_info, cgroup.cgroup_id) == 16.
        assert_eq!(std::mem::offset_of!(LinkInfo, cgroup_id), 16);
        assert_eq!(std::mem::size_of::<InfoAttr>(), 16);
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
