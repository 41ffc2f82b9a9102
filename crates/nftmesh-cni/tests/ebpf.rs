//! `"backend": "ebpf"` through the real runtime path (issue 27 item 7): `cnitool` (libcni)
//! passes `CAP_ARGS` `{"cgroupPath": ...}` as `runtimeConfig` because the entry declares the
//! `cgroupPath` capability, as containerd's CRI plugin passes the pod's cgroup parent. Each
//! test runs in a private node (see `common`) with a cgroup v2 directory of its own (created
//! under the cgroup2 mount, removed at the end; never the machine's root cgroup) and a BPF
//! file system mounted in a temp dir (never `/sys/fs/bpf`).

mod common;

use common::*;
use nftmesh::ebpf::{Attachment, Bpffs};
use nftmesh_test_support::bpffs::TestBpffs;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the kernel may take to let an emptied cgroup go.
const WAIT: Duration = Duration::from_secs(5);

fn cgroup2_mount() -> Option<PathBuf> {
    nftmesh_cni::cgroup::cgroup2_mount(&std::fs::read_to_string("/proc/mounts").ok()?)
}

/// Cgroup directories this test created (nested, outermost first), removed innermost first
/// on drop.
struct Cgroup {
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// `relative` (e.g. `a.slice/a-b.slice`) created under the cgroup2 mount, each level.
    fn create(relative: &str) -> Result<Self, String> {
        let mount = cgroup2_mount().ok_or("no cgroup2 file system is mounted")?;
        let mut made = Cgroup { dirs: Vec::new() };
        let mut dir = mount;
        for part in relative.split('/') {
            dir.push(part);
            std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            made.dirs.push(dir.clone());
        }
        Ok(made)
    }

    /// The innermost directory: the pod's cgroup.
    fn pod(&self) -> &Path {
        self.dirs.last().unwrap()
    }

    /// Run `f` with this process in the pod's cgroup, then move it back where it was.
    fn with_this_process_in<T>(&self, f: impl FnOnce() -> T) -> T {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let was = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 line in /proc/self/cgroup");
        let back = cgroup2_mount()
            .unwrap()
            .join(was.trim_start_matches('/'))
            .join("cgroup.procs");
        let pid = std::process::id().to_string();
        std::fs::write(self.pod().join("cgroup.procs"), &pid).expect("join the pod's cgroup");
        let got = f();
        std::fs::write(&back, &pid).expect("leave the pod's cgroup");
        got
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            let deadline = Instant::now() + WAIT;
            while std::fs::remove_dir(dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// What is attached to `cgroup`, as `nftmesh::ebpf` finds it in this bpffs.
fn attached(bpffs: &TestBpffs, cgroup: &Path) -> Option<Vec<&'static str>> {
    let bpffs = Bpffs::at(bpffs.path()).expect("the test's bpffs");
    Attachment::open(&bpffs, cgroup)
        .expect("open the attachment")
        .map(|a| a.programs())
}

/// In the node: the cgroup `relative` and a bpffs, or `None` after `SKIP: why`.
fn ready(relative: &str) -> Option<(Cgroup, TestBpffs)> {
    let setup =
        || -> Result<_, String> { Ok((Cgroup::create(relative)?, TestBpffs::mount("cni")?)) };
    match setup() {
        Ok(r) => Some(r),
        Err(why) => {
            skip(&why);
            None
        }
    }
}

/// The entry: a sidecar capture of every destination with the eBPF backend pinning in `bpffs`, the cgroup asked for.
fn entry(bpffs: &TestBpffs) -> Value {
    json!({
        "capture": {"outbound_cidrs_include": "all"},
        "backend": "ebpf",
        "bpffs": bpffs.0,
        "capabilities": {"cgroupPath": true},
    })
}

fn caps(cgroup_path: &str) -> Value {
    json!({ "cgroupPath": cgroup_path })
}

fn ok(o: std::process::Output, what: &str) {
    assert!(
        o.status.success(),
        "cnitool {what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn add_attaches_to_the_pods_cgroup_and_del_removes_everything() {
    if !in_node("add_attaches_to_the_pods_cgroup_and_del_removes_everything") {
        return;
    }
    let name = format!("nftmesh-cni-test-{}", std::process::id());
    let Some((cgroup, bpffs)) = ready(&name) else {
        return;
    };
    let net = Net::new(entry(&bpffs));
    // containerd's cgroupfs form: a path from the cgroup root.
    let pod = caps(&format!("/{name}"));
    ok(net.cnitool_caps("add", &pod), "add");

    let programs = attached(&bpffs, cgroup.pod()).expect("programs attached");
    assert!(programs.contains(&"nftmesh_connect4"), "{programs:?}");
    // The inbound capture is in the pod's namespace; nothing jumps to the outbound redirect.
    assert_eq!(ours(&net.tables()), vec!["istio-proxy-nat"]);
    let rules = net.ruleset();
    assert!(rules.contains("redirect to :15006"), "{rules}");
    assert!(!rules.contains("jump istio-redirect"), "{rules}");

    // A connection of a process in the cgroup, in the pod's namespace, lands on 15001 with its
    // original destination (read in the cgroup: cgroup/getsockopt answers SO_ORIGINAL_DST).
    let to: SocketAddr = format!("{GATEWAY}:8080").parse().unwrap();
    assert_eq!(cgroup.with_this_process_in(|| net.captured()), Some(to));
    // Outside the cgroup the same connection is not captured (no nf_tables outbound rule).
    assert!(net.reaches_peer(), "outside the cgroup: reaches the peer");

    ok(net.cnitool_caps("check", &pod), "check");

    ok(net.cnitool_caps("del", &pod), "del");
    assert_eq!(attached(&bpffs, cgroup.pod()), None);
    assert!(!bpffs.has_pins(), "pins left in {}", bpffs.0.display());
    assert!(ours(&net.tables()).is_empty(), "{:?}", net.tables());
    // CHECK (the plugin run directly: the address plugin's CHECK fails after DEL) now names
    // what is missing.
    let mut stdin = entry(&bpffs);
    for (k, v) in [
        ("cniVersion", json!("1.0.0")),
        ("name", json!("meshnet")),
        ("type", json!("nftmesh-cni")),
        ("runtimeConfig", pod.clone()),
        ("prevResult", prev()),
    ] {
        stdin[k] = v;
    }
    let (code, out) = plugin("CHECK", &net.pod, &stdin, "");
    assert_eq!((code, out["code"].as_u64()), (1, Some(101)), "{out}");
    let details = out["details"].as_str().unwrap();
    assert!(details.contains("no eBPF program is attached"), "{out}");
}

#[test]
fn a_systemd_slice_cgroup_path_resolves_to_its_nested_directory() {
    if !in_node("a_systemd_slice_cgroup_path_resolves_to_its_nested_directory") {
        return;
    }
    let top = format!("nftmeshcnitest{}", std::process::id());
    let slice = format!("{top}-pod1.slice");
    let Some((cgroup, bpffs)) = ready(&format!("{top}.slice/{slice}")) else {
        return;
    };
    let net = Net::new(entry(&bpffs));
    ok(net.cnitool_caps("add", &caps(&slice)), "add");
    let programs = attached(&bpffs, cgroup.pod()).expect("attached to the slice");
    assert!(programs.contains(&"nftmesh_connect4"), "{programs:?}");
    // Not on the parent slice.
    assert_eq!(attached(&bpffs, &cgroup.dirs[0]), None);
    ok(net.cnitool_caps("del", &caps(&slice)), "del");
    assert!(!bpffs.has_pins());
    assert!(ours(&net.tables()).is_empty(), "{:?}", net.tables());
}

#[test]
fn without_a_cgroup_the_add_fails_with_the_config_code_and_changes_nothing() {
    if !in_node("without_a_cgroup_the_add_fails_with_the_config_code_and_changes_nothing") {
        return;
    }
    let name = format!("nftmesh-cni-test-{}", std::process::id());
    let Some((_cgroup, bpffs)) = ready(&name) else {
        return;
    };
    let net = Net::new(entry(&bpffs));
    // The runtime passed no cgroupPath; then one that names no directory.
    let missing = format!("/{name}-missing");
    for (cap_args, says) in [
        (json!({}), "passed no runtimeConfig.cgroupPath"),
        (caps(&missing), missing.as_str()),
    ] {
        let o = net.cnitool_caps("add", &cap_args);
        assert!(!o.status.success(), "{cap_args}: ADD succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{cap_args}: {err}");
        assert!(ours(&net.tables()).is_empty(), "{:?}", net.tables());
        assert!(!bpffs.has_pins(), "{cap_args}: pinned");
        // libcni does not DEL after a failed ADD; the runtime does, and DEL succeeds without
        // a cgroup to remove programs from (the network plugin frees the pod's address).
        ok(net.cnitool_caps("del", &cap_args), "del");
    }
    // The plugin's own error object: the config code, naming the capability.
    let stdin = json!({
        "cniVersion": "1.0.0", "name": "meshnet", "type": "nftmesh-cni", "capture": {},
        "backend": "ebpf", "bpffs": bpffs.0, "prevResult": prev(),
    });
    let (code, out) = plugin("ADD", &net.pod, &stdin, "");
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    assert!(
        out["details"].as_str().unwrap().contains("cgroupPath"),
        "{out}"
    );
    assert!(ours(&net.tables()).is_empty());
    assert!(!bpffs.has_pins());
}

#[test]
fn del_after_the_pods_cgroup_is_gone_removes_its_pins() {
    if !in_node("del_after_the_pods_cgroup_is_gone_removes_its_pins") {
        return;
    }
    let name = format!("nftmesh-cni-gone-{}", std::process::id());
    let Some((mut cgroup, bpffs)) = ready(&name) else {
        return;
    };
    let net = Net::new(entry(&bpffs));
    let pod = caps(&format!("/{name}"));
    ok(net.cnitool_caps("add", &pod), "add");
    assert!(attached(&bpffs, cgroup.pod()).is_some());
    // The runtime deletes the pod's cgroup before DEL comes: the pins can no longer be found
    // by the directory's inode.
    let dir = cgroup.dirs.pop().unwrap();
    std::fs::remove_dir(&dir).expect("rmdir the pod's cgroup");
    assert!(bpffs.has_pins());
    ok(net.cnitool_caps("del", &pod), "del");
    assert!(!bpffs.has_pins(), "pins left in {}", bpffs.0.display());
    assert!(ours(&net.tables()).is_empty(), "{:?}", net.tables());
}

#[test]
fn sk_lookup_inbound_installs_no_table_and_del_removes_its_steering() {
    if !in_node("sk_lookup_inbound_installs_no_table_and_del_removes_its_steering") {
        return;
    }
    let name = format!("nftmesh-cni-test-lookup-{}", std::process::id());
    let Some((cgroup, bpffs)) = ready(&name) else {
        return;
    };
    let mut conf = entry(&bpffs);
    conf["ebpf_inbound"] = json!("sk_lookup");
    let net = Net::new(conf);
    let pod = caps(&format!("/{name}"));
    ok(net.cnitool_caps("add", &pod), "add");

    let programs = attached(&bpffs, cgroup.pod()).expect("programs attached");
    assert!(programs.contains(&"nftmesh_connect4"), "{programs:?}");
    let steering = nftmesh::ebpf::InboundAttachment::open(
        &Bpffs::at(bpffs.path()).expect("bpffs"),
        cgroup.pod(),
    )
    .expect("open the steering")
    .expect("sk_lookup steering installed")
    .programs();
    assert!(
        steering.iter().any(|p| p.contains("sk_lookup")),
        "{steering:?}"
    );
    // No nf_tables capture at all in the pod's namespace.
    assert!(ours(&net.tables()).is_empty(), "{:?}", net.tables());
    // Outbound still captured, with its original destination.
    let to: SocketAddr = format!("{GATEWAY}:8080").parse().unwrap();
    assert_eq!(cgroup.with_this_process_in(|| net.captured()), Some(to));

    ok(net.cnitool_caps("check", &pod), "check");
    ok(net.cnitool_caps("del", &pod), "del");
    assert_eq!(attached(&bpffs, cgroup.pod()), None);
    assert!(!bpffs.has_pins(), "pins left in {}", bpffs.0.display());
}
