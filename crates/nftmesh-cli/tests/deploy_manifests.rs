//! `deploy/k8s/` checked against the Kubernetes API types and run for real, without a cluster.
//!
//! Every document of every manifest `kubectl apply -f deploy/k8s/` reads is parsed into its
//! k8s-openapi type (Kubernetes 1.33) strictly: a key the type does not know, or a value it
//! reads otherwise, fails the test with its path. Then what matters is asserted (host network,
//! each host path mounted where the commands look, capabilities exactly the justified set,
//! images, probes, the plugin's entry), and each container's argv is run with the built
//! `nftmesh`: the installer's against temp dirs standing for the host paths, the agent's in a
//! private node (`unshare -n -m`), each as root confined by `setpriv` to exactly the
//! capabilities, uid and no_new_privs its securityContext gives it. The injector patches are
//! merged (k8s-openapi's strategic merge) into Istio's init containers as Istio's injector
//! renders them with its defaults, and the results run in a pod namespace.
//!
//! Not checked here: an API server's admission, a kubelet, a container runtime, Istio's
//! injector (no cluster on this machine).

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, SecurityContext};
use k8s_openapi::api::core::v1::{ServiceAccount, Volume};
use k8s_openapi::serde::{de::DeserializeOwned, Deserialize, Serialize};
use k8s_openapi::DeepMerge;
use nftmesh_test_support::{node, skip::skip, workspace_root};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nftmesh");
const VERSION: &str = env!("CARGO_PKG_VERSION");

// ---------------------------------------------------------------------------------------------
// Reading: YAML documents, strictly typed.

fn deploy() -> PathBuf {
    workspace_root().join("deploy/k8s")
}

/// The documents of a YAML file (`---`-separated), as JSON values; empty documents skipped.
fn documents(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// Where `typed` (the value read back from its type) lost or changed what `doc` says.
fn lost(doc: &Value, typed: &Value, at: &str, out: &mut Vec<String>) {
    match (doc, typed) {
        (Value::Object(d), Value::Object(t)) => {
            for (k, v) in d {
                match t.get(k) {
                    Some(tv) => lost(v, tv, &format!("{at}.{k}"), out),
                    None => out.push(format!("{at}.{k}: unknown to the type")),
                }
            }
        }
        (Value::Array(d), Value::Array(t)) if d.len() == t.len() => {
            for (i, (dv, tv)) in d.iter().zip(t).enumerate() {
                lost(dv, tv, &format!("{at}[{i}]"), out);
            }
        }
        _ if doc == typed => {}
        _ => out.push(format!("{at}: {doc} read as {typed}")),
    }
}

/// `doc` as a `T`, refusing any key `T` ignores and any value it reads otherwise.
fn strict<T: DeserializeOwned + Serialize>(doc: &Value, what: &str) -> T {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    let mut out = Vec::new();
    lost(doc, &back, "", &mut out);
    assert!(
        out.is_empty(),
        "{what}: not read as written:\n{}",
        out.join("\n")
    );
    typed
}

fn once<T>(slot: &mut Option<T>, v: T) {
    assert!(slot.replace(v).is_none(), "two objects of one kind");
}

/// Everything `kubectl apply -f deploy/k8s/` creates, typed.
struct Manifests {
    namespace: Namespace,
    account: ServiceAccount,
    config: ConfigMap,
    daemonset: DaemonSet,
}

fn manifests() -> Manifests {
    let (mut ns, mut sa, mut cm, mut ds) = (None, None, None, None);
    let mut files: Vec<PathBuf> = fs::read_dir(deploy())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for file in files {
        let name = file.display().to_string();
        assert!(
            name.ends_with(".yaml"),
            "{name}: only .yaml manifests here (kubectl applies .json and .yml too)"
        );
        for (i, doc) in documents(&file).iter().enumerate() {
            let what = format!("{name} document {i}");
            let kind = doc["kind"].as_str().unwrap_or_default();
            match kind {
                "Namespace" => once(&mut ns, strict(doc, &what)),
                "ServiceAccount" => once(&mut sa, strict(doc, &what)),
                "ConfigMap" => once(&mut cm, strict(doc, &what)),
                "DaemonSet" => once(&mut ds, strict(doc, &what)),
                _ => panic!("{what}: a kind this test does not check: {kind:?}"),
            }
        }
    }
    Manifests {
        namespace: ns.expect("a Namespace"),
        account: sa.expect("a ServiceAccount"),
        config: cm.expect("a ConfigMap"),
        daemonset: ds.expect("a DaemonSet"),
    }
}

impl Manifests {
    fn pod(&self) -> &k8s_openapi::api::core::v1::PodSpec {
        let t = &self.daemonset.spec.as_ref().unwrap().template;
        t.spec.as_ref().unwrap()
    }
    fn container(&self, name: &str) -> &Container {
        let c = self.pod().containers.iter().find(|c| c.name == name);
        c.unwrap_or_else(|| panic!("no container {name}"))
    }
    fn volume(&self, name: &str) -> &Volume {
        let v = self.pod().volumes.iter().flatten().find(|v| v.name == name);
        v.unwrap_or_else(|| panic!("no volume {name}"))
    }
    /// The container's mounts as (host path or `configmap:NAME`, mount path, propagation,
    /// read-only).
    fn mounts(&self, container: &str) -> Vec<(String, String, String, bool)> {
        let c = self.container(container);
        let mounts = c.volume_mounts.iter().flatten().map(|m| {
            let v = self.volume(&m.name);
            let source = match (&v.host_path, &v.config_map) {
                (Some(h), None) => h.path.clone(),
                (None, Some(c)) => format!("configmap:{}", c.name),
                _ => panic!("volume {}: neither a hostPath nor a configMap", v.name),
            };
            let propagation = m.mount_propagation.clone().unwrap_or("None".into());
            (
                source,
                m.mount_path.clone(),
                propagation,
                m.read_only == Some(true),
            )
        });
        mounts.collect()
    }
    /// The plugin's entry, as the installer is given it.
    fn entry(&self) -> Value {
        let text = &self.config.data.as_ref().unwrap()["plugin.json"];
        serde_json::from_str(text).expect("plugin.json is JSON")
    }
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args.iter().position(|a| a == flag);
    let i = i.unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    &args[i + 1]
}

fn argv(c: &Container) -> Vec<String> {
    let mut v = c.command.clone().unwrap_or_default();
    v.extend(c.args.clone().unwrap_or_default());
    v
}

// ---------------------------------------------------------------------------------------------
// What the manifests say.

#[test]
fn every_manifest_parses_strictly_and_refers_to_the_others() {
    let m = manifests();
    let ns = m.namespace.metadata.name.clone().unwrap();
    assert_eq!(ns, "nftmesh-system");
    let labels = m.namespace.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("privileged"),
        "hostNetwork, hostPath and SYS_ADMIN need a privileged namespace"
    );
    for meta in [
        &m.account.metadata,
        &m.config.metadata,
        &m.daemonset.metadata,
    ] {
        assert_eq!(
            meta.namespace.as_deref(),
            Some(ns.as_str()),
            "{:?}",
            meta.name
        );
    }
    let pod = m.pod();
    assert_eq!(pod.service_account_name, m.account.metadata.name);
    assert_eq!(m.account.automount_service_account_token, Some(false));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let cm = m.volume("plugin-config").config_map.as_ref().unwrap();
    assert_eq!(Some(&cm.name), m.config.metadata.name.as_ref());
    let spec = m.daemonset.spec.as_ref().unwrap();
    let labels = spec.template.metadata.as_ref().unwrap().labels.clone();
    for (k, v) in spec.selector.match_labels.clone().unwrap() {
        assert_eq!(
            labels.as_ref().and_then(|l| l.get(&k)),
            Some(&v),
            "selector {k}"
        );
    }
}

#[test]
fn the_daemonset_runs_on_every_node_in_the_host_network() {
    let m = manifests();
    let pod = m.pod();
    assert_eq!(pod.host_network, Some(true));
    assert_ne!(
        pod.host_pid,
        Some(true),
        "pods are named by /run/netns paths"
    );
    assert_ne!(pod.host_ipc, Some(true));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    let tolerations = pod.tolerations.clone().unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "one toleration of every taint: {tolerations:?}"
    );
    let seccomp = pod
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref());
    assert_eq!(seccomp.map(|s| s.type_.as_str()), Some("RuntimeDefault"));
    let strategy = m
        .daemonset
        .spec
        .as_ref()
        .unwrap()
        .update_strategy
        .clone()
        .unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.unwrap();
    // Two agents on one node cannot run at once (state dir lock, metrics port).
    assert_eq!(
        serde_json::to_value(rolling.max_surge).unwrap(),
        serde_json::json!(0)
    );
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["install-cni", "agent"]);
    for c in &pod.containers {
        let r = c.resources.as_ref().unwrap();
        for (what, list) in [("requests", &r.requests), ("limits", &r.limits)] {
            let keys: Vec<&String> = list.iter().flatten().map(|(k, _)| k).collect();
            assert_eq!(keys, ["cpu", "memory"], "{} {what}", c.name);
        }
        let image = format!("ghcr.io/nftmesh/nftmesh-node:{VERSION}");
        assert_eq!(c.image.as_deref(), Some(image.as_str()), "{}", c.name);
        assert_eq!(c.command.clone().unwrap(), ["/usr/local/bin/nftmesh"]);
    }
}

#[test]
fn host_paths_are_mounted_where_the_commands_look() {
    let m = manifests();
    let m4 =
        |h: &str, c: &str, p: &str, ro: bool| (h.to_string(), c.to_string(), p.to_string(), ro);
    assert_eq!(
        m.mounts("install-cni"),
        [
            m4("/etc/cni/net.d", "/host/etc/cni/net.d", "None", false),
            m4("/opt/cni/bin", "/host/opt/cni/bin", "None", false),
            m4("configmap:nftmesh-cni-config", "/etc/nftmesh", "None", true),
        ]
    );
    assert_eq!(
        m.mounts("agent"),
        [
            m4("/run/netns", "/run/netns", "HostToContainer", true),
            m4("/run/netns", "/var/run/netns", "HostToContainer", true),
            m4("/var/lib/nftmesh", "/var/lib/nftmesh", "None", false),
            m4("/run/nftmesh", "/run/nftmesh", "None", false),
        ]
    );
    let bin = m.volume("cni-bin").host_path.clone().unwrap();
    assert_eq!(
        bin.type_.as_deref(),
        Some("Directory"),
        "a missing bin dir stays missing"
    );
    let install = argv(m.container("install-cni"));
    assert_eq!(install[1..5], ["cni", "install", "--watch", "--conf-dir"]);
    assert_eq!(flag(&install, "--conf-dir"), "/host/etc/cni/net.d");
    assert_eq!(flag(&install, "--bin-dir"), "/host/opt/cni/bin");
    assert_eq!(
        flag(&install, "--plugin-binary"),
        "/usr/local/bin/nftmesh-cni"
    );
    assert_eq!(
        flag(&install, "--plugin-config"),
        "/etc/nftmesh/plugin.json"
    );
    assert!(m.config.data.as_ref().unwrap().contains_key("plugin.json"));
    let agent = argv(m.container("agent"));
    assert_eq!(agent[1..3], ["agent", "run"]);
    // The socket's container path is its host path: the plugin, run by the runtime on the
    // host, reaches the agent at the entry's agent_socket.
    let socket = flag(&agent, "--socket");
    assert_eq!(socket, "/run/nftmesh/agent.sock");
    assert_eq!(m.entry()["agent_socket"], socket);
    assert_eq!(flag(&agent, "--state-dir"), "/var/lib/nftmesh");
}

/// The capability sets, as `kubectl explain` would show them.
fn caps(sc: &SecurityContext) -> (Vec<String>, Vec<String>) {
    let c = sc.capabilities.clone().unwrap_or_default();
    let mut add = c.add.unwrap_or_default();
    add.sort();
    (add, c.drop.unwrap_or_default())
}

#[test]
fn each_container_has_exactly_the_capabilities_it_needs() {
    let m = manifests();
    for c in &m.pod().containers {
        let sc = c.security_context.as_ref().unwrap();
        assert_ne!(sc.privileged, Some(true), "{}", c.name);
        assert_eq!(
            sc.run_as_user,
            Some(0),
            "{}: root, to write root's files",
            c.name
        );
        assert_eq!(sc.run_as_non_root, Some(false), "{}", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        let want: &[&str] = match c.name.as_str() {
            // Writing root-owned host directories as root needs no capability.
            "install-cni" => &[],
            // setns(CLONE_NEWNET) needs CAP_SYS_ADMIN; nf_tables/rtnetlink CAP_NET_ADMIN.
            _ => &["NET_ADMIN", "SYS_ADMIN"],
        };
        assert_eq!(
            caps(sc),
            (
                want.iter().map(|s| s.to_string()).collect(),
                vec!["ALL".into()]
            )
        );
    }
    let sc = m.container("install-cni").security_context.clone().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    // Documented as always true with CAP_SYS_ADMIN (and refused as false beside it).
    let sc = m.container("agent").security_context.clone().unwrap();
    assert_eq!(sc.allow_privilege_escalation, None);
}

#[test]
fn the_probes_reach_the_agent() {
    let m = manifests();
    let agent = m.container("agent");
    let args = argv(agent);
    let metrics: std::net::SocketAddr = flag(&args, "--metrics-addr").parse().unwrap();
    let http = agent.liveness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(
        http.host.as_deref(),
        Some(metrics.ip().to_string().as_str())
    );
    assert_eq!(serde_json::to_value(&http.port).unwrap(), metrics.port());
    let exec = agent.readiness_probe.clone().unwrap().exec.unwrap();
    let socket = flag(&args, "--socket");
    let want = [
        "/usr/local/bin/nftmesh",
        "agent",
        "list",
        "--socket",
        socket,
    ];
    assert_eq!(exec.command.unwrap(), want);
    assert!(m.container("install-cni").liveness_probe.is_none());
}

#[test]
fn the_plugin_entry_is_nftmesh_cni_with_documented_keys() {
    let entry = manifests().entry();
    let documented = [
        "type",
        "capabilities",
        "capture",
        "ambient",
        "mesh",
        "without_annotations",
        "exclude_namespaces",
        "validate",
        "validation_timeout",
        "agent_socket",
        "log_file",
        "log_level",
        "log_format",
    ];
    for k in entry.as_object().unwrap().keys() {
        assert!(
            documented.contains(&k.as_str()),
            "{k}: not a key of README's table"
        );
    }
    assert_eq!(entry["type"], "nftmesh-cni");
    assert_eq!(entry["mesh"], "istio");
    assert_eq!(
        entry["capabilities"]["io.kubernetes.cri.pod-annotations"],
        true
    );
    // The capture part is nftmesh's CaptureConfig: `nftmesh plan --config` reads it.
    let dir = TempDir::new("plan");
    let file = dir.0.join("capture.json");
    fs::write(&file, entry["capture"].to_string()).unwrap();
    let o = nftmesh(&["plan", "--config", &file.display().to_string()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

/// kubectl reads YAML 1.1, where unquoted yes/no/on/off are booleans; the YAML crate reads
/// 1.2, where they are strings. None of them unquoted, so both read the same.
#[test]
fn no_scalar_reads_differently_as_yaml_1_1() {
    let mut files = vec![deploy().join("nftmesh-node.yaml")];
    for f in [
        "istio-init.yaml",
        "istio-validation.yaml",
        "istiod-values.yaml",
    ] {
        files.push(deploy().join("injector").join(f));
    }
    for f in files {
        for (i, line) in fs::read_to_string(&f).unwrap().lines().enumerate() {
            let line = line.split(" #").next().unwrap().trim();
            let value = line
                .rsplit_once(": ")
                .map_or(line.trim_start_matches("- "), |p| p.1);
            let v = value.to_ascii_lowercase();
            let bad = ["y", "n", "yes", "no", "on", "off"].contains(&v.as_str());
            assert!(!bad, "{}:{}: unquoted {value}", f.display(), i + 1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running the containers' argv, as root, confined as their securityContext says.

struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("nftmesh-deploy-{what}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A process this test started, killed by its PID and reaped if still running when dropped.
struct Proc(Child);

impl Proc {
    /// SIGTERM by PID, then the exit status within 10 s.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let start = Instant::now();
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "alive 10 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn nftmesh(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env_clear().output().unwrap()
}

/// Whether `what` holds within `limit`, polled every 20 ms.
fn wait_for(limit: Duration, what: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    what()
}

fn root_or_skip(what: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        skip(&format!(
            "{what} needs root (to run as the container's uid and capabilities)"
        ));
    }
    root
}

/// `setpriv` arguments that give a process what `sc` gives a container: its uid and gid, no
/// supplementary groups, exactly the added capabilities (root's permitted set after exec is
/// the bounding set), nothing inheritable, and no_new_privs where escalation is disallowed.
fn confined(sc: &SecurityContext) -> Vec<String> {
    let (add, drop) = caps(sc);
    assert_eq!(drop, ["ALL"]);
    let bounding: String = add
        .iter()
        .map(|c| format!(",+{}", c.to_lowercase()))
        .collect();
    let mut a = vec![
        "setpriv".to_string(),
        format!("--reuid={}", sc.run_as_user.unwrap_or(0)),
        format!("--regid={}", sc.run_as_group.unwrap_or(0)),
        "--clear-groups".into(),
        "--inh-caps=-all".into(),
        format!("--bounding-set=-all{bounding}"),
    ];
    if sc.allow_privilege_escalation == Some(false) {
        a.push("--no-new-privs".into());
    }
    a
}

/// `argv` with each container path under a key of `paths` moved to its temp dir, and the
/// image's nftmesh the built one; panics if an absolute path is left (the host's own).
fn rewrite(argv: &[String], paths: &[(&str, &Path)]) -> Vec<String> {
    let out: Vec<String> = argv
        .iter()
        .map(|a| {
            if a == "/usr/local/bin/nftmesh" {
                return BIN.into();
            }
            for (from, to) in paths {
                if let Some(rest) = a.strip_prefix(from) {
                    if rest.is_empty() || rest.starts_with('/') {
                        return format!("{}{rest}", to.display());
                    }
                }
            }
            assert!(!a.starts_with('/'), "{a}: a host path the test would touch");
            a.clone()
        })
        .collect();
    out
}

fn spawn(confine: &[String], argv: &[String]) -> Proc {
    let child = Command::new(&confine[0])
        .args(&confine[1..])
        .args(argv)
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Proc(child)
}

fn plugin_types(conflist: &Path) -> Vec<String> {
    let v: Value = fs::read(conflist)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let plugins = v["plugins"].as_array().cloned().unwrap_or_default();
    plugins
        .iter()
        .map(|p| p["type"].as_str().unwrap_or_default().into())
        .collect()
}

const BRIDGE: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "k8s-pod-network",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.22.0.0/16"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
"#;

/// The installer's argv, on temp dirs standing for the host's /etc/cni/net.d and /opt/cni/bin,
/// as uid 0 with no capability: installs, re-inserts after the primary plugin rewrites its
/// file, and on SIGTERM restores the file's bytes, removes the binary and exits 0.
#[test]
fn the_installer_argv_installs_and_sigterm_uninstalls() {
    if !root_or_skip("the installer's run") {
        return;
    }
    let m = manifests();
    let c = m.container("install-cni");
    let d = TempDir::new("installer");
    let [conf, bin, config, image] = ["net.d", "bin", "plugin-config", "image"].map(|s| {
        fs::create_dir_all(d.0.join(s)).unwrap();
        d.0.join(s)
    });
    let primary = conf.join("10-bridge.conflist");
    fs::write(&primary, BRIDGE).unwrap();
    for (k, v) in m.config.data.clone().unwrap() {
        fs::write(config.join(k), v).unwrap();
    }
    fs::write(image.join("nftmesh-cni"), b"\x7fELF stands for nftmesh-cni").unwrap();
    let argv = rewrite(
        &argv(c),
        &[
            ("/host/etc/cni/net.d", &conf),
            ("/host/opt/cni/bin", &bin),
            ("/etc/nftmesh", &config),
            ("/usr/local/bin", &image),
        ],
    );
    let mut p = spawn(&confined(c.security_context.as_ref().unwrap()), &argv);
    let ours = || plugin_types(&primary) == ["bridge", "portmap", "nftmesh-cni"];
    assert!(
        wait_for(Duration::from_secs(10), ours),
        "not chained in 10 s"
    );
    let list: Value = serde_json::from_slice(&fs::read(&primary).unwrap()).unwrap();
    assert_eq!(
        list["plugins"][2]["agent_socket"],
        "/run/nftmesh/agent.sock"
    );
    let plugin = fs::read(bin.join("nftmesh-cni")).unwrap();
    assert_eq!(plugin, fs::read(image.join("nftmesh-cni")).unwrap());
    // The primary plugin rewrites its file (atomically): --watch puts the entry back.
    fs::write(conf.join("tmp"), BRIDGE).unwrap();
    fs::rename(conf.join("tmp"), &primary).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), ours),
        "not re-inserted in 5 s"
    );
    let status = p.terminate();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut p.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status}: {err}");
    assert_eq!(fs::read_to_string(&primary).unwrap(), BRIDGE, "{err}");
    assert!(!bin.join("nftmesh-cni").exists(), "{err}");
    let left: Vec<_> = fs::read_dir(&conf)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["10-bridge.conflist"], "{err}");
}

/// The agent's argv (socket and state dir moved into a temp dir) in a private node, with the
/// capability set `caps`; returns the agent once its socket answers, or its stderr if it
/// exited first.
fn start_agent(m: &Manifests, d: &Path, caps: &[String]) -> Result<(Proc, PathBuf), String> {
    let c = m.container("agent");
    let [socket, state] = ["socket", "state"].map(|s| {
        fs::create_dir_all(d.join(s)).unwrap();
        d.join(s)
    });
    let paths: [(&str, &Path); 2] = [("/run/nftmesh", &socket), ("/var/lib/nftmesh", &state)];
    let argv = rewrite(&argv(c), &paths);
    let mut sc = c.security_context.clone().unwrap();
    sc.capabilities.as_mut().unwrap().add = Some(caps.to_vec());
    let mut p = spawn(&confined(&sc), &argv);
    let sock = PathBuf::from(flag(&argv, "--socket"));
    let up = || std::os::unix::net::UnixStream::connect(&sock).is_ok();
    let end = Instant::now() + Duration::from_secs(10);
    while !up() {
        if let Some(status) = p.0.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut p.0.stderr.take().unwrap(), &mut err).unwrap();
            return Err(format!("{status}: {err}"));
        }
        assert!(Instant::now() < end, "the agent listens within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((p, sock))
}

/// `ip netns add NAME` in the private node, lo up.
fn pod_netns(name: &str) -> String {
    for args in [
        &["netns", "add", name][..],
        &["-n", name, "link", "set", "lo", "up"],
    ] {
        let o = Command::new("ip").args(args).output().unwrap();
        assert!(o.status.success(), "ip {args:?}: {}", text(&o.stderr));
    }
    format!("/run/netns/{name}")
}

fn agent_add(socket: &Path, netns: &str) -> Output {
    let s = socket.display().to_string();
    let args = [
        "agent",
        "add",
        "--socket",
        s.as_str(),
        "--network-namespace",
        netns,
        "-i",
        "*",
        "-b",
        "*",
    ];
    nftmesh(&args)
}

/// The agent as the DaemonSet runs it: with exactly NET_ADMIN and SYS_ADMIN it serves its
/// liveness probe, passes its readiness probe, installs a pod's capture, and exits 0 on
/// SIGTERM (the pod's capture staying).
#[test]
fn the_agent_argv_serves_with_exactly_its_capabilities() {
    if !root_or_skip("the agent's run")
        || !node::in_private_node("the_agent_argv_serves_with_exactly_its_capabilities")
            .unwrap_or(false)
    {
        return;
    }
    let o = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let m = manifests();
    let c = m.container("agent");
    let d = TempDir::new("agent");
    let (add, _) = caps(c.security_context.as_ref().unwrap());
    let (mut agent, socket) = start_agent(&m, &d.0, &add).unwrap();
    // Liveness: the probe's GET, where the probe sends it.
    let http = c.liveness_probe.clone().unwrap().http_get.unwrap();
    let port = serde_json::to_value(&http.port).unwrap();
    let addr = format!("{}:{port}", http.host.unwrap());
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let get = format!("GET {} HTTP/1.0\r\n\r\n", http.path.unwrap());
    std::io::Write::write_all(&mut s, get.as_bytes()).unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut s, &mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    assert!(reply.contains("nftmesh_agent_pods"), "{reply}");
    // Readiness: the probe's command, in the container's confinement.
    let exec = c
        .readiness_probe
        .clone()
        .unwrap()
        .exec
        .unwrap()
        .command
        .unwrap();
    let sockdir = socket.parent().unwrap();
    let probe = rewrite(&exec, &[("/run/nftmesh", sockdir)]);
    let conf = confined(c.security_context.as_ref().unwrap());
    let o = Command::new(&conf[0])
        .args(&conf[1..])
        .args(&probe)
        .output()
        .unwrap();
    assert!(o.status.success(), "readiness: {}", text(&o.stderr));
    // A pod, as nftmesh-cni would register it.
    let pod = pod_netns("pod1");
    let o = agent_add(&socket, &pod);
    assert!(o.status.success(), "add: {}", text(&o.stderr));
    let o = Command::new("ip")
        .args(["netns", "exec", "pod1", "nft", "list", "tables"])
        .output();
    assert!(text(&o.unwrap().stdout).contains("istio-proxy-nat"));
    let o = Command::new(&conf[0])
        .args(&conf[1..])
        .args(&probe)
        .output()
        .unwrap();
    assert_eq!(text(&o.stdout).trim(), pod);
    let status = agent.terminate();
    assert!(status.success(), "{status}");
}

/// Each capability of the agent's set is needed: without it a pod cannot be added.
#[test]
fn the_agent_needs_each_of_its_capabilities() {
    if !root_or_skip("the agent's run")
        || !node::in_private_node("the_agent_needs_each_of_its_capabilities").unwrap_or(false)
    {
        return;
    }
    let m = manifests();
    let (add, _) = caps(m.container("agent").security_context.as_ref().unwrap());
    assert!(!add.is_empty());
    for (i, without) in add.iter().enumerate() {
        let fewer: Vec<String> = add.iter().filter(|c| *c != without).cloned().collect();
        let d = TempDir::new(&format!("agent-without-{without}"));
        let pod = pod_netns(&format!("pod{i}"));
        let why = match start_agent(&m, &d.0, &fewer) {
            Err(err) => format!("the agent did not start: {err}"),
            Ok((mut agent, socket)) => {
                let o = agent_add(&socket, &pod);
                assert!(!o.status.success(), "added a pod without {without}");
                agent.terminate();
                text(&o.stderr)
            }
        };
        eprintln!("without {without}: {}", why.trim());
    }
}

// ---------------------------------------------------------------------------------------------
// The injector patches.

/// Istio's init containers as its injector renders them with the default values (istio/istio
/// at 86c9f01f, manifests/charts/istio-control/istio-discovery/files/injection-template.yaml:
/// `istio-init`, or `istio-validation` with `pilot.cni.enabled`), written out by hand.
const ISTIO_INJECTED: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: app
spec:
  initContainers:
    - name: INIT
      image: docker.io/istio/proxyv2:1.28.0
      args: [istio-iptables, -p, "15001", -z, "15006", -u, "1337", -m, REDIRECT, -i, "*",
             -x, "", -b, "*", -d, "15090,15021,15020", "--log_output_level=default:info"]
      resources:
        limits: {cpu: "2", memory: 1Gi}
        requests: {cpu: 10m, memory: 40Mi}
  containers:
    - name: istio-proxy
      image: docker.io/istio/proxyv2:1.28.0
    - name: app
      image: example/app:1
"#;

const ISTIO_INIT_SC: &str = r#"
allowPrivilegeEscalation: false
privileged: false
capabilities: {add: [NET_ADMIN, NET_RAW], drop: [ALL]}
readOnlyRootFilesystem: false
runAsGroup: 0
runAsNonRoot: false
runAsUser: 0
"#;

const ISTIO_VALIDATION_SC: &str = r#"
allowPrivilegeEscalation: false
privileged: false
capabilities: {drop: [ALL]}
readOnlyRootFilesystem: true
runAsGroup: 1337
runAsUser: 1337
runAsNonRoot: true
"#;

/// Istio's pod with its init container `name` (`istio-init` or `istio-validation`), and the
/// same pod with deploy/k8s/injector/NAME.yaml merged in; both typed.
fn injected(name: &str) -> (Container, Container) {
    let mut pod: Value = serde_norway::from_str(&ISTIO_INJECTED.replace("INIT", name)).unwrap();
    let (sc, extra): (&str, &[&str]) = match name {
        "istio-init" => (ISTIO_INIT_SC, &[]),
        _ => (
            ISTIO_VALIDATION_SC,
            &["--run-validation", "--skip-rule-apply"],
        ),
    };
    let init = &mut pod["spec"]["initContainers"][0];
    init["securityContext"] = serde_norway::from_str(sc).unwrap();
    for a in extra {
        init["args"].as_array_mut().unwrap().push(Value::from(*a));
    }
    let istio: Pod = strict(&pod, "Istio's pod");
    let file = deploy().join(format!("injector/{name}.yaml"));
    let docs = documents(&file);
    assert_eq!(docs.len(), 1, "{}: one patch", file.display());
    let patch: Pod = strict(&docs[0], &file.display().to_string());
    let inits = patch
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .clone()
        .unwrap();
    assert_eq!(inits.len(), 1);
    assert_eq!(inits[0].name, name);
    assert!(
        inits[0].args.is_none(),
        "{name}: Istio's argv (rendered per pod) must stay"
    );
    let mut merged = istio.clone();
    merged.merge_from(patch);
    let init = |p: &Pod| {
        p.spec
            .as_ref()
            .unwrap()
            .init_containers
            .clone()
            .unwrap()
            .remove(0)
    };
    let containers = |p: &Pod| p.spec.as_ref().unwrap().containers.clone();
    assert_eq!(
        containers(&merged),
        containers(&istio),
        "only the init container changes"
    );
    (init(&istio), init(&merged))
}

#[test]
fn the_patches_change_image_command_and_privileges_and_keep_istios_argv() {
    for name in ["istio-init", "istio-validation"] {
        let (istio, ours) = injected(name);
        assert_eq!(ours.args, istio.args, "{name}");
        assert_eq!(ours.resources, istio.resources, "{name}");
        let image = format!("ghcr.io/nftmesh/nftmesh:{VERSION}");
        assert_eq!(ours.image.as_deref(), Some(image.as_str()));
        assert_eq!(ours.command.clone().unwrap(), ["/usr/local/bin/nftmesh"]);
        assert_eq!(argv(&ours)[1], "istio-iptables");
        let sc = ours.security_context.clone().unwrap();
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let (uid, add): (i64, &[&str]) = match name {
            "istio-init" => (0, &["NET_ADMIN"]),
            _ => (1337, &[]),
        };
        assert_eq!(
            (sc.run_as_user, sc.run_as_group),
            (Some(uid), Some(uid)),
            "{name}"
        );
        assert_eq!(sc.run_as_non_root, Some(uid != 0), "{name}");
        assert_eq!(
            caps(&sc),
            (
                add.iter().map(|s| s.to_string()).collect(),
                vec!["ALL".into()]
            )
        );
    }
    // istio-init's argv, as nftmesh reads it: the rules it would install, nothing changed.
    let (_, init) = injected("istio-init");
    let mut args = rewrite(&argv(&init), &[]);
    args.push("--dry-run".into());
    let o = Command::new(&args[0])
        .args(&args[1..])
        .env_clear()
        .output()
        .unwrap();
    assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
    let rules = text(&o.stdout);
    assert!(
        rules.contains("redirect to :15001") && rules.contains("redirect to :15006"),
        "{rules}"
    );
}

/// The `nftmesh` injection template of istiod-values.yaml: guarded by the interception mode,
/// the validation patch under `pilot.cni.enabled` and the init patch otherwise, each equal to
/// its file.
#[test]
fn the_istiod_template_holds_the_two_patches() {
    let docs = documents(&deploy().join("injector/istiod-values.yaml"));
    let hook = &docs[0]["sidecarInjectorWebhook"];
    assert_eq!(
        hook["defaultTemplates"],
        serde_json::json!(["sidecar", "nftmesh"])
    );
    let template = hook["templates"]["nftmesh"].as_str().unwrap();
    let (mut directives, mut parts) = (Vec::new(), vec![String::new()]);
    for line in template.lines() {
        if line.trim_start().starts_with("{{") {
            directives.push(line.trim());
            parts.push(String::new());
        } else {
            assert!(!line.contains("{{"), "{line}");
            parts.last_mut().unwrap().push_str(&format!("{line}\n"));
        }
    }
    let mode = "(annotation .ObjectMeta `sidecar.istio.io/interceptionMode` \
                .ProxyConfig.InterceptionMode)";
    assert_eq!(
        directives,
        [
            format!("{{{{- if ne {mode} `NONE` }}}}").as_str(),
            "{{- if .Values.pilot.cni.enabled }}",
            "{{- else }}",
            "{{- end }}",
            "{{- end }}",
        ]
    );
    for (i, name) in [(2, "istio-validation"), (3, "istio-init")] {
        let file = documents(&deploy().join(format!("injector/{name}.yaml")));
        let inline: Value = serde_norway::from_str(&parts[i]).unwrap();
        assert_eq!(
            inline, file[0],
            "the template's {name} patch differs from its file"
        );
    }
    assert!(parts
        .iter()
        .enumerate()
        .all(|(i, p)| i == 2 || i == 3 || p.trim().is_empty()));
}

/// In a pod namespace, as the kubelet would run them: the patched istio-init (uid 0, NET_ADMIN
/// only) installs the capture, and the patched istio-validation (uid 1337, no capability)
/// passes over it and fails (126) in a pod without it.
#[test]
fn the_patched_init_containers_capture_and_validate() {
    if !root_or_skip("running the init containers")
        || !node::in_private_node("the_patched_init_containers_capture_and_validate")
            .unwrap_or(false)
    {
        return;
    }
    let run = |pod: &str, c: &Container, extra: &[&str]| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", pod]).env_clear();
        cmd.args(confined(c.security_context.as_ref().unwrap()));
        cmd.args(rewrite(&argv(c), &[])).args(extra);
        cmd.output().unwrap()
    };
    for name in ["pod1", "pod2"] {
        pod_netns(name);
        let addr = if name == "pod1" {
            "10.99.0.1/24"
        } else {
            "10.98.0.1/24"
        };
        for args in [
            &[
                "-n", name, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
            ][..],
            &["-n", name, "addr", "add", addr, "dev", "d0"],
            &["-n", name, "link", "set", "d0", "up"],
            &["-n", name, "link", "set", "d1", "up"],
        ] {
            let o = Command::new("ip").args(args).output().unwrap();
            assert!(o.status.success(), "ip {args:?}: {}", text(&o.stderr));
        }
    }
    let (_, init) = injected("istio-init");
    let o = run("pod1", &init, &[]);
    assert!(
        o.status.success(),
        "istio-init: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let (_, validation) = injected("istio-validation");
    let o = run("pod1", &validation, &[]);
    assert!(
        o.status.success(),
        "istio-validation: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let o = run("pod2", &validation, &["--probe-timeout=1s"]);
    assert_eq!(
        o.status.code(),
        Some(126),
        "no capture: {}",
        text(&o.stderr)
    );
}
