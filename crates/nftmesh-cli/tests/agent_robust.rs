//! The node agent under abuse, as processes in a private node (`unshare -n -m`): clients that
//! never read or never speak, a FIFO or the node's own namespace given as a pod, several
//! spellings of one namespace, a full state dir, two agents on one state dir, kill -9 and an
//! immediate restart, SIGHUP, records it cannot read, paths of any length and too few
//! descriptors for its pods. Every wait is bounded; only processes the test started are killed.

mod common;

use common::agent::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SIDECAR: [&str; 4] = ["-i", "*", "-b", "*"];

/// One raw request on a fresh connection; its reply.
fn request(d: &Dirs, line: &str) -> Value {
    let mut s = UnixStream::connect(d.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    writeln!(s, "{line}").unwrap();
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).unwrap();
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{e}: {reply}"))
}

fn listed(d: &Dirs) -> Vec<String> {
    let v = request(d, r#"{"version":1,"command":"list"}"#);
    v["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

fn flush_redirect(netns: &str) {
    let name = Path::new(netns).file_name().unwrap().to_str().unwrap();
    let o = Command::new("ip")
        .args(["netns", "exec", name, "nft", "flush", "chain", "inet"])
        .args(["istio-proxy-nat", "istio-redirect"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn clients_that_never_read_or_never_speak_do_not_delay_repairs_or_adds() {
    if !in_node("clients_that_never_read_or_never_speak_do_not_delay_repairs_or_adds") {
        return;
    }
    let d = Dirs::new();
    let _agent = Agent::start(&d, "60");
    let p1 = pod("p1");
    add(&d, &p1, &SIDECAR);
    let want = ruleset(&p1);
    // A client that sends 3 000 status requests and never reads a reply (megabytes of
    // replies), and 300 clients that connect and say nothing.
    let mut stalled = UnixStream::connect(d.socket()).unwrap();
    stalled.set_nonblocking(true).unwrap();
    let req = "{\"version\":1,\"command\":\"status\"}\n".repeat(3000);
    let mut sent = 0;
    let end = Instant::now() + Duration::from_secs(5);
    while sent < req.len() && Instant::now() < end {
        match stalled.write(&req.as_bytes()[sent..]) {
            Ok(n) => sent += n,
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    let idle: Vec<UnixStream> = (0..300)
        .map(|_| UnixStream::connect(d.socket()).unwrap())
        .collect();
    // Tampering is repaired, and a new pod is added, while they hang on.
    flush_redirect(&p1);
    eventually("the flushed chain repaired", || ruleset(&p1) == want);
    let p2 = pod("p2");
    add(&d, &p2, &SIDECAR);
    assert_eq!(listed(&d).len(), 2);
    drop(idle);
    drop(stalled);
}

#[test]
fn a_fifo_the_node_and_other_spellings_are_not_new_pods() {
    if !in_node("a_fifo_the_node_and_other_spellings_are_not_new_pods") {
        return;
    }
    let d = Dirs::new();
    let agent = Agent::start(&d, "60");
    // A FIFO: refused at once, naming what it is; the agent goes on.
    let fifo = d.root.join("fifo");
    let o = Command::new("mkfifo").arg(&fifo).output().unwrap();
    assert!(o.status.success());
    let started = Instant::now();
    let (ok, _, err) = cli(&d, &["add", "--network-namespace", fifo.to_str().unwrap()]);
    assert!(
        !ok && err.contains("not a network namespace but a FIFO"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The node's own namespace (the agent's), by any path: refused, nothing installed there.
    let node_before = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    for path in [
        format!("/proc/{}/ns/net", agent.0.id()),
        "/proc/self/ns/net".to_string(),
    ] {
        let (ok, _, err) = cli(
            &d,
            &[&["add", "--network-namespace", &path][..], &SIDECAR].concat(),
        );
        assert!(!ok, "{path}");
        assert!(
            err.contains("capture there would change the node's own traffic"),
            "{err}"
        );
    }
    let node_after = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert_eq!(node_before.stdout, node_after.stdout);
    // Three spellings of one namespace are one pod; removed by any of them.
    let p = pod("p1");
    add(&d, &p, &SIDECAR);
    add(&d, "//run/netns/p1", &SIDECAR);
    add(&d, "/run/netns/../netns/p1", &SIDECAR);
    assert_eq!(listed(&d), vec![p.clone()]);
    let records = || std::fs::read_dir(d.state().join("pods")).unwrap().count();
    assert_eq!(records(), 1);
    let (ok, _, err) = cli(&d, &["remove", "--network-namespace", "//run/netns/p1"]);
    assert!(ok, "{err}");
    assert!(listed(&d).is_empty());
    assert_eq!(records(), 0);
    assert!(!ruleset(&p).contains("istio-proxy-nat"));
}

#[test]
fn a_full_state_dir_refuses_the_add_and_leaves_nothing() {
    if !in_node("a_full_state_dir_refuses_the_add_and_leaves_nothing") {
        return;
    }
    let d = Dirs::new();
    std::fs::create_dir_all(d.state()).unwrap();
    // A small tmpfs as the state dir (this test's own mount namespace).
    let o = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "nftmesh-state"])
        .arg(d.state())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _agent = Agent::start(&d, "60");
    std::fs::create_dir_all(d.state().join("pods")).unwrap();
    // Fill it.
    let filler = d.state().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write_all(&[0u8; 4096]).is_ok() {}
    let _ = f.sync_all();
    drop(f);
    let p = pod("p1");
    let (ok, _, err) = cli(
        &d,
        &[&["add", "--network-namespace", &p][..], &SIDECAR].concat(),
    );
    assert!(
        !ok,
        "an add whose record cannot be written is not acknowledged"
    );
    assert!(err.contains("saving the record"), "{err}");
    assert!(
        !ruleset(&p).contains("istio-proxy-nat"),
        "and leaves nothing"
    );
    assert!(listed(&d).is_empty());
    std::fs::remove_file(&filler).unwrap();
    add(&d, &p, &SIDECAR);
    assert_eq!(listed(&d), vec![p]);
    let o = Command::new("umount").arg(d.state()).output();
    drop(o);
}

#[test]
fn one_agent_per_state_dir_and_kill_9_then_an_immediate_restart() {
    if !in_node("one_agent_per_state_dir_and_kill_9_then_an_immediate_restart") {
        return;
    }
    let d = Dirs::new();
    let agent = Agent::start(&d, "60");
    let p = pod("p1");
    add(&d, &p, &SIDECAR);
    // A second agent on the same state dir (another socket) refuses to start (bounded: one
    // that did start is stopped after 10 s, and fails the test).
    let o = Command::new("timeout")
        .args([
            "10",
            env!("CARGO_BIN_EXE_nftmesh"),
            "agent",
            "run",
            "--socket",
        ])
        .arg(d.root.join("second.sock"))
        .arg("--state-dir")
        .arg(d.state())
        .env_clear()
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("another agent uses this state dir"), "{err}");
    // SIGHUP is not a stop.
    let pid = agent.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(listed(&d), vec![p.clone()], "alive after SIGHUP");
    // kill -9, and at once a new agent: it starts and adopts the pod.
    assert_eq!(agent.kill("KILL"), None);
    let _again = Agent::start(&d, "60");
    assert_eq!(listed(&d), vec![p.clone()]);
    flush_redirect(&p);
    eventually("repaired by the restarted agent", || {
        ruleset(&p).contains("redirect to :15001")
    });
}

#[test]
fn records_it_cannot_read_are_kept_and_long_paths_survive_a_restart() {
    if !in_node("records_it_cannot_read_are_kept_and_long_paths_survive_a_restart") {
        return;
    }
    let d = Dirs::new();
    let pods = d.state().join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    let newer = pods.join("future.json");
    std::fs::write(&newer, r#"{"version":9,"pod":{"something":"new"}}"#).unwrap();
    let torn = pods.join("torn.json");
    std::fs::write(&torn, r#"{"version":2,"pod":"#).unwrap();
    // A namespace reached by a path of 250 bytes (a bind mount of this node's own).
    let p = pod("p1");
    let long_dir = d.root.join("d".repeat(200));
    std::fs::create_dir_all(&long_dir).unwrap();
    let long = long_dir.join("ns");
    std::fs::write(&long, "").unwrap();
    let o = Command::new("mount")
        .args(["--bind", &p])
        .arg(&long)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let long = long.to_str().unwrap().to_string();
    assert!(long.len() > 200);
    let agent = Agent::start(&d, "60");
    let all = request(&d, r#"{"version":1,"command":"status"}"#);
    let unreadable: Vec<&str> = all["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["file"].as_str().unwrap())
        .collect();
    assert_eq!(unreadable.len(), 2, "{all}");
    add(&d, &long, &SIDECAR);
    assert_eq!(agent.kill("KILL"), None);
    let _again = Agent::start(&d, "60");
    assert_eq!(listed(&d), vec![long.clone()]);
    assert!(newer.exists() && torn.exists(), "never deleted");
    let o = Command::new("umount").arg(&long).output();
    drop(o);
}

#[test]
fn replies_echo_the_request_id_and_name_their_kind() {
    if !in_node("replies_echo_the_request_id_and_name_their_kind") {
        return;
    }
    let d = Dirs::new();
    let agent = Agent::start(&d, "60");
    let v = request(&d, r#"{"version":1,"command":"list","id":42}"#);
    assert_eq!(
        (&v["ok"], &v["id"]),
        (&Value::Bool(true), &Value::from(42)),
        "{v}"
    );
    let v = request(&d, r#"{"version":1,"command":"nuke","id":7}"#);
    assert_eq!(
        (&v["kind"], &v["id"]),
        (&Value::from("invalid"), &Value::from(7)),
        "{v}"
    );
    let node = format!("/proc/{}/ns/net", agent.0.id());
    let line = format!(
        r#"{{"version":1,"command":"add","network_namespace":"{node}","capture":{{}},"id":8}}"#
    );
    let v = request(&d, &line);
    assert_eq!(
        (&v["kind"], &v["id"]),
        (&Value::from("refused"), &Value::from(8)),
        "{v}"
    );
    // Pipelined requests on one connection are answered in order, each with its id, the add
    // of a new pod (on a worker) included.
    let p = pod("p1");
    let mut s = UnixStream::connect(d.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let add = format!(
        r#"{{"version":1,"command":"add","network_namespace":"{p}","capture":{{}},"id":1}}"#
    );
    let list = r#"{"version":1,"command":"list","id":2}"#;
    write!(s, "{add}\n{list}\n").unwrap();
    let mut r = BufReader::new(&s);
    let ids: Vec<Value> = (0..2)
        .map(|_| {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["ok"], Value::Bool(true), "{v}");
            if v["id"] == 2 {
                assert_eq!(
                    v["pods"],
                    serde_json::json!([p]),
                    "the list follows the add"
                );
            }
            v["id"].clone()
        })
        .collect();
    assert_eq!(ids, vec![Value::from(1), Value::from(2)]);
}

#[test]
fn in_a_pid_namespace_the_agent_knows_its_own_commits_and_still_sees_tampering() {
    if !in_node("in_a_pid_namespace_the_agent_knows_its_own_commits_and_still_sees_tampering") {
        return;
    }
    let d = Dirs::new();
    // Made before the agent's mount namespace is (a copy of this one) so that it sees it.
    let p = pod("p1");
    // As a DaemonSet pod without hostPID: the kernel names committers by their global thread
    // ids, which the agent cannot see from its own PID namespace.
    let _agent = Agent::start_under(
        &d,
        &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
        "600",
        &[],
        std::process::Stdio::null(),
    );
    add(&d, &p, &SIDECAR);
    // Its own install is not taken for tampering: no check follows it.
    std::thread::sleep(Duration::from_millis(300));
    let s = status(&d, &p);
    assert_eq!(s["last_check"], Value::Null, "{s}");
    assert_eq!(s["repairs"], 0, "{s}");
    // Another process's flush is.
    let want = ruleset(&p);
    flush_redirect(&p);
    eventually("the flush repaired", || ruleset(&p) == want);
    assert_eq!(status(&d, &p)["repairs"], 1);
}

#[test]
fn tproxy_routing_removed_by_another_process_is_repaired_at_once() {
    if !in_node("tproxy_routing_removed_by_another_process_is_repaired_at_once") {
        return;
    }
    let d = Dirs::new();
    // No resync for a minute: only the routing notifications can bring the repair.
    let _agent = Agent::start(&d, "60");
    let p = pod("p1");
    add(&d, &p, &["-i", "*", "-b", "*", "-m", "TPROXY"]);
    let rules = || in_pod(&p, "ip", &["rule"]);
    assert!(rules().contains("fwmark 0x539 lookup 133"), "{}", rules());
    in_pod(
        &p,
        "ip",
        &["rule", "del", "fwmark", "1337", "lookup", "133"],
    );
    eventually("the fwmark rule back", || {
        rules().contains("fwmark 0x539 lookup 133")
    });
    // One deletion (`ip route flush` deletes in rounds until a round finds nothing, and so
    // would delete the repaired route again).
    in_pod(
        &p,
        "ip",
        &[
            "route", "del", "local", "default", "dev", "lo", "table", "133",
        ],
    );
    eventually("the local route back", || {
        in_pod(&p, "ip", &["route", "show", "table", "133"]).contains("local default dev lo")
    });
    let s = status(&d, &p);
    assert_eq!(s["repairs"], 2, "{s}");
}

/// `nft ARGS` in the pod, as another process would run it; its output.
fn nft_in(netns: &str, args: &[&str]) -> std::process::Output {
    let name = Path::new(netns).file_name().unwrap().to_str().unwrap();
    Command::new("ip")
        .args(["netns", "exec", name, "nft"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn owned_tables_refuse_tampering_outlive_a_killed_agent_and_are_claimed_again() {
    if !in_node("owned_tables_refuse_tampering_outlive_a_killed_agent_and_are_claimed_again") {
        return;
    }
    let d = Dirs::new();
    let owned = ["--own-tables", "true"];
    let agent = Agent::start_with(&d, "60", &owned);
    let p = pod("p1");
    add(&d, &p, &SIDECAR);
    assert_eq!(status(&d, &p)["tables_owned"], true);
    let want = ruleset(&p);
    assert!(want.contains("flags owner"), "{want}");
    // Another process's flush, delete and added rule: refused by the kernel, nothing changes,
    // nothing to repair.
    for args in [
        &["flush", "table", "inet", "istio-proxy-nat"][..],
        &["delete", "table", "inet", "istio-proxy-nat"],
        &[
            "add",
            "rule",
            "inet",
            "istio-proxy-nat",
            "istio-output",
            "accept",
        ],
    ] {
        let o = nft_in(&p, args);
        assert!(!o.status.success(), "nft {args:?} went through");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("Operation not permitted"), "{err}");
    }
    assert_eq!(ruleset(&p), want);
    assert_eq!(status(&d, &p)["repairs"], 0);
    // kill -9: the tables stay (ownerless, persist) and keep capturing.
    assert_eq!(agent.kill("KILL"), None);
    let orphan = ruleset(&p);
    assert!(orphan.contains("redirect to :15001"), "{orphan}");
    assert!(!orphan.contains("flags owner"), "{orphan}");
    // The restarted agent claims them: a foreign flush is refused again.
    let _again = Agent::start_with(&d, "60", &owned);
    assert_eq!(status(&d, &p)["tables_owned"], true);
    assert!(ruleset(&p).contains("flags owner"), "{}", ruleset(&p));
    let o = nft_in(&p, &["flush", "table", "inet", "istio-proxy-nat"]);
    assert!(!o.status.success());
    // And the agent itself still removes them.
    let (ok, _, err) = cli(&d, &["remove", "--network-namespace", &p]);
    assert!(ok, "{err}");
    assert_eq!(ruleset(&p), "");
}

/// `lines` as requests on one connection; their replies, each waited for at most 10 s.
fn requests(d: &Dirs, lines: &[&str]) -> Vec<Value> {
    let mut s = UnixStream::connect(d.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for line in lines {
        writeln!(s, "{line}").unwrap();
    }
    let mut r = BufReader::new(&s);
    lines
        .iter()
        .map(|line| {
            let mut reply = String::new();
            r.read_line(&mut reply)
                .unwrap_or_else(|e| panic!("no reply to {line} within 10 s: {e}"));
            serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{e}: {reply}"))
        })
        .collect()
}

#[test]
fn out_of_descriptors_records_are_kept_not_forgotten() {
    if !in_node("out_of_descriptors_records_are_kept_not_forgotten") {
        return;
    }
    let d = Dirs::new();
    let agent = Agent::start(&d, "60");
    let pods: Vec<String> = (0..40).map(|i| pod(&format!("p{i}"))).collect();
    for p in &pods {
        add(&d, p, &SIDECAR);
    }
    assert_eq!(agent.kill("KILL"), None);
    // Restarted with 48 descriptors, soft and hard (the agent raises its soft limit to the
    // hard one): about three a pod, so it cannot open all 40. It listens once it adopted what
    // it could.
    let log = d.root.join("starved.log");
    let starved = Agent::start_under(
        &d,
        &["prlimit", "--nofile=48:48"],
        "600",
        &[],
        std::fs::File::create(&log).unwrap().into(),
    );
    assert!(std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("\tlistening\t"));
    // Every record is still there: none deleted because its pod could not be opened.
    let records = || std::fs::read_dir(d.state().join("pods")).unwrap().count();
    assert_eq!(records(), 40, "no record deleted");
    // It still answers, with the pods it could open; the others are kept, unadopted, and
    // say why. (One connection for both: a descriptor is about all it has left for clients.)
    let replies = requests(
        &d,
        &[
            r#"{"version":1,"command":"list"}"#,
            r#"{"version":1,"command":"status"}"#,
        ],
    );
    let (list, all) = (&replies[0], &replies[1]);
    let adopted = list["pods"].as_array().unwrap();
    assert!(adopted.len() < 40, "{list}");
    let unadopted = all["unadopted"].as_array().unwrap();
    assert_eq!(adopted.len() + unadopted.len(), 40, "{all}");
    for u in unadopted {
        let e = u["error"].as_str().unwrap();
        assert!(
            e.contains("Too many open files") || e.contains("EMFILE"),
            "{u}"
        );
    }
    assert_eq!(records(), 40, "no record deleted");
    // With its descriptors back, a restarted agent adopts all 40.
    assert_eq!(starved.kill("KILL"), None);
    let _again = Agent::start(&d, "600");
    let mut again = listed(&d);
    again.sort();
    let mut want = pods.clone();
    want.sort();
    assert_eq!(again, want);
}

#[test]
fn a_path_reused_by_another_namespace_while_the_agent_is_down_is_not_that_pod() {
    if !in_node("a_path_reused_by_another_namespace_while_the_agent_is_down_is_not_that_pod") {
        return;
    }
    let d = Dirs::new();
    let agent = Agent::start(&d, "60");
    let p = pod("p1");
    add(&d, &p, &SIDECAR);
    assert_eq!(agent.kill("KILL"), None);
    // While it is down: the pod goes, and an unrelated namespace takes its path.
    let o = Command::new("ip")
        .args(["netns", "del", "p1"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let again = pod("p1");
    assert_eq!(again, p);
    let _agent = Agent::start(&d, "60");
    assert!(
        listed(&d).is_empty(),
        "the record of the gone pod is forgotten"
    );
    assert_eq!(
        ruleset(&again),
        "",
        "the new namespace gets no capture of the old pod's"
    );
    assert_eq!(
        std::fs::read_dir(d.state().join("pods")).unwrap().count(),
        0
    );
}
