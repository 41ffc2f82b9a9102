//! Per-pod capture from the pod's own annotations, through the real runtime path: `cnitool`
//! (libcni) passes `CAP_ARGS` as `runtimeConfig` only because the entry declares the
//! `io.kubernetes.cri.pod-annotations` capability, as containerd and CRI-O do. The annotation
//! values are those Istio's injector writes (`tests/data/istio/annotations/`, Istio's own
//! testdata). Each test runs in a private node (see `common`).

mod common;

use nftmesh_test_support::annotations;

use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;

const CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

/// The entry of a mesh-aware plugin: Istio's decision, annotations asked for.
fn mesh_entry(extra: Value) -> Value {
    let mut e = json!({
        "mesh": "istio",
        "capabilities": {CAPABILITY: true},
    });
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

/// `CAP_ARGS` carrying `annotations`.
fn caps(annotations: &Value) -> Value {
    json!({ CAPABILITY: annotations })
}

/// Istio's injected annotations of a CNI pod (`hello.yaml.cni.injected`), with `extra` set.
fn injected(extra: &[(&str, &str)]) -> Value {
    let mut a = annotations::load("hello.yaml.cni.injected");
    for (k, v) in extra {
        a.insert(k.to_string(), v.to_string());
    }
    serde_json::to_value(a).unwrap()
}

fn add(net: &Net, annotations: &Value) {
    let o = net.cnitool_caps("add", &caps(annotations));
    assert!(
        o.status.success(),
        "cnitool add: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn del(net: &Net, annotations: &Value) {
    let o = net.cnitool_caps("del", &caps(annotations));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn only_a_pod_with_a_sidecar_is_captured() {
    if !in_node("only_a_pod_with_a_sidecar_is_captured") {
        return;
    }
    let net = Net::new(mesh_entry(json!({})));
    // Injected (native sidecar + istio-validation): captured, original destination kept.
    let pod = injected(&[]);
    add(&net, &pod);
    assert_eq!(ours(&net.tables()), vec!["istio-proxy-nat"]);
    let to: SocketAddr = format!("{GATEWAY}:8080").parse().unwrap();
    assert_eq!(net.captured(), Some(to));
    let o = net.cnitool_caps("check", &caps(&pod));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    del(&net, &pod);
    assert!(ours(&net.tables()).is_empty());
    // No sidecar: no table, and the app's connection reaches the peer.
    let mut plain = annotations::load("hello.yaml.cni.injected");
    plain.remove("sidecar.istio.io/status");
    let plain = serde_json::to_value(plain).unwrap();
    add(&net, &plain);
    assert!(ours(&net.tables()).is_empty(), "{:?}", net.tables());
    assert!(
        net.reaches_peer(),
        "an unmeshed pod's connection reaches the peer"
    );
    let o = net.cnitool_caps("check", &caps(&plain));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    del(&net, &plain);
    // Injected with istio-init, which does its own capture: left alone.
    let own = serde_json::to_value(annotations::load("hello.yaml.injected")).unwrap();
    add(&net, &own);
    assert!(ours(&net.tables()).is_empty(), "{:?}", net.tables());
    del(&net, &own);
}

#[test]
fn each_annotation_changes_what_real_traffic_does() {
    if !in_node("each_annotation_changes_what_real_traffic_does") {
        return;
    }
    let net = Net::new(mesh_entry(json!({})));
    let to: SocketAddr = format!("{GATEWAY}:8080").parse().unwrap();
    let outbound = [
        (
            "traffic.sidecar.istio.io/excludeOutboundIPRanges",
            "10.22.0.0/24",
        ),
        ("traffic.sidecar.istio.io/excludeOutboundPorts", "8080"),
        (
            "traffic.sidecar.istio.io/includeOutboundIPRanges",
            "10.96.0.0/12",
        ),
    ];
    for (key, value) in outbound {
        let pod = injected(&[(key, value)]);
        add(&net, &pod);
        assert!(!ours(&net.tables()).is_empty(), "{key}: captured at all");
        assert!(
            net.reaches_peer(),
            "{key}={value}: the connection is not captured"
        );
        del(&net, &pod);
    }
    // Without them the same connection is captured.
    let pod = injected(&[]);
    add(&net, &pod);
    assert_eq!(net.captured(), Some(to));
    del(&net, &pod);

    // includeInboundPorts: only the listed port is captured inbound (REDIRECT: accepted on
    // 15006 at the pod's own 15006).
    let pod = injected(&[("traffic.sidecar.istio.io/includeInboundPorts", "9090")]);
    add(&net, &pod);
    let ip = net.pod_ip();
    let (port, local) = net.inbound(9090).expect("inbound to 9090");
    assert_eq!(
        (port, local),
        (15006, format!("{ip}:15006").parse().unwrap())
    );
    assert_eq!(
        net.inbound(8080).map(|l| l.0),
        Some(8080),
        "8080 is not captured"
    );
    del(&net, &pod);

    // TPROXY: captured to 15006 with the original destination as the local address, and its
    // policy routing in place.
    let pod = injected(&[
        ("sidecar.istio.io/interceptionMode", "TPROXY"),
        ("traffic.sidecar.istio.io/includeInboundPorts", "9090"),
    ]);
    add(&net, &pod);
    assert!(net.ruleset().contains("tproxy"), "{}", net.ruleset());
    let ip = net.pod_ip();
    let (port, local) = net.inbound(9090).expect("inbound to 9090");
    assert_eq!(
        (port, local),
        (15006, format!("{ip}:9090").parse().unwrap())
    );
    del(&net, &pod);
    let rules = std::process::Command::new("ip")
        .args(["-n", "pod", "rule"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&rules.stdout).contains("lookup 133"));
}

#[test]
fn a_malformed_annotation_fails_the_add_and_installs_nothing() {
    if !in_node("a_malformed_annotation_fails_the_add_and_installs_nothing") {
        return;
    }
    let net = Net::new(mesh_entry(json!({})));
    let pod = injected(&[("traffic.sidecar.istio.io/excludeOutboundPorts", "8080,http")]);
    let o = net.cnitool_caps("add", &caps(&pod));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("traffic.sidecar.istio.io/excludeOutboundPorts") && err.contains("8080,http"),
        "{err}"
    );
    assert!(ours(&net.tables()).is_empty(), "{:?}", net.tables());
    // The plugin's own error object, with its code.
    let stdin = json!({
        "cniVersion": "1.0.0", "name": "meshnet", "type": "nftmesh-cni", "mesh": "istio",
        "runtimeConfig": caps(&pod), "prevResult": prev(),
    });
    let (code, out) = plugin("ADD", &net.pod, &stdin, "");
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    assert_eq!(out["msg"], "invalid pod annotation");
    // No annotations at all (the capability not declared): fail closed, saying how to fix.
    let mut bare = stdin.clone();
    bare.as_object_mut().unwrap().remove("runtimeConfig");
    let (code, out) = plugin("ADD", &net.pod, &bare, "");
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    assert!(
        out["details"].as_str().unwrap().contains(CAPABILITY),
        "{out}"
    );
    assert!(ours(&net.tables()).is_empty());
}

#[test]
fn del_with_a_conflist_that_no_longer_parses_removes_the_capture_and_frees_the_lease() {
    if !in_node("del_with_a_conflist_that_no_longer_parses_removes_the_capture_and_frees_the_lease")
    {
        return;
    }
    let net = Net::new(mesh_entry(json!({})));
    let pod = injected(&[("sidecar.istio.io/interceptionMode", "TPROXY")]);
    add(&net, &pod);
    assert_eq!(net.leases().len(), 1, "host-local leased an address");
    assert!(!ours(&net.tables()).is_empty());
    // An upgrade (or a typo) the plugin does not understand: an unknown key in the capture
    // and an unknown mesh.
    net.rewrite_entry(json!({
        "type": "nftmesh-cni", "mesh": "istio-next", "capture": {"proxy_prot": 15001},
        "capabilities": {CAPABILITY: true},
    }));
    let o = net.cnitool_caps("del", &caps(&pod));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(ours(&net.tables()).is_empty(), "{:?}", net.tables());
    let rules = std::process::Command::new("ip")
        .args(["-n", "pod", "rule"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains("lookup 133"),
        "the TPROXY routing went too"
    );
    assert!(
        net.leases().is_empty(),
        "the whole chain's DEL ran: {:?}",
        net.leases()
    );
}

#[test]
fn re_add_of_a_running_captured_pod_with_validation_leaves_it_unchanged() {
    if !in_node("re_add_of_a_running_captured_pod_with_validation_leaves_it_unchanged") {
        return;
    }
    let net = Net::new(mesh_entry(json!({"validate": true})));
    let pod = injected(&[]);
    let o = net.cnitool_caps("add", &caps(&pod));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let result: Value = serde_json::from_slice(&o.stdout).unwrap();
    let before = net.ruleset();
    // The proxy runs: it holds the outbound and inbound capture ports.
    let held = nftmesh_netlink::netns::run_in(std::path::Path::new(&net.pod), || {
        (
            std::net::TcpListener::bind("0.0.0.0:15001").unwrap(),
            std::net::TcpListener::bind("0.0.0.0:15006").unwrap(),
        )
    })
    .unwrap();
    // The runtime re-runs ADD (a retry, a network reload): the plugin alone, since host-local
    // would refuse a second address for the same container.
    let stdin = json!({
        "cniVersion": "1.0.0", "name": "meshnet", "type": "nftmesh-cni", "mesh": "istio",
        "validate": true, "runtimeConfig": caps(&pod), "prevResult": result,
    });
    let (code, out) = plugin("ADD", &net.pod, &stdin, "");
    assert_eq!(code, 0, "{out}");
    assert_eq!(net.ruleset(), before);
    // A different capture cannot be validated while the proxy holds the ports: the ADD fails
    // and the capture that was in place stays.
    let mut changed = stdin.clone();
    changed["runtimeConfig"] = caps(&injected(&[(
        "traffic.sidecar.istio.io/excludeOutboundPorts",
        "5432",
    )]));
    let (code, out) = plugin("ADD", &net.pod, &changed, "");
    assert_eq!((code, out["code"].as_u64()), (1, Some(102)), "{out}");
    assert!(
        !ours(&net.tables()).is_empty(),
        "the capture in place was not removed"
    );
    drop(held);
    del(&net, &pod);
}

#[test]
fn through_the_agent_socket_the_plugin_decides_and_the_agent_gets_the_decided_capture() {
    // No kernel: a stand-in agent on a unix socket answers ok and records the requests.
    let agent = StandInAgent::new("per-pod-agent");
    let socket = &agent.socket;
    let stdin = |pod: &Value| {
        json!({
            "cniVersion": "1.0.0", "name": "meshnet", "type": "nftmesh-cni", "mesh": "istio",
            "agent_socket": socket, "runtimeConfig": caps(pod), "prevResult": prev(),
        })
    };
    // A pod without a sidecar: decided by the plugin, the agent is never asked.
    let mut plain = annotations::load("hello.yaml.cni.injected");
    plain.remove("sidecar.istio.io/status");
    let (code, out) = plugin(
        "ADD",
        "/run/netns/p",
        &stdin(&serde_json::to_value(plain).unwrap()),
        "",
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        agent.nothing_asked(),
        "the agent was asked about an unmeshed pod"
    );
    // An injected TPROXY pod: the agent gets the capture decided from its annotations.
    let pod = injected(&[("sidecar.istio.io/interceptionMode", "TPROXY")]);
    let served = agent.serve_one();
    let (code, out) = plugin("ADD", "/run/netns/p", &stdin(&pod), "");
    assert_eq!(code, 0, "{out}");
    let req = served.join().unwrap();
    assert_eq!(req["command"], "add");
    assert_eq!(req["capture"]["mode"], "TPROXY", "{req}");
    assert_eq!(
        req["capture"]["inbound_ports_exclude"],
        json!([15020, 15021, 15090])
    );
}
