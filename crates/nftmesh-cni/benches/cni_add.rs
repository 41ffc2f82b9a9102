//! What the capture adds to a pod's CNI ADD, measured with the real runtime: `cnitool add`
//! (libcni) of a chain `ptp` + `host-local`, then one of
//!
//! - **pass-through**: nftmesh-cni with the pod's namespace excluded (it prints prevResult and
//!   installs nothing: the cost of a chained plugin process),
//! - **nftmesh-cni**: Istio's sidecar capture installed over netlink,
//! - **nftmesh-cni, decided capture**: the capture the per-pod decision below arrives at, given
//!   in the entry (the same rules, no decision),
//! - **nftmesh-cni, per pod**: `"mesh": "istio"`: that capture decided from the pod's
//!   annotations (Istio's injector output for `hello.yaml.cni.injected`), passed by libcni as
//!   runtime config (`CAP_ARGS`, the `io.kubernetes.cri.pod-annotations` capability); its
//!   difference to the chain above is the decision's cost,
//! - **iptables-restore plugin**: what iptables-based plugins do: `iptables-restore` of
//!   Istio's rules for the same capture (its golden `inbound-ports-wildcard` with outbound
//!   capture of everything) in the pod's namespace, then the pass-through for the result.
//!
//! The chains run round-robin, each ADD into a fresh pod namespace (deleted with DEL
//! after), in a private node (`unshare -n -m`, tmpfs over `/run/netns` and libcni's cache).
//! `cargo bench -p nftmesh-cni` prints medians, p90 and the capture's cost over the
//! pass-through; under `cargo test` it runs each chain once, as a smoke test.

use nftmesh_test_support::{annotations, skip};

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PLUGIN: &str = env!("CARGO_BIN_EXE_nftmesh-cni");
const CHILD: &str = "NFTMESH_CNI_BENCH_IN_NODE";
const CHAINS: [&str; 5] = ["passthrough", "nftmesh", "decided", "mesh", "iptables"];
const CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    if std::env::var_os(CHILD).is_none() {
        for tool in [
            "/usr/local/bin/cnitool",
            "/usr/lib/cni/ptp",
            "/usr/sbin/iptables-restore",
        ] {
            if !Path::new(tool).exists() {
                skip::skip(&format!("{tool} is missing: run ./scripts/setup.sh"));
                return;
            }
        }
        let exe = std::env::current_exe().expect("bench binary");
        let status = Command::new("unshare")
            .args(["--net", "--mount", "--propagation", "private"])
            .arg(exe)
            .args(std::env::args().skip(1))
            .env(CHILD, "1")
            .status()
            .expect("unshare");
        assert!(status.success(), "the benchmark in its private node failed");
        return;
    }
    for dir in ["/run/netns", "/var/lib/cni"] {
        std::fs::create_dir_all(dir).expect("mount point");
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "nftmesh-bench", dir])
            .output()
            .expect("mount");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let work = setup();
    let iters = if bench { 40 } else { 1 };
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); CHAINS.len()];
    for i in 0..iters + usize::from(bench) {
        for (c, chain) in CHAINS.iter().enumerate() {
            let t = add_del(&work, chain, i);
            // The first round warms caches (binaries, the kernel's modules): not counted.
            if !bench || i > 0 {
                times[c].push(t);
            }
        }
    }
    let med: Vec<Duration> = times.iter().map(|t| quantile(t, 0.5)).collect();
    println!("| chain after ptp + host-local | median `cnitool add` | p90 |");
    println!("|---|---|---|");
    for (c, chain) in CHAINS.iter().enumerate() {
        println!(
            "| {} | {:.2} ms | {:.2} ms |",
            label(chain),
            ms(med[c]),
            ms(quantile(&times[c], 0.9))
        );
    }
    let ours = ms(med[1]) - ms(med[0]);
    let per_pod = ms(med[3]) - ms(med[2]);
    let theirs = ms(med[4]) - ms(med[0]);
    println!(
        "\ncapture's cost over the pass-through (medians): nftmesh-cni {ours:.2} ms, \
         iptables-restore plugin {theirs:.2} ms ({:.1}x); the per-pod decision from annotations \
         {per_pod:+.2} ms; {iters} ADDs per chain, round-robin",
        theirs / ours.max(0.001)
    );
}

fn label(chain: &str) -> &'static str {
    match chain {
        "passthrough" => "pass-through (nftmesh-cni, namespace excluded)",
        "nftmesh" => "nftmesh-cni (sidecar capture over netlink)",
        "decided" => "nftmesh-cni (the per-pod decision's capture, given in the entry)",
        "mesh" => "nftmesh-cni, per pod (mesh: istio, annotations from CAP_ARGS)",
        _ => "iptables-restore plugin (Istio's rules)",
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn quantile(t: &[Duration], q: f64) -> Duration {
    let mut v = t.to_vec();
    v.sort();
    v.get(((v.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or_default()
}

/// The conflists (one per chain) and the iptables-restore plugin, in a work directory.
fn setup() -> PathBuf {
    let work = std::env::temp_dir().join(format!("nftmesh-cni-bench-{}", std::process::id()));
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let settings = nftmesh::model::config::IstioSettings {
        proxy_gid: "1337".into(),
        inbound_ports: "*".into(),
        outbound_ip_ranges_include: "*".into(),
        ..Default::default()
    };
    let capture = serde_json::to_value(settings.to_config().expect("config")).unwrap();
    let decided = match nftmesh::model::pod::istio_sidecar(
        &annotations::load("hello.yaml.cni.injected"),
        &Default::default(),
    ) {
        Ok(nftmesh::model::pod::PodDecision::Capture(c)) => serde_json::to_value(c).unwrap(),
        other => panic!("Istio's injected pod is captured: {other:?}"),
    };
    // Istio's rules for the same capture: the golden, and the outbound capture of everything.
    let golden = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/istio/sidecar/iptables/inbound-ports-wildcard.golden"
    ))
    .expect("golden");
    let v4 = nftmesh::iptables::trace::split_trace_text(&golden)
        .into_iter()
        .next()
        .map(|(_, p)| p)
        .unwrap_or_default();
    let rules: String = v4
        .lines()
        .flat_map(|l| {
            let extra = (l == "COMMIT").then_some("-A ISTIO_OUTPUT -j ISTIO_REDIRECT");
            extra.into_iter().chain(std::iter::once(l))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(work.join("istio.rules"), rules).unwrap();
    let script = format!(
        "#!/bin/sh\n# An iptables-based plugin's ADD: Istio's rules restored in the pod.\nset -e\n\
         if [ \"$CNI_COMMAND\" = ADD ]; then\n  nsenter --net=\"$CNI_NETNS\" iptables-restore < {}\nfi\n\
         exec {PLUGIN}\n",
        work.join("istio.rules").display()
    );
    let plugin = bin.join("iptables-cni");
    std::fs::write(&plugin, script).unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&plugin)
        .status()
        .unwrap();
    std::os::unix::fs::symlink(PLUGIN, bin.join("nftmesh-cni")).unwrap();
    for (n, chain) in CHAINS.iter().enumerate() {
        let last = match *chain {
            "passthrough" => {
                json!({"type": "nftmesh-cni", "capture": capture, "exclude_namespaces": ["bench"]})
            }
            "nftmesh" => json!({"type": "nftmesh-cni", "capture": capture}),
            "decided" => json!({"type": "nftmesh-cni", "capture": decided}),
            "mesh" => json!({
                "type": "nftmesh-cni", "mesh": "istio",
                "capabilities": {CAPABILITY: true},
            }),
            _ => {
                json!({"type": "iptables-cni", "capture": capture, "exclude_namespaces": ["bench"]})
            }
        };
        let conf = json!({
            "cniVersion": "1.0.0",
            "name": chain,
            "plugins": [
                {"type": "ptp", "ipMasq": false, "ipam": {
                    "type": "host-local",
                    "subnet": format!("10.{}.0.0/16", 30 + n),
                    "dataDir": work.join(format!("ipam-{chain}")),
                }},
                last
            ]
        });
        std::fs::write(work.join(format!("{chain}.conflist")), conf.to_string()).unwrap();
    }
    work
}

/// One ADD of `chain` into a fresh pod namespace, timed; then DEL and the namespace deleted.
fn add_del(work: &Path, chain: &str, i: usize) -> Duration {
    let pod = format!("b{chain}{i}");
    let path = format!("/run/netns/{pod}");
    let ok = |c: &mut Command, what: &str| {
        let o = c.output().expect(what);
        assert!(
            o.status.success(),
            "{what}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    ok(
        Command::new("ip").args(["netns", "add", &pod]),
        "ip netns add",
    );
    let cnitool = |command: &str| {
        let mut c = Command::new("/usr/local/bin/cnitool");
        c.args([command, chain, &path])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NETCONFPATH", work)
            .env(
                "CNI_PATH",
                format!("/usr/lib/cni:{}", work.join("bin").display()),
            )
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench");
        if chain == "mesh" {
            let pod = annotations::load("hello.yaml.cni.injected");
            c.env("CAP_ARGS", json!({ CAPABILITY: pod }).to_string());
        }
        c
    };
    let start = Instant::now();
    ok(&mut cnitool("add"), "cnitool add");
    let took = start.elapsed();
    ok(&mut cnitool("del"), "cnitool del");
    ok(
        Command::new("ip").args(["netns", "del", &pod]),
        "ip netns del",
    );
    took
}
