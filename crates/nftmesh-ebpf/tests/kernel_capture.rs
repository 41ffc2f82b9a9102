//! The eBPF capture with real connections: each test loads a capture, attaches it to a cgroup v2
//! directory it creates, and runs a child process (this binary again, one phase of
//! `support::child`) in a network namespace of its own that connects from outside and then
//! from inside that cgroup. Needs root; without it (or without cgroup2 or `unshare`) a test
//! prints `SKIP: why`, and fails under `CI=true`.

mod kernel_support;
mod support;

use ipnet::IpNet;
use nftmesh_ebpf::{Attachment, EbpfCapture, EbpfError, NetnsCookie, Tracked};
use nftmesh_model::config::{CaptureConfig, CidrSelection, GroupRef, OwnerGroups};
use nftmesh_test_support::skip;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use support::child::*;
use support::{run_child, run_child_in, TestCgroup, TestNetns, CHILD_ENV};

/// Not a test of its own: the entry point of the child processes (see `support::run_child`);
/// does nothing unless [`CHILD_ENV`] names a phase.
#[test]
fn child() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        support::child::run(&spec);
    }
}

fn net(ip: impl Into<IpAddr>, len: u8) -> IpNet {
    IpNet::new(ip.into(), len).expect("a valid prefix")
}

/// `None` (after printing SKIP or panicking under CI) when the test cannot run here.
fn ready() -> Option<()> {
    match support::unavailable() {
        Some(why) => {
            skip(&why);
            None
        }
        None => Some(()),
    }
}

fn load(cfg: &CaptureConfig) -> EbpfCapture {
    EbpfCapture::new(cfg).unwrap_or_else(|e| panic!("load the capture: {e}"))
}

/// Wait (bounded) until the capture tracks no connection: every redirected connection was
/// established and its proxy socket closed.
fn assert_forgets(capture: &EbpfCapture) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let t = capture.tracked().expect("read the maps");
        if t == Tracked::default() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "entries left after every socket closed: {t:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sidecar_capture_redirects_the_cgroup_only() {
    let Some(()) = ready() else { return };
    let cgroup = TestCgroup::create("ebpf");
    let cfg = CaptureConfig {
        outbound_ports_exclude: vec![EXCLUDED_PORT],
        outbound_cidrs_exclude: vec![net(EXCLUDED_PEER, 32)],
        ..CaptureConfig::sidecar()
    };
    assert_eq!(
        (
            cfg.proxy_port,
            cfg.proxy_uids.as_slice(),
            cfg.proxy_gids.as_slice()
        ),
        (PROXY_PORT, &[PROXY_UID][..], &[PROXY_GID][..])
    );
    let mut capture = load(&cfg);
    let attached = capture
        .attach(cgroup.path())
        .unwrap_or_else(|e| panic!("attach: {e}"));
    assert_eq!(attached.cgroup(), cgroup.path());
    run_child("captured", cgroup.path());
    assert_forgets(&capture);
    attached.remove().expect("remove");
    run_child("removed", cgroup.path());
}

#[test]
fn included_cidrs_ports_and_owner_groups() {
    let Some(()) = ready() else { return };
    let cgroup = TestCgroup::create("ebpf");
    let cfg = CaptureConfig {
        outbound_cidrs_include: CidrSelection::Cidrs(vec![net(PEER, 32)]),
        outbound_ports_include: vec![INCLUDED_PORT],
        owner_groups: OwnerGroups::Exclude(vec![GroupRef::Id(EXCLUDED_GID)]),
        ..CaptureConfig::default()
    };
    let mut capture = load(&cfg);
    let attached = capture
        .attach(cgroup.path())
        .unwrap_or_else(|e| panic!("attach: {e}"));
    run_child("include", cgroup.path());
    assert_forgets(&capture);
    attached.remove().expect("remove");
}

#[test]
fn dropping_the_capture_keeps_an_attachment_working_until_removed() {
    let Some(()) = ready() else { return };
    let cgroup = TestCgroup::create("ebpf");
    let cfg = CaptureConfig {
        outbound_ports_exclude: vec![EXCLUDED_PORT],
        outbound_cidrs_exclude: vec![net(EXCLUDED_PEER, 32)],
        ..CaptureConfig::sidecar()
    };
    let attached = load(&cfg)
        .attach(cgroup.path())
        .unwrap_or_else(|e| panic!("attach: {e}"));
    assert_eq!(attached.pin_dir(), None);
    // The links hold the programs and the programs their maps.
    run_child("captured", cgroup.path());
    assert_eq!(
        attached.tracked().expect("read the maps"),
        Tracked::default()
    );
    drop(attached);
    run_child("removed", cgroup.path());
}

#[test]
fn dropping_every_handle_keeps_an_installed_capture_until_removed() {
    // A BPF file system of the test's own to pin in.
    let Some(bpffs) = kernel_support::ready() else {
        return;
    };
    let cgroup = TestCgroup::create("ebpf");
    let cfg = CaptureConfig {
        outbound_ports_exclude: vec![EXCLUDED_PORT],
        outbound_cidrs_exclude: vec![net(EXCLUDED_PEER, 32)],
        ..CaptureConfig::sidecar()
    };
    let attached = load(&cfg)
        .install(bpffs.bpffs(), cgroup.path())
        .unwrap_or_else(|e| panic!("install: {e}"));
    // The pins hold the links, the links the programs and the programs their maps.
    drop(attached);
    run_child("captured", cgroup.path());
    Attachment::open(bpffs.bpffs(), cgroup.path())
        .expect("open")
        .expect("pinned")
        .remove()
        .expect("remove");
    assert_eq!(bpffs.contents(), Vec::<std::path::PathBuf>::new());
    run_child("removed", cgroup.path());
}

#[test]
fn a_missing_cgroup_is_an_error_naming_it() {
    let Some(()) = ready() else { return };
    let mut capture = load(&CaptureConfig::sidecar());
    let dir = support::cgroup2_mount()
        .expect("cgroup2")
        .join("nftmesh-test-does-not-exist");
    match capture.attach(&dir) {
        Err(e @ EbpfError::Cgroup { .. }) => {
            assert!(e.to_string().contains("nftmesh-test-does-not-exist"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_capture_for_one_network_namespace_leaves_the_cgroups_other_namespaces_alone() {
    let Some(()) = ready() else { return };
    let cgroup = TestCgroup::create("ebpf");
    let pod = TestNetns::create();
    let cfg = CaptureConfig {
        outbound_ports_exclude: vec![EXCLUDED_PORT],
        outbound_cidrs_exclude: vec![net(EXCLUDED_PEER, 32)],
        ..CaptureConfig::sidecar()
    };
    let cookie = NetnsCookie::of(&pod.path()).expect("the namespace's cookie");
    assert_ne!(cookie, NetnsCookie::current().expect("ours"));
    let mut capture = EbpfCapture::in_namespace(&cfg, cookie).expect("load");
    assert_eq!(capture.namespace(), Some(cookie));
    let attached = capture.attach(cgroup.path()).expect("attach");
    // In the pod's namespace the cgroup's connects are captured, as by `new`...
    run_child_in("captured", cgroup.path(), &pod.path());
    // ... in any other, the same cgroup's are not.
    run_child("removed", cgroup.path());
    attached.remove().expect("remove");
}
