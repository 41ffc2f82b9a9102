//! `"mesh": "linkerd"` through the real runtime path: `cnitool` (libcni) passes `CAP_ARGS` as
//! `runtimeConfig` because the entry declares the `io.kubernetes.cri.pod-annotations`
//! capability, as containerd and CRI-O do. The pod's annotations are those Linkerd's injector
//! writes (linkerd/linkerd2 `charts/partials/templates/_metadata.tpl`,
//! `partials.proxy.annotations`, and the injector's `linkerd.io/created-by`) with the
//! `config.linkerd.io/*` overrides linkerd-cni reads. What the pod's `nft -s list table` shows
//! and where real connections land are asserted. Each kernel test runs in a private node (see
//! `common`).

mod common;

use common::*;
use nftmesh_netlink::netns::run_in;
use nftmesh_netlink::probe::{accept_within, connect_as, original_dst};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";
const TABLE: &str = "linkerd-proxy-init";

/// The entry of a Linkerd-aware plugin: Linkerd's decision, annotations asked for, `linkerd`
/// absent (linkerd-cni's chart defaults), `extra` merged in.
fn linkerd_entry(extra: Value) -> Value {
    let mut e = json!({"mesh": "linkerd", "capabilities": {CAPABILITY: true}});
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

/// `CAP_ARGS` carrying `annotations`.
fn caps(annotations: &Value) -> Value {
    json!({ CAPABILITY: annotations })
}

/// What Linkerd's injector writes on a pod it adds the proxy to, with `extra` set.
fn injected(extra: &[(&str, &str)]) -> Value {
    let mut a = json!({
        "linkerd.io/created-by": "linkerd/proxy-injector edge-25.8.5",
        "linkerd.io/proxy-version": "edge-25.8.5",
        "linkerd.io/trust-root-sha256":
            "8ed6f788dd7a1b21b02b80d69712e94d600b840f4633b50979208e057954e943",
        "cluster-autoscaler.kubernetes.io/safe-to-evict": "true",
    });
    for (k, v) in extra {
        a[*k] = json!(v);
    }
    a
}

fn ok(o: std::process::Output, what: &str) {
    assert!(
        o.status.success(),
        "cnitool {what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `nft -s list table FAMILY linkerd-proxy-init` in the pod.
fn listed(family: &str) -> String {
    let o = Command::new("ip")
        .args([
            "netns", "exec", "pod", "nft", "-s", "list", "table", family, TABLE,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The rules of chain `name` in a listing, one trimmed line each.
fn chain<'a>(listing: &'a str, name: &str) -> Vec<&'a str> {
    let start = listing
        .find(&format!("chain {name} {{"))
        .unwrap_or_else(|| panic!("chain {name} in {listing}"));
    listing[start..]
        .lines()
        .skip(1)
        .map(str::trim)
        .take_while(|l| *l != "}")
        .collect()
}

/// The ports of the `tcp dport { ... } counter return` rule of `rules` (or of its single-port
/// form), as a set; `None` when there is no such rule.
fn returned_ports(rules: &[&str]) -> Option<BTreeSet<u16>> {
    rules.iter().find_map(|r| {
        let ports = r
            .strip_prefix("tcp dport ")?
            .strip_suffix(" counter return")?;
        let ports = ports.trim_start_matches("{ ").trim_end_matches(" }");
        Some(ports.split(", ").map(|p| p.parse().unwrap()).collect())
    })
}

/// Where a connection as `uid` from the pod to the node's `GATEWAY:port` landed.
#[derive(Debug, PartialEq)]
enum Landed {
    /// On the proxy's outbound port 4140 in the pod, originally going to this address.
    Proxy(Option<SocketAddr>),
    /// At the peer in the node: not redirected.
    Peer,
    /// Nowhere within a second.
    Nowhere,
}

fn outbound(net: &Net, uid: u32, port: u16) -> Landed {
    let to: SocketAddr = format!("{GATEWAY}:{port}").parse().unwrap();
    let peer = TcpListener::bind(to).expect("peer listener");
    let proxy = run_in(Path::new(&net.pod), || {
        TcpListener::bind("0.0.0.0:4140").expect("outbound proxy listener")
    })
    .expect("enter the pod");
    let pod = net.pod.clone();
    let client = std::thread::spawn(move || {
        run_in(Path::new(&pod), move || {
            connect_as(uid, uid, to, Duration::from_secs(1))
        })
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    let mut landed = Landed::Nowhere;
    while landed == Landed::Nowhere && std::time::Instant::now() < deadline {
        if let Some(s) = accept_within(&proxy, Duration::from_millis(20)) {
            landed = Landed::Proxy(original_dst(&s));
        } else if accept_within(&peer, Duration::from_millis(20)).is_some() {
            landed = Landed::Peer;
        }
    }
    let _ = client.join();
    landed
}

/// A connection from the node to the pod's address and `port`: the port of the pod's listener
/// that accepted it (the proxy's inbound 4143, or `port` itself) and where it was going.
fn inbound(net: &Net, port: u16) -> Option<(u16, Option<SocketAddr>)> {
    let (proxy, direct) = run_in(Path::new(&net.pod), move || {
        (
            TcpListener::bind("0.0.0.0:4143").expect("inbound proxy listener"),
            TcpListener::bind(("0.0.0.0", port)).expect("listener on the port"),
        )
    })
    .expect("enter the pod");
    let to: SocketAddr = format!("{}:{port}", net.pod_ip()).parse().unwrap();
    let client = std::thread::spawn(move || {
        std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok()
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    let mut got = None;
    while got.is_none() && std::time::Instant::now() < deadline {
        if let Some(s) = accept_within(&proxy, Duration::from_millis(20)) {
            got = Some((4143, original_dst(&s)));
        } else if accept_within(&direct, Duration::from_millis(20)).is_some() {
            got = Some((port, None));
        }
    }
    let _ = client.join();
    got
}

#[test]
fn an_injected_pod_gets_linkerd_proxy_init_with_its_annotations_overrides() {
    if !in_node("an_injected_pod_gets_linkerd_proxy_init_with_its_annotations_overrides") {
        return;
    }
    let net = Net::new(linkerd_entry(json!({})));
    let to: SocketAddr = format!("{GATEWAY}:8080").parse().unwrap();

    // Injected, no overrides: linkerd-cni's chart defaults.
    let pod = injected(&[]);
    ok(net.cnitool_caps("add", &caps(&pod)), "add");
    assert_eq!(ours(&net.tables()), vec![TABLE]);
    let text = listed("ip");
    let output = chain(&text, "proxy-init-output");
    assert_eq!(output[0], "meta skuid 2102 counter return", "{text}");
    let redirect = chain(&text, "proxy-init-redirect");
    assert_eq!(
        returned_ports(&redirect),
        Some(BTreeSet::from([4190, 4191])),
        "{text}"
    );
    assert_eq!(
        returned_ports(&output),
        None,
        "no outbound port ignored: {text}"
    );
    assert_eq!(outbound(&net, 1000, 8080), Landed::Proxy(Some(to)));
    assert_eq!(outbound(&net, 2102, 8080), Landed::Peer, "the proxy's uid");
    ok(net.cnitool_caps("check", &caps(&pod)), "check");
    ok(net.cnitool_caps("del", &caps(&pod)), "del");
    assert!(ours(&net.tables()).is_empty(), "{:?}", net.tables());

    // Each override as linkerd-cni applies it: outbound ports and the uid replaced, inbound
    // ports added to the entry's.
    let pod = injected(&[
        ("config.linkerd.io/skip-outbound-ports", "3306"),
        ("config.linkerd.io/skip-inbound-ports", "22"),
        ("config.linkerd.io/proxy-uid", "2103"),
    ]);
    ok(net.cnitool_caps("add", &caps(&pod)), "add");
    let text = listed("ip");
    let output = chain(&text, "proxy-init-output");
    assert!(output.contains(&"tcp dport 3306 counter return"), "{text}");
    assert!(output.contains(&"meta skuid 2103 counter return"), "{text}");
    assert!(!text.contains("skuid 2102"), "{text}");
    let redirect = chain(&text, "proxy-init-redirect");
    assert_eq!(
        returned_ports(&redirect),
        Some(BTreeSet::from([22, 4190, 4191])),
        "{text}"
    );
    // Real traffic agrees with the listing.
    assert_eq!(outbound(&net, 1000, 8080), Landed::Proxy(Some(to)));
    assert_eq!(outbound(&net, 1000, 3306), Landed::Peer, "3306 skipped");
    assert_eq!(
        outbound(&net, 2103, 8080),
        Landed::Peer,
        "the new proxy uid"
    );
    assert_eq!(
        outbound(&net, 2102, 8080),
        Landed::Proxy(Some(to)),
        "2102 is no longer the proxy's"
    );
    let ip = net.pod_ip();
    let original: SocketAddr = format!("{ip}:9090").parse().unwrap();
    assert_eq!(inbound(&net, 9090), Some((4143, Some(original))));
    assert_eq!(inbound(&net, 22), Some((22, None)), "22 skipped inbound");
    ok(net.cnitool_caps("check", &caps(&pod)), "check");
    // CHECK with other annotations than the pod was added with names the difference.
    let other = injected(&[("config.linkerd.io/skip-outbound-ports", "5432")]);
    let o = net.cnitool_caps("check", &caps(&other));
    assert!(!o.status.success(), "CHECK against another decision");
    ok(net.cnitool_caps("del", &caps(&pod)), "del");
    assert!(ours(&net.tables()).is_empty(), "{:?}", net.tables());

    // The entry's own settings (IPv6 on: one inet table) are what the annotations override.
    net.rewrite_entry(linkerd_entry(json!({
        "type": "nftmesh-cni",
        "linkerd": {"proxy_uid": 2102, "ipv6": true,
                    "outbound_ports_to_ignore": [{"first": 25, "last": 25}]},
    })));
    let pod = injected(&[("config.linkerd.io/skip-inbound-ports", "22")]);
    ok(net.cnitool_caps("add", &caps(&pod)), "add");
    let text = listed("inet");
    assert_eq!(
        returned_ports(&chain(&text, "proxy-init-redirect")),
        Some(BTreeSet::from([22])),
        "{text}"
    );
    assert_eq!(
        returned_ports(&chain(&text, "proxy-init-output")),
        Some(BTreeSet::from([25])),
        "{text}"
    );
    ok(net.cnitool_caps("del", &caps(&pod)), "del");
    assert!(ours(&net.tables()).is_empty(), "{:?}", net.tables());
}

#[test]
fn an_uninjected_pod_gets_nothing() {
    if !in_node("an_uninjected_pod_gets_nothing") {
        return;
    }
    let net = Net::new(linkerd_entry(json!({})));
    // Asked for injection, but the injector did not add the proxy; and Istio's sidecar.
    let pod = json!({
        "linkerd.io/inject": "enabled",
        "config.linkerd.io/skip-outbound-ports": "3306",
        "sidecar.istio.io/status":
            r#"{"initContainers":["istio-validation","istio-proxy"],"containers":null}"#,
    });
    ok(net.cnitool_caps("add", &caps(&pod)), "add");
    assert!(net.tables().is_empty(), "{:?}", net.tables());
    assert!(
        net.reaches_peer(),
        "an unmeshed pod's connection reaches the peer"
    );
    ok(net.cnitool_caps("check", &caps(&pod)), "check");
    ok(net.cnitool_caps("del", &caps(&pod)), "del");
}

#[test]
fn a_bad_annotation_fails_the_add_and_changes_nothing() {
    if !in_node("a_bad_annotation_fails_the_add_and_changes_nothing") {
        return;
    }
    let net = Net::new(linkerd_entry(json!({})));
    let bad = injected(&[("config.linkerd.io/skip-outbound-ports", "3306,mysql")]);
    let o = net.cnitool_caps("add", &caps(&bad));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("config.linkerd.io/skip-outbound-ports") && err.contains("3306,mysql"),
        "{err}"
    );
    assert!(net.tables().is_empty(), "{:?}", net.tables());
    // The runtime tears a failed ADD down with DEL (host-local frees the address).
    ok(net.cnitool_caps("del", &caps(&bad)), "del");
    assert!(net.leases().is_empty(), "{:?}", net.leases());
    // The plugin's error object, run as a runtime runs it, on a pod whose capture is in
    // place: code 7, and the pod's ruleset is what it was.
    let good = injected(&[]);
    ok(net.cnitool_caps("add", &caps(&good)), "add");
    let before = net.ruleset();
    assert!(before.contains(TABLE), "{before}");
    for (key, value) in [
        ("config.linkerd.io/skip-outbound-ports", "3306,mysql"),
        ("config.linkerd.io/skip-inbound-ports", "9-3"),
        ("config.linkerd.io/skip-subnets", "fd00::/8"),
        ("config.linkerd.io/proxy-uid", "linkerd"),
    ] {
        let stdin = json!({
            "cniVersion": "1.0.0", "name": "meshnet", "type": "nftmesh-cni", "mesh": "linkerd",
            "runtimeConfig": caps(&injected(&[(key, value)])), "prevResult": prev(),
        });
        let (code, out) = plugin("ADD", &net.pod, &stdin, "");
        assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{key}: {out}");
        assert_eq!(out["msg"], "invalid pod annotation", "{out}");
        let details = out["details"].as_str().unwrap();
        assert!(details.contains(key) && details.contains(value), "{out}");
        assert_eq!(net.ruleset(), before, "{key}={value} changed the pod");
    }
    ok(net.cnitool_caps("del", &caps(&good)), "del");
}

#[test]
fn del_removes_the_table_whatever_the_entry_now_says() {
    if !in_node("del_removes_the_table_whatever_the_entry_now_says") {
        return;
    }
    let net = Net::new(linkerd_entry(json!({})));
    let pod = injected(&[]);
    for now in [
        // Switched to Istio.
        json!({"type": "nftmesh-cni", "mesh": "istio", "capabilities": {CAPABILITY: true}}),
        // Not parseable any more (linkerd-cni's own keys).
        json!({"type": "nftmesh-cni", "mesh": "linkerd",
               "linkerd": {"incoming-proxy-port": 4143}, "capabilities": {CAPABILITY: true}}),
        // No mesh, no annotations asked for.
        json!({"type": "nftmesh-cni", "capture": {}}),
    ] {
        net.rewrite_entry(linkerd_entry(json!({"type": "nftmesh-cni"})));
        ok(net.cnitool_caps("add", &caps(&pod)), "add");
        assert_eq!(ours(&net.tables()), vec![TABLE]);
        net.rewrite_entry(now.clone());
        ok(net.cnitool_caps("del", &caps(&pod)), "del");
        assert!(ours(&net.tables()).is_empty(), "{now}: {:?}", net.tables());
        assert!(net.leases().is_empty(), "{now}: the chain's DEL ran");
    }
}

#[test]
fn with_agent_socket_the_node_agent_installs_the_decided_linkerd_capture() {
    if !in_node("with_agent_socket_the_node_agent_installs_the_decided_linkerd_capture") {
        return;
    }
    let net = Net::new(json!({}));
    let socket = start_agent(&net.dir, true);
    let stdin = |annotations: &Value| {
        json!({
            "cniVersion": "1.0.0", "name": "meshnet", "type": "nftmesh-cni", "mesh": "linkerd",
            "agent_socket": socket, "runtimeConfig": caps(annotations), "prevResult": prev(),
        })
    };
    // Not injected: nothing installed, nothing kept.
    let plain = json!({"app": "web"});
    assert_eq!(plugin("ADD", &net.pod, &stdin(&plain), "").0, 0);
    assert!(net.tables().is_empty(), "{:?}", net.tables());
    // Injected: the agent installs what the plugin decided from the annotations.
    let pod = injected(&[
        ("config.linkerd.io/skip-outbound-ports", "3306"),
        ("config.linkerd.io/proxy-uid", "2103"),
    ]);
    let (code, out) = plugin("ADD", &net.pod, &stdin(&pod), "");
    assert_eq!(code, 0, "{out}");
    let text = listed("ip");
    let output = chain(&text, "proxy-init-output");
    assert!(
        output.contains(&"tcp dport 3306 counter return")
            && output.contains(&"meta skuid 2103 counter return"),
        "{text}"
    );
    let status = nftmesh_agent::client::call(
        &socket,
        json!({"command": "status", "network_namespace": net.pod}),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(status["pods"][0]["container_id"], "c1", "{status}");
    assert_eq!(
        plugin("CHECK", &net.pod, &stdin(&pod), ""),
        (0, Value::Null)
    );
    assert_eq!(plugin("DEL", &net.pod, &stdin(&pod), ""), (0, Value::Null));
    assert!(ours(&net.tables()).is_empty(), "{:?}", net.tables());
    let list =
        nftmesh_agent::client::call(&socket, json!({"command": "list"}), Duration::from_secs(5))
            .unwrap();
    assert_eq!(list["pods"], json!([]));
}

#[test]
fn through_the_agent_socket_the_agent_is_sent_every_linkerd_setting() {
    // No kernel: a stand-in agent on a unix socket answers ok and records the request.
    let agent = StandInAgent::new("linkerd-agent");
    let socket = &agent.socket;
    let stdin = |pod: &Value| {
        json!({
            "cniVersion": "1.0.0", "name": "meshnet", "type": "nftmesh-cni", "mesh": "linkerd",
            "agent_socket": socket, "runtimeConfig": caps(pod), "prevResult": prev(),
        })
    };
    let (code, out) = plugin("ADD", "/run/netns/p", &stdin(&json!({})), "");
    assert_eq!(code, 0, "{out}");
    assert!(
        agent.nothing_asked(),
        "the agent was asked about a pod without a proxy"
    );
    let pod = injected(&[
        ("config.linkerd.io/skip-outbound-ports", "3306,5432-5433"),
        ("config.linkerd.io/skip-subnets", "10.96.0.0/12"),
        ("config.linkerd.io/proxy-gid", "2102"),
    ]);
    let served = agent.serve_one();
    let (code, out) = plugin("ADD", "/run/netns/p", &stdin(&pod), "");
    assert_eq!(code, 0, "{out}");
    let req = served.join().unwrap();
    assert_eq!(req["command"], "add");
    assert!(req.get("capture").is_none(), "{req}");
    assert_eq!(
        req["linkerd"],
        json!({
            "incoming_proxy_port": 4143,
            "outgoing_proxy_port": 4140,
            "proxy_uid": 2102,
            "proxy_gid": 2102,
            "ports_to_redirect": [],
            "inbound_ports_to_ignore": [{"first": 4190, "last": 4190}, {"first": 4191, "last": 4191}],
            "outbound_ports_to_ignore": [{"first": 3306, "last": 3306}, {"first": 5432, "last": 5433}],
            "subnets_to_ignore": ["10.96.0.0/12"],
            "ipv6": false,
        }),
        "{req}"
    );
}
