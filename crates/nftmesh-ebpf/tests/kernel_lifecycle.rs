//! The capture's lifecycle in bpffs: it outlives the process that installed it, another
//! process finds it and removes it (leaving nothing pinned), and a replace never lets a connect
//! through uncaptured. Each test mounts a BPF file system of its own and creates its cgroup;
//! connections come from child processes (this binary again) in network namespaces of their
//! own. Needs root; otherwise `SKIP: why` (failing under `CI=true`).

mod kernel_support;
mod support;

use ipnet::IpNet;
use kernel_support::{Listeners, OTHER_PROXY_PORT};
use nftmesh_ebpf::{Attachment, Bpffs, EbpfCapture, Tracked};
use nftmesh_model::config::CaptureConfig;
use nftmesh_netlink::probe::original_dst;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};
use support::child::{APP_PORT, EXCLUDED_PEER, EXCLUDED_PORT, PEER, PROXY_PORT};
use support::{run_child, TestCgroup, CHILD_ENV};

/// Not a test of its own: the entry point of the child processes; does nothing unless
/// [`CHILD_ENV`] names a phase. Phases of `support::child` run as there.
#[test]
fn child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (phase, cgroup) = spec.split_once(':').expect("phase:cgroup");
    let cgroup = Path::new(cgroup);
    match phase.split_once('=') {
        Some(("install", bpffs)) => {
            let bpffs = Bpffs::at(Path::new(bpffs)).expect("the test's bpffs");
            let attached = EbpfCapture::new(&captured_config())
                .and_then(|mut c| c.install(&bpffs, cgroup))
                .unwrap_or_else(|e| panic!("install: {e}"));
            // Exiting with the handles dropped: the pins keep the capture.
            drop(attached);
        }
        Some(("remove", bpffs)) => {
            let bpffs = Bpffs::at(Path::new(bpffs)).expect("the test's bpffs");
            Attachment::open(&bpffs, cgroup)
                .unwrap_or_else(|e| panic!("open: {e}"))
                .expect("a capture pinned for the cgroup")
                .remove()
                .unwrap_or_else(|e| panic!("remove: {e}"));
        }
        Some(("replace", marker)) => connect_through_a_replace(cgroup, Path::new(marker)),
        _ => support::child::run(&spec),
    }
}

/// `CaptureConfig::sidecar()` with what the "captured" phase of `support::child` expects.
fn captured_config() -> CaptureConfig {
    CaptureConfig {
        outbound_ports_exclude: vec![EXCLUDED_PORT],
        outbound_cidrs_exclude: vec![IpNet::new(IpAddr::V4(EXCLUDED_PEER), 32).expect("prefix")],
        ..CaptureConfig::sidecar()
    }
}

/// Wait (bounded) until the pinned maps track no connection.
fn assert_forgets(attached: &Attachment) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let t = attached.tracked().expect("read the pinned maps");
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
fn the_capture_outlives_its_installer_and_another_process_removes_it() {
    let Some(bpffs) = kernel_support::ready() else {
        return;
    };
    let cgroup = TestCgroup::create("ebpf");
    let mount = bpffs.dir().display().to_string();
    // Installed by a process that exits.
    run_child(&format!("install={mount}"), cgroup.path());
    let attached = Attachment::open(bpffs.bpffs(), cgroup.path())
        .expect("open")
        .expect("a capture pinned for the cgroup");
    assert_eq!(
        attached.programs(),
        [
            "nftmesh_getsockopt",
            "nftmesh_sockops",
            "nftmesh_getpeername4",
            "nftmesh_getpeername6",
            "nftmesh_connect4",
            "nftmesh_connect6"
        ]
    );
    let pin_dir = attached.pin_dir().expect("pinned").to_path_buf();
    assert!(pin_dir.starts_with(bpffs.dir().join("nftmesh")));
    // Another process of the cgroup is captured.
    run_child("captured", cgroup.path());
    assert_forgets(&attached);
    // A third one removes it.
    run_child(&format!("remove={mount}"), cgroup.path());
    assert!(!pin_dir.exists(), "the pin directory is gone");
    assert_eq!(bpffs.contents(), Vec::<std::path::PathBuf>::new());
    assert!(Attachment::open(bpffs.bpffs(), cgroup.path())
        .expect("open")
        .is_none());
    run_child("removed", cgroup.path());
}

#[test]
fn a_replace_never_lets_a_connect_through_and_keeps_the_original_destinations() {
    let Some(bpffs) = kernel_support::ready() else {
        return;
    };
    let cgroup = TestCgroup::create("ebpf");
    let mut first = EbpfCapture::new(&CaptureConfig::sidecar()).expect("load");
    let attached = first.install(bpffs.bpffs(), cgroup.path()).expect("attach");
    let marker = bpffs.dir().with_extension("ready");
    let _ = std::fs::remove_file(&marker);
    let spec = format!("replace={}", marker.display());
    let dir = cgroup.path().to_path_buf();
    let connects = std::thread::spawn(move || run_child(&spec, &dir));
    // The child is connecting in a loop once the marker is there.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() && !connects.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the child never started connecting"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    let replaced = EbpfCapture::new(&CaptureConfig {
        proxy_port: OTHER_PROXY_PORT,
        ..CaptureConfig::sidecar()
    })
    .expect("load the replacement")
    .install(bpffs.bpffs(), cgroup.path())
    .expect("replace");
    assert_eq!(replaced.pin_dir(), attached.pin_dir());
    let outcome = connects.join();
    let _ = std::fs::remove_file(&marker);
    attached.remove().expect("remove");
    assert_eq!(bpffs.contents(), Vec::<std::path::PathBuf>::new());
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The child of the replace test: in the cgroup, one connection established before the
/// replace (accepted only after it), then connects in a loop, each of which must land on a
/// proxy (15001 before the replace, 15002 after) with its original destination; at least 200
/// after the first one lands on 15002. The marker file says the loop is running.
fn connect_through_a_replace(cgroup: &Path, marker: &Path) {
    kernel_support::network();
    let mut l = Listeners::default();
    l.add("peer", SocketAddr::new(PEER.into(), APP_PORT));
    kernel_support::join(cgroup);
    l.add(
        "proxy",
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), PROXY_PORT),
    );
    l.add(
        "proxy2",
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), OTHER_PROXY_PORT),
    );
    let to = SocketAddr::new(PEER.into(), APP_PORT);
    // Established before the replace: its original destination is in the maps already, and
    // is asked for again after the replace.
    let early = l.expect(0, 0, to, "proxy");
    std::fs::write(marker, b"connecting").expect("write the marker");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut before, mut after) = (0usize, 0usize);
    while after < 200 {
        assert!(
            Instant::now() < deadline,
            "the replace did not show within 20 s ({before} connects on 15001)"
        );
        let got = l.connect(0, 0, to);
        match got.name {
            "proxy" if after == 0 => before += 1,
            "proxy2" => after += 1,
            other => panic!(
                "connect {} after {before} on 15001 and {after} on 15002 landed on {other}",
                before + after + 1
            ),
        }
        assert_eq!(got.original, Some(to), "original destination of a connect");
    }
    assert_eq!(
        original_dst(&early.server),
        Some(to),
        "original destination, after the replace, of the connection established before it"
    );
    println!("{before} connects before the replace, {after} after");
}
