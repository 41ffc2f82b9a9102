//! What can go wrong between a `CaptureConfig` and programs attached to a cgroup.

use nftmesh_model::config::ConfigError;
use std::path::PathBuf;

/// An error of the eBPF capture backend; each names the setting, program, map or cgroup it is
/// about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EbpfError {
    /// The configuration is invalid (what `CaptureConfig::validate` refuses).
    #[error("invalid capture configuration: {0}")]
    Config(#[from] ConfigError),
    /// A setting the eBPF backend cannot apply with the nf_tables capture's semantics (yet);
    /// refused rather than approximated.
    #[error("the eBPF backend cannot apply {setting}: {reason}")]
    Unsupported {
        /// The `CaptureConfig` field.
        setting: &'static str,
        /// Why, and what to use instead.
        reason: &'static str,
    },
    /// An owner group given by name that was not resolved to a gid
    /// (`CaptureConfig::resolve_groups` does that).
    #[error("owner group {name:?} is not resolved to a gid")]
    UnresolvedGroup {
        /// The group's name.
        name: String,
    },
    /// The compiled BPF object could not be parsed or its maps created.
    #[error("cannot load the BPF object: {}", chain(.0))]
    Object(#[source] aya::EbpfError),
    /// The BPF object lacks a program or map this crate expects (a build mismatch).
    #[error("the BPF object has no {kind} {name}")]
    Missing {
        /// `"program"` or `"map"`.
        kind: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// A program was refused by the kernel (the message carries the verifier's log) or could
    /// not be attached or detached.
    #[error("BPF program {program}: {}", chain(source))]
    Program {
        /// The program's name in `bpf/capture.c`.
        program: &'static str,
        /// aya's error.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map could not be opened, read or written.
    #[error("BPF map {map}: {}", chain(source))]
    Map {
        /// The map's name in `bpf/capture.c`.
        map: &'static str,
        /// aya's error.
        #[source]
        source: aya::maps::MapError,
    },
    /// No BPF file system is mounted (`/proc/mounts` lists none); mount one
    /// (`mount -t bpf bpf /sys/fs/bpf`) to pin captures.
    #[error("no BPF file system is mounted (see /proc/mounts): mount -t bpf bpf /sys/fs/bpf")]
    NoBpffs,
    /// The directory given as a BPF file system is not one.
    #[error("{} is not a mounted BPF file system", path.display())]
    NotBpffs {
        /// The directory.
        path: PathBuf,
    },
    /// A file or directory of a capture's pins in bpffs could not be created, read or removed.
    #[error("cannot {action} {}: {source}", path.display())]
    Pin {
        /// The file or directory.
        path: PathBuf,
        /// What was being done: `"create"`, `"read"`, `"unpin"`, ...
        action: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A program's link could not be created, pinned, opened, given its new program or
    /// detached.
    #[error("cannot {action} the link of BPF program {program}{}: {source}", pinned_at(.path))]
    Link {
        /// The program's name in `bpf/capture.c`.
        program: &'static str,
        /// Its pin, if it is pinned.
        path: Option<PathBuf>,
        /// `"create"`, `"pin"`, `"open"`, `"update"` (replace its program) or `"detach"`.
        action: &'static str,
        /// The system call's error.
        #[source]
        source: std::io::Error,
    },
    /// A map pinned by an earlier install does not have the layout this build's programs use
    /// (an install by another version): remove that capture first.
    #[error("the pinned map {} has {what} {found}, this build needs {expected}: remove the capture first", path.display())]
    PinnedMapMismatch {
        /// The pinned map.
        path: PathBuf,
        /// `"key size"`, `"value size"` or `"max entries"`.
        what: &'static str,
        /// What the pinned map has.
        found: u32,
        /// What this build's programs need.
        expected: u32,
    },
    /// The cgroup directory could not be opened.
    #[error("cgroup {}: {source}", path.display())]
    Cgroup {
        /// The directory.
        path: PathBuf,
        /// The error opening it.
        #[source]
        source: std::io::Error,
    },
    /// The network namespace file (`/proc/PID/ns/net`, `/var/run/netns/NAME`) could not be
    /// opened.
    #[error("network namespace {}: {source}", path.display())]
    Netns {
        /// The file.
        path: PathBuf,
        /// The error opening it.
        #[source]
        source: std::io::Error,
    },
}

/// ` pinned at <path>`, or nothing.
fn pinned_at(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" pinned at {}", p.display()))
        .unwrap_or_default()
}

/// `e` and its sources, joined by `: ` (aya's errors keep the system call's errno in a source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    text
}
