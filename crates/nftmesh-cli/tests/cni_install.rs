//! `nftmesh cni install` / `uninstall` on temp dirs (no root): the built binary run as an
//! operator (or a DaemonSet) would, the conf dir's listing and bytes compared before and after.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nftmesh");

/// A conf dir, a bin dir, a plugin binary and a plugin config in a fresh temp dir.
struct Node {
    root: PathBuf,
}

impl Node {
    fn new(test: &str) -> Node {
        let root =
            std::env::temp_dir().join(format!("nftmesh-cni-install-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for d in ["net.d", "bin", "src"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("src/nftmesh-cni"), b"\x7fELF fake plugin\x00\x01").unwrap();
        fs::write(
            root.join("src/plugin.json"),
            r#"{"capture": {"inbound_ports": "all"}}"#,
        )
        .unwrap();
        Node { root }
    }
    fn conf(&self) -> PathBuf {
        self.root.join("net.d")
    }
    fn put(&self, name: &str, text: &str, mode: u32) {
        let p = self.conf().join(name);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    fn install_args(&self, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec!["cni".into(), "install".into()];
        for (k, v) in [
            ("--conf-dir", self.conf()),
            ("--bin-dir", self.root.join("bin")),
            ("--plugin-binary", self.root.join("src/nftmesh-cni")),
            ("--plugin-config", self.root.join("src/plugin.json")),
        ] {
            a.push(k.into());
            a.push(v.display().to_string());
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }
    fn install(&self, extra: &[&str]) -> Output {
        Command::new(BIN)
            .args(self.install_args(extra))
            .output()
            .unwrap()
    }
    fn uninstall(&self, extra: &[&str]) -> Output {
        let conf = self.conf().display().to_string();
        let bin = self.root.join("bin").display().to_string();
        let mut a = vec!["cni", "uninstall", "--conf-dir", &conf, "--bin-dir", &bin];
        a.extend(extra);
        Command::new(BIN).args(a).output().unwrap()
    }
    /// Every file of the conf and bin dirs: name → (mode, bytes).
    fn snapshot(&self) -> BTreeMap<String, (u32, Vec<u8>)> {
        let mut m = BTreeMap::new();
        for d in ["net.d", "bin"] {
            for e in fs::read_dir(self.root.join(d)).unwrap() {
                let e = e.unwrap();
                let mode = e.metadata().unwrap().permissions().mode() & 0o7777;
                let name = format!("{d}/{}", e.file_name().to_string_lossy());
                m.insert(name, (mode, fs::read(e.path()).unwrap()));
            }
        }
        m
    }
    fn json(&self, name: &str) -> Value {
        serde_json::from_slice(&fs::read(self.conf().join(name)).unwrap()).unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn ok(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

fn refused(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

fn types(v: &Value) -> Vec<&str> {
    v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect()
}

/// As podman 4.3 writes a network (ptp + portmap), unusually indented and with keys unsorted.
const PTP: &str = "{\n    \"name\": \"podnet\",\n    \"cniVersion\": \"1.0.0\",\n    \"plugins\": [\n\t{ \"type\": \"ptp\", \"ipam\": { \"type\": \"host-local\", \"subnet\": \"10.88.0.0/16\" } },\n\t{ \"type\": \"portmap\", \"capabilities\": { \"portMappings\": true } }\n    ]\n}";

#[test]
fn install_appends_last_keeps_mode_is_idempotent_and_uninstall_restores_bytes() {
    let n = Node::new("conflist");
    n.put("10-podnet.conflist", PTP, 0o640);
    let before = n.snapshot();
    ok(n.install(&[]));
    let v = n.json("10-podnet.conflist");
    assert_eq!(types(&v), ["ptp", "portmap", "nftmesh-cni"]);
    assert_eq!(
        v["plugins"][2],
        json!({"type": "nftmesh-cni", "capture": {"inbound_ports": "all"}})
    );
    let once = n.snapshot();
    assert_eq!(once["net.d/10-podnet.conflist"].0, 0o640);
    // The binary: same bytes, mode 0755.
    assert_eq!(
        once["bin/nftmesh-cni"],
        (0o755, fs::read(n.root.join("src/nftmesh-cni")).unwrap())
    );
    ok(n.install(&[]));
    assert_eq!(n.snapshot(), once, "installing twice changed something");
    ok(n.uninstall(&[]));
    assert_eq!(
        n.snapshot(),
        before,
        "uninstall did not restore the conf dir byte for byte"
    );
}

#[test]
fn install_replaces_an_older_entry_of_ours_in_place() {
    let n = Node::new("replace");
    let old = json!({"cniVersion": "1.0.0", "name": "x", "plugins": [
        {"type": "ptp"}, {"type": "nftmesh-cni", "capture": {"old": true}}, {"type": "portmap"}]});
    n.put("10-x.conflist", &old.to_string(), 0o644);
    ok(n.install(&[]));
    let v = n.json("10-x.conflist");
    assert_eq!(types(&v), ["ptp", "nftmesh-cni", "portmap"]);
    assert_eq!(v["plugins"][1]["capture"], json!({"inbound_ports": "all"}));
}

#[test]
fn a_conf_becomes_a_conflist_and_uninstall_brings_the_conf_back() {
    let n = Node::new("conf");
    // bridge.conf from istio's cni/pkg/install/testdata, as written there.
    let conf = "{\n  \"cniVersion\": \"0.4.0\",\n  \"name\": \"dbnet\",\n  \"type\": \"bridge\",\n  \"bridge\": \"cni0\",\n  \"ipam\": {\n    \"type\": \"host-local\",\n    \"subnet\": \"10.1.0.0/16\",\n    \"gateway\": \"10.1.0.1\"\n  },\n  \"dns\": {\n    \"nameservers\": [ \"10.1.0.1\" ]\n  }\n}\n";
    n.put("10-bridge.conf", conf, 0o600);
    let before = n.snapshot();
    ok(n.install(&[]));
    assert!(!n.conf().join("10-bridge.conf").exists());
    let v = n.json("10-bridge.conflist");
    assert_eq!(
        (v["name"].as_str(), v["cniVersion"].as_str()),
        (Some("dbnet"), Some("0.4.0"))
    );
    assert_eq!(types(&v), ["bridge", "nftmesh-cni"]);
    assert!(v["plugins"][0].get("cniVersion").is_none());
    assert_eq!(n.snapshot()["net.d/10-bridge.conflist"].0, 0o600);
    ok(n.install(&[]));
    ok(n.uninstall(&[]));
    assert_eq!(n.snapshot(), before);
}

#[test]
fn the_lexically_first_config_is_the_primary() {
    let n = Node::new("first");
    let other =
        json!({"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "bridge"}]}).to_string();
    n.put("20-b.conflist", &other, 0o644);
    n.put("10-a.conflist", PTP, 0o644);
    n.put("05-z.json", "{}", 0o644);
    n.put(".01-hidden.conflist", "not json", 0o644);
    n.put("README", "x", 0o644);
    ok(n.install(&[]));
    assert_eq!(types(&n.json("10-a.conflist")).last(), Some(&"nftmesh-cni"));
    assert_eq!(
        fs::read_to_string(n.conf().join("20-b.conflist")).unwrap(),
        other
    );
}

/// How a refusal case breaks the node.
type Setup = dyn Fn(&Node);

#[test]
fn bad_inputs_are_refused_with_nothing_changed() {
    let cases: &[(&str, &Setup, &str)] = &[
        (
            "noprimary",
            &|n: &Node| n.put("README", "x", 0o644),
            "no primary CNI configuration",
        ),
        (
            "unparsable",
            &|n: &Node| n.put("10-a.conflist", "{\n  \"plugins\": [\n  }", 0o644),
            "10-a.conflist:3:3",
        ),
        (
            "noplugins",
            &|n: &Node| n.put("10-a.conflist", "{\"name\": \"a\"}", 0o644),
            "no \"plugins\" array",
        ),
        (
            "notobject",
            &|n: &Node| {
                n.put("10-a.conflist", PTP, 0o644);
                fs::write(n.root.join("src/plugin.json"), "[1]").unwrap();
            },
            "plugin.json: not a JSON object",
        ),
        (
            "foreign",
            &|n: &Node| {
                n.put("10-a.conflist", PTP, 0o644);
                fs::write(n.root.join("src/plugin.json"), r#"{"type": "istio-cni"}"#).unwrap();
            },
            "plugin type is \"istio-cni\"",
        ),
        (
            "nobindir",
            &|n: &Node| {
                n.put("10-a.conflist", PTP, 0o644);
                fs::remove_dir(n.root.join("bin")).unwrap();
                fs::create_dir(n.root.join("bin2")).unwrap();
            },
            "bin dir does not exist",
        ),
    ];
    for (name, setup, message) in cases {
        let n = Node::new(name);
        setup(&n);
        let listing = |n: &Node| {
            let mut m = BTreeMap::new();
            for d in ["net.d", "src"] {
                for e in fs::read_dir(n.root.join(d)).unwrap() {
                    let e = e.unwrap();
                    m.insert(e.path(), fs::read(e.path()).unwrap());
                }
            }
            (m, n.root.join("bin").exists())
        };
        let before = listing(&n);
        let err = refused(n.install(&[]));
        assert!(err.contains(message), "{name}: {err}");
        assert_eq!(listing(&n), before, "{name}: refusal changed something");
    }
}

#[test]
fn own_file_leaves_the_primary_untouched() {
    let n = Node::new("own");
    n.put("10-podnet.conflist", PTP, 0o644);
    let primary = fs::read(n.conf().join("10-podnet.conflist")).unwrap();
    let err = refused(n.install(&["--own-file", "20-nftmesh.conflist"]));
    assert!(err.contains("sorts after the primary"), "{err}");
    ok(n.install(&["--own-file", "00-nftmesh.conflist"]));
    assert_eq!(
        fs::read(n.conf().join("10-podnet.conflist")).unwrap(),
        primary
    );
    assert_eq!(
        types(&n.json("00-nftmesh.conflist")),
        ["ptp", "portmap", "nftmesh-cni"]
    );
    ok(n.install(&["--own-file", "00-nftmesh.conflist"]));
    ok(n.uninstall(&["--own-file", "00-nftmesh.conflist"]));
    assert!(!n.conf().join("00-nftmesh.conflist").exists());
    assert!(!n.root.join("bin/nftmesh-cni").exists());
    assert_eq!(
        fs::read(n.conf().join("10-podnet.conflist")).unwrap(),
        primary
    );
}

/// The `--watch` child, killed (SIGKILL) and reaped if the test fails before it exits.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// istio#55968: the primary plugin rewrites its file without our entry; `--watch` puts it back
/// (woken by inotify), and on SIGTERM uninstalls and exits 0.
#[test]
fn watch_reinserts_after_a_rewrite_and_uninstalls_on_sigterm() {
    let n = Node::new("watch");
    n.put("10-podnet.conflist", PTP, 0o644);
    let mut child = Reap(
        Command::new(BIN)
            .args(n.install_args(&["--watch"]))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let path = n.conf().join("10-podnet.conflist");
    let has_ours = |p: &Path| {
        fs::read(p)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| types(&v).contains(&"nftmesh-cni"))
    };
    let wait_for = |what: &dyn Fn() -> bool, limit: Duration| {
        let start = Instant::now();
        while start.elapsed() < limit {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        what()
    };
    assert!(
        wait_for(&|| has_ours(&path), Duration::from_secs(10)),
        "never installed"
    );
    // Rewritten by "the primary plugin", atomically as CNI plugins do.
    let tmp = n.conf().join("podnet.tmp");
    fs::write(&tmp, PTP).unwrap();
    fs::rename(&tmp, &path).unwrap();
    let rewritten = Instant::now();
    // A bound, not a timing claim (inotify wakes it at once; a loaded CI machine once took
    // over a second).
    assert!(
        wait_for(&|| has_ours(&path), Duration::from_secs(10)),
        "not re-inserted within 10 s"
    );
    eprintln!("re-inserted after {:?}", rewritten.elapsed());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status}: {err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), PTP, "{err}");
    assert!(!n.root.join("bin/nftmesh-cni").exists());
}
