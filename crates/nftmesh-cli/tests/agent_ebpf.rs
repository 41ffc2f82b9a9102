//! `nftmesh agent` holding eBPF pods (`agent add --cgroup`), as processes in a private node
//! (`unshare -n -m`) with a BPF file system and cgroups of the test's own: the programs
//! attached and shown by `status`, re-attached after another process unpins or detaches them,
//! adopted untouched after a restart (same link and program ids) or re-attached when
//! incomplete, removed with the pod when its cgroup is gone, and removed (pins and inbound
//! table) by `agent remove`; bad cgroups refused naming them, changing nothing. Every wait is
//! bounded; only processes the test started are killed.

mod common;

use common::agent::*;
use nftmesh::ebpf::{Attachment, Bpffs};
use nftmesh_test_support::bpffs::TestBpffs;
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Where cgroup v2 is mounted.
fn cgroup2_mount() -> PathBuf {
    nftmesh_test_support::cgroup::cgroup2_mount().expect("a cgroup2 mount")
}

/// A cgroup directory of the test's own, removed on drop (bounded retries).
struct Cgroup(PathBuf);

impl Cgroup {
    fn create(tag: &str) -> Self {
        let dir = cgroup2_mount().join(format!("nftmesh-agent-test-{}-{tag}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Cgroup(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn id(&self) -> u64 {
        std::fs::metadata(&self.0).unwrap().ino()
    }

    /// Remove it now (it holds no process).
    fn delete(&self) {
        std::fs::remove_dir(&self.0).unwrap();
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.0.exists() && std::fs::remove_dir(&self.0).is_err() {
            if Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The agent with `--bpffs`, resync every half second, its log kept in `log`.
fn start(d: &Dirs, bpffs: &TestBpffs, log: &Path) -> Agent {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let bpffs = bpffs.path().to_str().unwrap();
    Agent::start_logging(d, "0.5", &["--bpffs", bpffs], Stdio::from(file))
}

/// `(program, link id, program id, cgroup id)` of each link `status` shows.
fn links(d: &Dirs, netns: &str) -> Vec<(String, u64, u64, u64)> {
    let s = status(d, netns);
    assert_eq!(s["backend"], "ebpf", "{s:#}");
    s["ebpf"]["links"]
        .as_array()
        .unwrap_or_else(|| panic!("links: {s:#}"))
        .iter()
        .map(|l| {
            let n = |k: &str| l[k].as_u64().unwrap();
            (
                l["program"].as_str().unwrap().to_string(),
                n("link_id"),
                n("program_id"),
                n("cgroup_id"),
            )
        })
        .collect()
}

/// Every program a sidecar capture without DNS capture links.
const PROGRAMS: [&str; 6] = [
    "nftmesh_getsockopt",
    "nftmesh_sockops",
    "nftmesh_getpeername4",
    "nftmesh_getpeername6",
    "nftmesh_connect4",
    "nftmesh_connect6",
];

/// Whether every program is attached to `cgroup` (cgroup id of each link).
fn complete(links: &[(String, u64, u64, u64)], cgroup: u64) -> bool {
    PROGRAMS
        .iter()
        .all(|p| links.iter().any(|l| l.0 == *p && l.3 == cgroup))
}

fn ebpf_flags(cg: &Cgroup) -> Vec<&str> {
    vec!["--cgroup", cg.path(), "-i", "*", "-b", "*"]
}

#[test]
fn an_ebpf_pod_is_repaired_readopted_untouched_and_removed() {
    if !in_node("an_ebpf_pod_is_repaired_readopted_untouched_and_removed") {
        return;
    }
    let d = Dirs::new();
    let bpffs = TestBpffs::mount("agent").expect("mount a bpffs");
    let cg = Cgroup::create("a");
    let log = d.root.join("agent.log");
    let agent = start(&d, &bpffs, &log);
    let p = pod("e1");
    add(&d, &p, &ebpf_flags(&cg));

    // Attached, shown, recorded as eBPF; the namespace has the inbound capture only.
    let first = links(&d, &p);
    assert!(complete(&first, cg.id()), "{first:?}");
    let rules = ruleset(&p);
    assert!(rules.contains("redirect to :15006"), "{rules}");
    assert!(!rules.contains("jump istio-redirect"), "{rules}");
    let records: Vec<Value> = std::fs::read_dir(d.state().join("pods"))
        .unwrap()
        .map(|f| serde_json::from_slice(&std::fs::read(f.unwrap().path()).unwrap()).unwrap())
        .collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["version"], 3);
    assert_eq!(records[0]["pod"]["ebpf"]["cgroup"], cg.path());

    // Another process unpins one link (the link goes with its pin): re-attached at resync.
    let pin_dir = bpffs.path().join("nftmesh").join(cg.id().to_string());
    std::fs::remove_file(pin_dir.join("link_connect4")).unwrap();
    eventually("connect4 re-attached", || {
        let l = links(&d, &p);
        complete(&l, cg.id()) && l != first
    });
    let s = status(&d, &p);
    let causes = s["recent_repairs"].to_string();
    assert!(causes.contains("nftmesh_connect4"), "{s:#}");
    assert!(s["repairs"].as_u64().unwrap() >= 1, "{s:#}");

    // Another process detaches every link (and unpins them): re-attached at resync.
    let fs = Bpffs::at(bpffs.path()).unwrap();
    Attachment::open(&fs, &cg.0)
        .unwrap()
        .expect("pinned")
        .remove()
        .unwrap();
    eventually("every program re-attached", || {
        complete(&links(&d, &p), cg.id())
    });

    // A restart adopts the complete capture as it is: the same links running the same
    // programs (a re-install would load new programs, a re-attach make new links).
    let before = links(&d, &p);
    let repairs = status(&d, &p)["repairs"].as_u64().unwrap();
    assert_eq!(agent.kill("KILL"), None);
    let agent = start(&d, &bpffs, &log);
    assert_eq!(links(&d, &p), before, "re-adopted untouched");
    let s = status(&d, &p);
    assert_eq!(s["repairs"].as_u64().unwrap(), 0, "{s:#}");
    assert!(repairs >= 2);

    // Restarted with one link unpinned meanwhile: that program is attached again, the other
    // links are kept (same ids).
    assert_eq!(agent.kill("KILL"), None);
    std::fs::remove_file(pin_dir.join("link_getsockopt")).unwrap();
    let agent = start(&d, &bpffs, &log);
    let after = links(&d, &p);
    assert!(complete(&after, cg.id()), "{after:?}");
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.0, a.0);
        if b.0 == "nftmesh_getsockopt" {
            assert_ne!(b.1, a.1, "a new link for getsockopt");
        } else {
            assert_eq!(b.1, a.1, "{} kept its link", b.0);
        }
    }
    let s = status(&d, &p);
    assert!(s["recent_repairs"].to_string().contains("adopt"), "{s:#}");

    // remove: programs, pins and the inbound table gone; the pod forgotten.
    let (ok, _, err) = cli(&d, &["remove", "--network-namespace", &p]);
    assert!(ok, "{err}");
    assert!(!bpffs.has_pins(), "pins left after remove");
    assert!(!ruleset(&p).contains("istio"));
    let (_, out, _) = cli(&d, &["list"]);
    assert!(out.trim().is_empty(), "{out}");
    drop(agent);
}

#[test]
fn a_pod_whose_cgroup_is_gone_is_forgotten_at_restart_with_its_pins() {
    if !in_node("a_pod_whose_cgroup_is_gone_is_forgotten_at_restart_with_its_pins") {
        return;
    }
    let d = Dirs::new();
    let bpffs = TestBpffs::mount("agent").expect("mount a bpffs");
    let gone = Cgroup::create("gone");
    let kept = Cgroup::create("kept");
    let log = d.root.join("agent.log");
    let agent = start(&d, &bpffs, &log);
    let (p1, p2) = (pod("g1"), pod("g2"));
    add(&d, &p1, &ebpf_flags(&gone));
    add(&d, &p2, &ebpf_flags(&kept));
    let kept_links = links(&d, &p2);
    let gone_pins = bpffs.path().join("nftmesh").join(gone.id().to_string());
    assert!(gone_pins.exists());
    assert_eq!(agent.kill("KILL"), None);
    gone.delete();
    let agent = start(&d, &bpffs, &log);
    // Forgotten, pins and inbound table removed; the other pod adopted untouched.
    let (_, out, _) = cli(&d, &["list"]);
    assert_eq!(out.trim(), p2, "{out}");
    assert!(!gone_pins.exists(), "the gone cgroup's pins are left");
    assert!(!ruleset(&p1).contains("istio"), "{}", ruleset(&p1));
    assert_eq!(links(&d, &p2), kept_links);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("is gone"), "{text}");
    let (ok, _, err) = cli(&d, &["remove", "--network-namespace", &p2]);
    assert!(ok, "{err}");
    assert!(!bpffs.has_pins());
    drop(agent);
}

#[test]
fn bad_cgroups_are_refused_naming_them_and_change_nothing() {
    if !in_node("bad_cgroups_are_refused_naming_them_and_change_nothing") {
        return;
    }
    let d = Dirs::new();
    let bpffs = TestBpffs::mount("agent").expect("mount a bpffs");
    let log = d.root.join("agent.log");
    let _agent = start(&d, &bpffs, &log);
    let p = pod("b1");
    let root = cgroup2_mount();
    let missing = root.join(format!("nftmesh-agent-test-{}-none", std::process::id()));
    let file = root.join("cgroup.procs");
    for (cgroup, words) in [
        (
            "relative/cg".to_string(),
            vec!["--cgroup relative/cg", "absolute"],
        ),
        ("/tmp".into(), vec!["/tmp", "cgroup v2"]),
        (
            root.display().to_string(),
            vec![root.to_str().unwrap(), "every process"],
        ),
        (
            missing.display().to_string(),
            vec![missing.to_str().unwrap(), "No such file"],
        ),
        (
            file.display().to_string(),
            vec!["cgroup.procs", "not a directory"],
        ),
    ] {
        let (ok, _, err) = cli(
            &d,
            &[
                "add",
                "--network-namespace",
                &p,
                "--cgroup",
                &cgroup,
                "-i",
                "*",
            ],
        );
        assert!(!ok, "{cgroup} accepted");
        for w in words {
            assert!(err.contains(w), "{cgroup}: {err}");
        }
        assert!(!bpffs.has_pins(), "{cgroup}: pinned");
        assert!(!ruleset(&p).contains("istio"), "{cgroup}: tables");
        let (_, out, _) = cli(&d, &["list"]);
        assert!(out.trim().is_empty(), "{cgroup}: registered");
    }
    // An ambient capture cannot go with a cgroup either.
    let amb = d.root.join("ambient.json");
    std::fs::write(&amb, "{}").unwrap();
    let cg = Cgroup::create("amb");
    let (ok, _, err) = cli(
        &d,
        &[
            "add",
            "--network-namespace",
            &p,
            "--ambient-config",
            amb.to_str().unwrap(),
            "--cgroup",
            cg.path(),
        ],
    );
    assert!(!ok && err.contains("cgroup"), "{err}");
    assert!(!bpffs.has_pins());
}

#[test]
fn a_pod_gone_with_its_cgroup_is_forgotten_at_resync_and_its_pins_removed() {
    if !in_node("a_pod_gone_with_its_cgroup_is_forgotten_at_resync_and_its_pins_removed") {
        return;
    }
    let d = Dirs::new();
    let bpffs = TestBpffs::mount("agent").expect("mount a bpffs");
    let cg = Cgroup::create("resync");
    let log = d.root.join("agent.log");
    let _agent = start(&d, &bpffs, &log);
    let p = pod("r1");
    add(&d, &p, &ebpf_flags(&cg));
    assert!(bpffs.has_pins());
    // The pod ends: its namespace and its cgroup are deleted, nobody removes its capture.
    in_pod_gone(&p);
    cg.delete();
    eventually("forgotten with its pins at resync", || {
        let (_, out, _) = cli(&d, &["list"]);
        out.trim().is_empty() && !bpffs.has_pins()
    });
}

/// `ip netns del` the pod.
fn in_pod_gone(netns: &str) {
    let name = Path::new(netns).file_name().unwrap().to_str().unwrap();
    let o = std::process::Command::new("ip")
        .args(["netns", "del", name])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn check_names_a_program_that_is_not_attached() {
    if !in_node("check_names_a_program_that_is_not_attached") {
        return;
    }
    let d = Dirs::new();
    let bpffs = TestBpffs::mount("agent").expect("mount a bpffs");
    let cg = Cgroup::create("check");
    // No resync during the test: nothing repairs what the check must see.
    let _agent = Agent::start_logging(
        &d,
        "600",
        &["--bpffs", bpffs.path().to_str().unwrap()],
        Stdio::null(),
    );
    let p = pod("c1");
    add(&d, &p, &ebpf_flags(&cg));
    let check = || {
        nftmesh_protocol::client::call(
            &d.socket(),
            &nftmesh_protocol::Request::check(Path::new(&p)),
            Duration::from_secs(10),
        )
        .expect("check")
    };
    assert!(check().failure.is_none(), "{:?}", check());
    let pin = bpffs
        .path()
        .join("nftmesh")
        .join(cg.id().to_string())
        .join("link_connect4");
    std::fs::remove_file(pin).unwrap();
    let failure = check().failure.expect("a failed check");
    assert_eq!(
        failure.differences,
        [format!(
            "eBPF program nftmesh_connect4 is not attached to {}",
            cg.path()
        )]
    );
}
