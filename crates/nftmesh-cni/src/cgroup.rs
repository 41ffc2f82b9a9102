//! The pod's cgroup v2 directory from the runtime's `cgroupPath` ([`CGROUP_PATH_CAPABILITY`]):
//! containerd's CRI plugin passes the pod's cgroup parent, either a cgroupfs path
//! (`/kubepods/burstable/pod<uid>`, joined under the cgroup2 mount) or a systemd slice name
//! (`kubepods-burstable-pod<uid>.slice`, expanded as systemd nests slices:
//! `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`). runc's
//! `slice:prefix:name` form of a container's cgroup is read too (`slice/prefix-name.scope`).
//! The cgroup2 mount is the one `/proc/mounts` lists (`/sys/fs/cgroup` on a unified machine,
//! `/sys/fs/cgroup/unified` on a hybrid one). The root cgroup is refused: it is the node's.
//!
//! ```
//! use nftmesh_cni::cgroup::relative;
//!
//! let slice = relative("kubepods-burstable-pod12_34.slice").unwrap();
//! assert_eq!(
//!     slice,
//!     std::path::Path::new("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice")
//! );
//! assert_eq!(relative("/kubepods/pod1").unwrap(), std::path::Path::new("kubepods/pod1"));
//! assert!(relative("/kubepods/../..").is_err());
//! ```

use crate::config::CGROUP_PATH_CAPABILITY;
use crate::CniError;
use std::path::{Component, Path, PathBuf};

/// The mount point of the cgroup2 file system in `mounts` (the text of `/proc/mounts`).
pub fn cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir.replace("\\040", " ")))
    })
}

/// A systemd slice's directory relative to the cgroup root: each dash-separated prefix of
/// its name is a parent slice (`a-b-c.slice` is `a.slice/a-b.slice/a-b-c.slice`).
fn slice_dir(name: &str) -> Result<PathBuf, String> {
    let stem = name
        .strip_suffix(".slice")
        .ok_or_else(|| format!("{name:?} is not a systemd slice name (NAME.slice)"))?;
    if stem.is_empty() || stem == "-" {
        return Err(format!("{name:?} is the root slice, the node's own cgroup"));
    }
    let parts: Vec<&str> = stem.split('-').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "{name:?} is not a valid systemd slice name (an empty part between dashes)"
        ));
    }
    let mut dir = PathBuf::new();
    for n in 1..=parts.len() {
        dir.push(format!("{}.slice", parts[..n].join("-")));
    }
    Ok(dir)
}

/// The directory `cgroup_path` names, relative to the cgroup2 mount: a systemd slice name
/// expanded, runc's `slice:prefix:name` as `slice/prefix-name.scope`, any other value taken
/// as a cgroupfs path. Refused: the root, `.` and `..` components, and NUL.
pub fn relative(cgroup_path: &str) -> Result<PathBuf, String> {
    if cgroup_path.contains('\0') {
        return Err("a NUL byte in the path".into());
    }
    let dir = match cgroup_path.split(':').collect::<Vec<_>>()[..] {
        [name] if !name.contains('/') && name.ends_with(".slice") => slice_dir(name)?,
        [_] => {
            let mut dir = PathBuf::new();
            for c in Path::new(cgroup_path).components() {
                match c {
                    Component::RootDir => {}
                    Component::Normal(p) => dir.push(p),
                    _ => return Err(format!("{cgroup_path:?}: only plain names, no . or ..")),
                }
            }
            dir
        }
        [slice, prefix, name] if !slice.contains('/') && !prefix.contains('/') => {
            let scope = format!("{prefix}-{name}.scope");
            if name.is_empty() || name.contains('/') {
                return Err(format!("{cgroup_path:?}: not slice:prefix:name"));
            }
            let slice = if slice.is_empty() {
                "system.slice"
            } else {
                slice
            };
            slice_dir(slice)?.join(scope)
        }
        _ => {
            return Err(format!(
                "{cgroup_path:?}: neither a cgroupfs path, a systemd slice nor slice:prefix:name"
            ))
        }
    };
    if dir.as_os_str().is_empty() {
        return Err(format!(
            "{cgroup_path:?} is the root cgroup, the node's own"
        ));
    }
    Ok(dir)
}

/// The pod's cgroup v2 directory: `cgroup_path` ([`relative`]) under the cgroup2 mount of
/// `/proc/mounts`. A value that names no directory there is [`CniError::InvalidConfig`]
/// naming `runtimeConfig.cgroupPath`, its value and the directory looked for.
pub fn resolve(cgroup_path: &str) -> Result<PathBuf, CniError> {
    let invalid = |why: String| {
        CniError::InvalidConfig(format!(
            "runtimeConfig.{CGROUP_PATH_CAPABILITY} {cgroup_path:?}: {why}"
        ))
    };
    let relative = relative(cgroup_path).map_err(invalid)?;
    let mounts = std::fs::read_to_string("/proc/mounts")
        .map_err(|e| CniError::Capture(format!("reading /proc/mounts: {e}")))?;
    let mount = cgroup2_mount(&mounts).ok_or_else(|| {
        CniError::Capture("no cgroup2 file system is mounted (/proc/mounts)".into())
    })?;
    let dir = mount.join(relative);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(invalid(format!(
            "{} is not a directory of the cgroup2 mount",
            dir.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_paths_are_joined_and_slices_expanded() {
        let rel = |s: &str| relative(s).map(|p| p.display().to_string());
        assert_eq!(
            rel("/kubepods/burstable/pod1b2c").unwrap(),
            "kubepods/burstable/pod1b2c"
        );
        assert_eq!(rel("kubepods/pod1").unwrap(), "kubepods/pod1");
        assert_eq!(
            rel("kubepods-burstable-pod1b2c_3d4e.slice").unwrap(),
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c_3d4e.slice"
        );
        assert_eq!(rel("kubepods.slice").unwrap(), "kubepods.slice");
        // A path of slices (the cgroupfs form of a systemd hierarchy) is a path.
        assert_eq!(
            rel("/kubepods.slice/kubepods-pod1.slice").unwrap(),
            "kubepods.slice/kubepods-pod1.slice"
        );
        // runc's systemd form.
        assert_eq!(
            rel("kubepods-besteffort.slice:cri-containerd:abc").unwrap(),
            "kubepods.slice/kubepods-besteffort.slice/cri-containerd-abc.scope"
        );
        for bad in [
            "/",
            "",
            "-.slice",
            ".slice",
            "a--b.slice",
            "-a.slice",
            "a-.slice",
            "/kubepods/../x",
            "./x",
            "a:b",
            "a.slice:p:",
            "x\0y",
        ] {
            assert!(relative(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_cgroup2_mount_is_found_in_proc_mounts() {
        let hybrid = "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(cgroup2_mount("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn a_path_that_names_no_directory_is_a_config_error_naming_it() {
        let e = resolve("/nftmesh-no-such-cgroup/pod1").unwrap_err();
        assert_eq!(e.code(), 7);
        let text = e.to_string();
        assert!(
            text.contains("runtimeConfig.cgroupPath \"/nftmesh-no-such-cgroup/pod1\""),
            "{text}"
        );
        let e = resolve("/").unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("root cgroup"), "{e}");
    }
}
