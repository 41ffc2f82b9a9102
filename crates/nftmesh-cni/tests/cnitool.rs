//! nftmesh-cni with the real CNI runtime: Debian's `ptp` + `host-local` plugins and the
//! reference runtime `cnitool` (libcni), nftmesh-cni chained last. Each test runs in a private
//! node (`unshare -n -m`, see `nftmesh_test_support::node`) that holds the pod namespaces, with
//! tmpfs over libcni's cache dir, so the machine's own namespace and state are untouched.
//! The error rows that no runtime produces on purpose (no prevResult, an unknown version)
//! call the plugin directly, as a runtime would.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

#[test]
fn add_check_del_with_the_real_runtime() {
    if !in_node("add_check_del_with_the_real_runtime") {
        return;
    }
    let net = Net::new(json!({"capture": {"outbound_cidrs_include": "all"}, "validate": true}));
    let result: Value = serde_json::from_str(&net.ok("add")).unwrap();
    let ip = result["ips"][0]["address"]
        .as_str()
        .expect("an address")
        .to_string();
    assert!(ip.starts_with("10.22.0."), "{result}");
    assert_eq!(result["cniVersion"], "1.0.0");
    let addr = ip.split('/').next().unwrap();
    let shown = Command::new("ip")
        .args(["-n", "pod", "addr", "show", "eth0"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains(addr),
        "eth0 has {addr}"
    );
    assert_eq!(ours(&net.tables()), vec!["istio-proxy-nat"]);
    let to: SocketAddr = format!("{GATEWAY}:8080").parse().unwrap();
    assert_eq!(
        net.captured(),
        Some(to),
        "captured with its original destination"
    );
    net.ok("check");
    // ADD again (the plugin alone: ptp's host-local refuses a second address for the same
    // container): the same state, and the result again prevResult.
    let before = net.ruleset();
    let stdin = json!({
        "cniVersion": "1.0.0", "name": "meshnet", "type": "nftmesh-cni",
        "capture": {"outbound_cidrs_include": "all"}, "prevResult": result.clone(),
    });
    for _ in 0..2 {
        assert_eq!(plugin("ADD", &net.pod, &stdin, ""), (0, result.clone()));
    }
    assert_eq!(net.ruleset(), before);
    net.ok("check");
    net.ok("del");
    assert!(ours(&net.tables()).is_empty(), "DEL leaves nothing of ours");
    assert_eq!(net.captured(), None, "and nothing is captured");
}

#[test]
fn check_names_tampering_and_del_of_a_deleted_namespace_succeeds() {
    if !in_node("check_names_tampering_and_del_of_a_deleted_namespace_succeeds") {
        return;
    }
    let net = Net::new(json!({"capture": {"outbound_cidrs_include": "all"}}));
    net.ok("add");
    net.nft(&[
        "flush",
        "chain",
        "inet",
        "istio-proxy-nat",
        "istio-redirect",
    ]);
    let o = net.cnitool("check", "");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("differs") && err.contains("istio-redirect"),
        "{err}"
    );
    net.ok("del");
    net.ok("add");
    let o = Command::new("ip")
        .args(["netns", "del", "pod"])
        .output()
        .unwrap();
    assert!(o.status.success());
    net.ok("del");
}

#[test]
fn an_excluded_namespace_passes_through() {
    if !in_node("an_excluded_namespace_passes_through") {
        return;
    }
    let net = Net::new(json!({
        "capture": {"outbound_cidrs_include": "all"},
        "exclude_namespaces": ["kube-system"],
    }));
    let o = net.cnitool(
        "add",
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let result: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(result["ips"][0]["address"].is_string(), "{result}");
    assert!(ours(&net.tables()).is_empty());
    assert_eq!(net.captured(), None);
    let o = net.cnitool("check", "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system");
    assert!(o.status.success());
    let o = net.cnitool("del", "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system");
    assert!(o.status.success());
}

#[test]
fn failing_validation_and_an_unreachable_agent_fail_the_add_and_leave_nothing() {
    if !in_node("failing_validation_and_an_unreachable_agent_fail_the_add_and_leave_nothing") {
        return;
    }
    // The probe port 15002 made the tunnel port: the proxy's loopback probe is never
    // redirected, so the validation cannot see it captured.
    let net = Net::new(json!({
        "capture": {"outbound_cidrs_include": "all", "inbound_tunnel_port": 15002},
        "validate": true,
        "validation_timeout": 1,
    }));
    let o = net.cnitool("add", "");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("validation failed"), "{err}");
    assert!(
        ours(&net.tables()).is_empty(),
        "a failed ADD leaves nothing of ours"
    );
    drop(net);

    let net = Net::new(json!({
        "capture": {"outbound_cidrs_include": "all"},
        "agent_socket": "/run/nftmesh-no-agent.sock",
    }));
    let (code, out) = plugin(
        "ADD",
        &net.pod,
        &with_prev("/run/nftmesh-no-agent.sock"),
        "",
    );
    assert_eq!((code, out["code"].as_u64()), (1, Some(11)), "{out}");
    assert!(
        out["details"]
            .as_str()
            .unwrap()
            .contains("nftmesh-no-agent.sock"),
        "{out}"
    );
    assert!(ours(&net.tables()).is_empty());
}

/// The conflist's nftmesh-cni entry as a runtime passes it, with a prevResult.
fn with_prev(socket: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "meshnet",
        "type": "nftmesh-cni",
        "capture": {"outbound_cidrs_include": "all"},
        "agent_socket": socket,
        "prevResult": prev(),
    })
}

#[test]
fn add_check_del_are_delegated_to_the_agent_socket() {
    if !in_node("add_check_del_are_delegated_to_the_agent_socket") {
        return;
    }
    let net = Net::new(json!({}));
    let socket = net.dir.join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let agent = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            let req: Value = serde_json::from_str(&line).unwrap();
            let reply = if req["command"] == "check" {
                json!({"ok": false, "error": "drift", "differences": ["rule gone"]})
            } else {
                json!({"ok": true})
            };
            (&s).write_all(format!("{reply}\n").as_bytes()).unwrap();
            seen.push(req);
        }
        seen
    });
    let stdin = with_prev(socket.to_str().unwrap());
    let (code, out) = plugin("ADD", &net.pod, &stdin, "");
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, {
        let mut p = prev();
        p["cniVersion"] = json!("1.0.0");
        p
    });
    let (code, out) = plugin("CHECK", &net.pod, &stdin, "");
    assert_eq!((code, out["code"].as_u64()), (1, Some(101)), "{out}");
    assert!(out["details"].as_str().unwrap().contains("rule gone"));
    let (code, _) = plugin("DEL", &net.pod, &stdin, "");
    assert_eq!(code, 0);
    let seen = agent.join().unwrap();
    let commands: Vec<&str> = seen
        .iter()
        .map(|r| r["command"].as_str().unwrap())
        .collect();
    assert_eq!(commands, ["add", "check", "remove"]);
    assert_eq!(seen[0]["version"], 1);
    assert_eq!(seen[0]["network_namespace"], net.pod);
    assert_eq!(seen[0]["container_id"], "c1");
    // The capture the plugin decided for the pod, every setting spelled out; none to remove.
    assert_eq!(seen[0]["capture"]["outbound_cidrs_include"], "all");
    assert_eq!(seen[0]["capture"]["proxy_port"], 15001);
    assert_eq!(seen[1]["capture"], seen[0]["capture"]);
    assert!(seen[2].get("capture").is_none(), "{}", seen[2]);
    assert!(
        ours(&net.tables()).is_empty(),
        "the plugin itself installed nothing"
    );
}

#[test]
fn errors_are_spec_error_objects_with_their_codes() {
    if !in_node("errors_are_spec_error_objects_with_their_codes") {
        return;
    }
    let net = Net::new(json!({"capture": {"proxy_port": 0}}));
    // Invalid config through the real runtime: refused, nothing installed.
    let o = net.cnitool("add", "");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("proxy_port"));
    assert!(ours(&net.tables()).is_empty());

    let base = json!({
        "cniVersion": "1.0.0", "name": "meshnet", "type": "nftmesh-cni",
        "capture": {"outbound_cidrs_include": "all"}, "prevResult": prev(),
    });
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    let cases = [
        (
            "ADD",
            with("capture", json!({"proxy_port": 0})),
            7,
            "proxy_port",
        ),
        ("ADD", with("prevResult", Value::Null), 7, "prevResult"),
        ("ADD", with("cniVersion", json!("0.2.0")), 1, "0.2.0"),
        ("CHECK", with("cniVersion", json!("0.3.1")), 1, "CHECK"),
        ("STATUS", base.clone(), 1, "STATUS"),
        ("GC", base.clone(), 1, "GC"),
        ("LIST", base.clone(), 4, "CNI_COMMAND"),
    ];
    for (command, stdin, code, word) in cases {
        let (exit, out) = plugin(command, &net.pod, &stdin, "");
        assert_eq!(
            (exit, out["code"].as_u64()),
            (1, Some(code)),
            "{command}: {out}"
        );
        assert!(
            out["details"].as_str().unwrap().contains(word),
            "{command}: {out}"
        );
        assert!(
            out["msg"].is_string() && out["cniVersion"].is_string(),
            "{out}"
        );
    }
    let (exit, out) = plugin("ADD", "", &base, "");
    assert_eq!((exit, out["code"].as_u64()), (1, Some(4)), "{out}");
    let (exit, out) = plugin("ADD", &net.pod, &base, "K8S_POD_NAMESPACE");
    assert_eq!((exit, out["code"].as_u64()), (1, Some(4)), "{out}");
    // Prevresult kept, not a capture of an unreadable config.
    assert!(ours(&net.tables()).is_empty());

    let (exit, out) = plugin("VERSION", "", &json!({"cniVersion": "1.1.0"}), "");
    assert_eq!(exit, 0);
    assert_eq!(
        out,
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    let v11 = with("cniVersion", json!("1.1.0"));
    assert_eq!(plugin("STATUS", "", &v11, ""), (0, Value::Null));
    assert_eq!(plugin("GC", "", &v11, ""), (0, Value::Null));
    let mut no_agent = v11.clone();
    no_agent["agent_socket"] = json!("/run/none.sock");
    let (exit, out) = plugin("STATUS", "", &no_agent, "");
    assert_eq!((exit, out["code"].as_u64()), (1, Some(50)), "{out}");
    // DEL of a namespace that never held anything of ours, and without CNI_NETNS.
    assert_eq!(plugin("DEL", &net.pod, &base, ""), (0, Value::Null));
    assert_eq!(plugin("DEL", "", &base, ""), (0, Value::Null));
    assert_eq!(
        plugin("DEL", "/run/netns/gone", &base, ""),
        (0, Value::Null)
    );
}

#[test]
fn an_ambient_capture_is_installed_and_removed_and_each_command_logged() {
    if !in_node("an_ambient_capture_is_installed_and_removed_and_each_command_logged") {
        return;
    }
    let log = std::env::temp_dir().join(format!("nftmesh-cni-{}.log", std::process::id()));
    let net = Net::new(json!({"ambient": {}, "log_file": log, "log_level": "info"}));
    net.ok("add");
    let mut tables = ours(&net.tables()).into_iter().cloned().collect::<Vec<_>>();
    tables.sort();
    // (The raw table comes with DNS capture, off by default.)
    assert_eq!(tables, ["istio-ambient-mangle", "istio-ambient-nat"]);
    // ztunnel's in-pod capture needs its TPROXY routing: installed with the tables.
    let rules = Command::new("ip")
        .args(["-n", "pod", "rule", "show"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    assert!(rules.contains("fwmark"), "{rules}");
    net.ok("check");
    net.ok("del");
    assert!(ours(&net.tables()).is_empty());
    let rules = Command::new("ip")
        .args(["-n", "pod", "rule", "show"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&rules.stdout).contains("fwmark"));
    let text = std::fs::read_to_string(&log).expect("the log file");
    let _ = std::fs::remove_file(&log);
    // One line per command: `TIME\tinfo\tMESSAGE\tcommand=C container_id=ID`, the time in
    // RFC 3339 UTC with milliseconds.
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    for l in &lines {
        assert_eq!(l.len(), 4, "{text}");
        let t = l[0].as_bytes();
        assert!(
            t.len() == 24 && t[10] == b'T' && t[19] == b'.' && t[23] == b'Z',
            "{text}"
        );
    }
    for command in ["ADD", "CHECK", "DEL"] {
        assert_eq!(
            lines
                .iter()
                .filter(|l| l[1] == "info" && l[3].starts_with(&format!("command={command} ")))
                .count(),
            1,
            "{command} in {text}"
        );
    }

    // A configuration error reaches the same file, here as JSON.
    let bad = json!({
        "cniVersion": "1.0.0", "name": "meshnet", "type": "nftmesh-cni", "ambient": {},
        "capture": {}, "prevResult": prev(), "log_file": log, "log_format": "json",
    });
    let (code, out) = plugin("ADD", &net.pod, &bad, "");
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    let text = std::fs::read_to_string(&log).expect("the log file");
    let _ = std::fs::remove_file(&log);
    let v: Value = serde_json::from_str(text.trim_end()).expect("one JSON line");
    assert_eq!(
        (&v["level"], &v["command"]),
        (&json!("error"), &json!("ADD")),
        "{v}"
    );
    assert!(v["msg"].as_str().unwrap().contains("exclusive"), "{v}");
}

#[test]
fn with_agent_socket_the_node_agent_installs_checks_and_removes() {
    if !in_node("with_agent_socket_the_node_agent_installs_checks_and_removes") {
        return;
    }
    let net = Net::new(json!({}));
    // Unowned tables: the test tampers with them to see the agent repair.
    let socket = start_agent(&net.dir, false);
    let stdin = with_prev(socket.to_str().unwrap());
    let (code, out) = plugin("ADD", &net.pod, &stdin, "");
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        ours(&net.tables()),
        vec!["istio-proxy-nat"],
        "the agent installed it"
    );
    let status = nftmesh_agent::client::call(
        &socket,
        json!({"command": "status", "network_namespace": net.pod}),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(status["pods"][0]["container_id"], "c1", "{status}");
    assert_eq!(plugin("CHECK", &net.pod, &stdin, ""), (0, Value::Null));
    net.nft(&["flush", "chain", "inet", "istio-proxy-nat", "istio-output"]);
    // The agent repairs what it keeps, so CHECK holds again shortly after.
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while plugin("CHECK", &net.pod, &stdin, "").0 != 0 {
        assert!(std::time::Instant::now() < end, "repaired within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(plugin("DEL", &net.pod, &stdin, ""), (0, Value::Null));
    assert!(ours(&net.tables()).is_empty());
    let list =
        nftmesh_agent::client::call(&socket, json!({"command": "list"}), Duration::from_secs(5))
            .unwrap();
    assert_eq!(list["pods"], json!([]));
}
