//! The plugin's CNI error codes for what a node agent answers, through a stand-in agent on a
//! unix socket in a fresh directory (no kernel): unreachable, a dropped connection and "busy"
//! are 11 (try again), a failed check's differences 101, other refusals 103.

use nftmesh_protocol::{Command, Request, Verb};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::thread::JoinHandle;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nftmesh-cni-codes-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A stand-in agent: accepts one client, reads its line, writes `answer` as it is and closes;
/// returns the request it read.
fn stand_in(name: &str, answer: &'static str) -> (PathBuf, JoinHandle<Request>) {
    let socket = dir(name).join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let served = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        (&s).write_all(answer.as_bytes()).unwrap();
        Request::parse(line.trim_end().as_bytes()).unwrap()
    });
    (socket, served)
}

/// Run the plugin's `command` with the agent at `socket`: its exit status and stdout.
fn plugin(command: &str, socket: &std::path::Path) -> (i32, Value) {
    let stdin = json!({
        "cniVersion": "1.0.0", "name": "meshnet", "type": "nftmesh-cni",
        "agent_socket": socket, "capture": {"proxy_port": 15001},
        "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "ips": []},
    });
    let mut child = Process::new(env!("CARGO_BIN_EXE_nftmesh-cni"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "c1")
        .env("CNI_NETNS", "/run/netns/p")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nftmesh-cni");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.to_string().as_bytes()).unwrap();
    drop(input);
    let o = child.wait_with_output().unwrap();
    let out = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o.status.code().unwrap_or(-1), out)
}

#[test]
fn busy_with_or_without_a_kind_is_try_again() {
    for (name, answer) in [
        (
            "busy-text",
            "{\"ok\":false,\"error\":\"busy: 256 clients already\"}\n",
        ),
        (
            "busy-kind",
            "{\"ok\":false,\"kind\":\"busy\",\"error\":\"workers full\"}\n",
        ),
    ] {
        let (socket, served) = stand_in(name, answer);
        let (status, out) = plugin("ADD", &socket);
        assert_eq!((status, &out["code"]), (1, &json!(11)), "{name}: {out}");
        let req = served.join().unwrap();
        assert_eq!(req.verb, Verb::Add);
        assert_eq!(req.container_id.as_deref(), Some("c1"));
    }
}

#[test]
fn a_connection_dropped_before_a_complete_reply_is_try_again() {
    for (name, answer) in [("dropped", ""), ("half", "{\"ok\":tr")] {
        let (socket, served) = stand_in(name, answer);
        let (_, out) = plugin("ADD", &socket);
        assert_eq!(out["code"], 11, "{name}: {out}");
        served.join().unwrap();
    }
}

#[test]
fn an_agent_that_is_not_there_is_try_again() {
    let socket = dir("absent").join("agent.sock");
    let (_, out) = plugin("ADD", &socket);
    assert_eq!(out["code"], 11, "{out}");
}

#[test]
fn a_check_with_differences_is_drift_and_other_refusals_are_103() {
    let (socket, served) = stand_in(
        "drift",
        "{\"ok\":false,\"error\":\"the capture differs from the desired one\",\"differences\":[\"table inet istio-proxy-nat: missing\"]}\n",
    );
    let (_, out) = plugin("CHECK", &socket);
    assert_eq!(out["code"], 101, "{out}");
    assert!(
        out["details"]
            .as_str()
            .unwrap_or_default()
            .contains("istio-proxy-nat"),
        "{out}"
    );
    let req = served.join().unwrap();
    assert_eq!(req.verb, Verb::Check);
    assert!(
        req.desired.is_some(),
        "the check carries the decided capture"
    );
    for (name, answer) in [
        (
            "refused",
            "{\"ok\":false,\"error\":\"refused: only root may use the agent\"}\n",
        ),
        (
            "invalid",
            "{\"ok\":false,\"kind\":\"invalid\",\"error\":\"bad request\"}\n",
        ),
        ("garbage", "hello\n"),
    ] {
        let (socket, served) = stand_in(name, answer);
        let (_, out) = plugin("ADD", &socket);
        assert_eq!(out["code"], 103, "{name}: {out}");
        served.join().unwrap();
    }
}

#[test]
fn del_is_a_typed_remove() {
    let (socket, served) = stand_in("del", "{\"ok\":true,\"tables\":3}\n");
    let (status, out) = plugin("DEL", &socket);
    assert_eq!(status, 0, "{out}");
    let req = served.join().unwrap();
    let line = req.to_json();
    assert_eq!(
        nftmesh_protocol::parse(line.as_bytes()),
        Ok(Command::Remove("/run/netns/p".into()))
    );
    assert_eq!(req.desired, None);
}
