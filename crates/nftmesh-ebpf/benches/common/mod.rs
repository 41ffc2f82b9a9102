//! What the eBPF benches share: the machine's cgroup2 mount, commands, CPU pinning, bounded
//! accepts, the namespace's conntrack count, medians, and entering network namespaces.
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

pub fn sh(args: &[&str]) {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The first CPU this process may run on.
pub fn a_cpu() -> usize {
    // SAFETY: cpu_set_t is plain data (all zeroes is the empty set); sched_getaffinity writes
    // at most size_of::<cpu_set_t>() bytes into it, the size passed.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let r = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        assert_eq!(r, 0, "sched_getaffinity");
        (0..libc::CPU_SETSIZE as usize)
            .find(|c| libc::CPU_ISSET(*c, &set))
            .expect("a CPU")
    }
}

/// Pin the calling thread (only it) to `cpu`.
pub fn pin(cpu: usize) {
    // SAFETY: as in a_cpu; CPU_SET stays within the set for cpu < CPU_SETSIZE, which a_cpu
    // guarantees; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let r = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(r, 0, "sched_setaffinity to CPU {cpu}");
    }
}

/// A timeout on `accept()` of a listening socket (SO_RCVTIMEO applies to it on Linux), so the
/// stand-in never waits forever for a client that failed.
pub fn accept_timeout(l: &TcpListener, wait: Duration) {
    let tv = libc::timeval {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: the fd is the listener's, open for the call; tv is a valid timeval and its size
    // is passed.
    let r = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_RCVTIMEO on the listener");
}

pub fn conntrack_count() -> u64 {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The calling thread's network namespace, held open.
pub fn this_netns() -> File {
    File::open("/proc/thread-self/ns/net").expect("/proc/thread-self/ns/net")
}

/// A new network namespace (made on a helper thread, which leaves it), held open.
pub fn new_netns() -> File {
    std::thread::spawn(|| {
        // SAFETY: unshare takes a flag word and changes only the calling (helper) thread.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare(CLONE_NEWNET)");
        this_netns()
    })
    .join()
    .expect("the helper thread")
}

/// Move the calling thread (only it) into the namespace `ns`: the sockets it creates from
/// then on, and the processes it starts, are there.
pub fn enter(ns: &File) {
    // SAFETY: the fd is an open network namespace file; setns changes only this thread.
    let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns");
}
