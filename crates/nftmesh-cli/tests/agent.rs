//! `nftmesh agent`, as processes, in a private node (`unshare -n -m`) holding the pod
//! namespaces: tampering of each kind repaired, SIGKILL and restart re-adopting, `remove`
//! staying removed, a deleted namespace forgotten, concurrent adds, bad requests and a
//! refused peer. Every wait is bounded; only processes the test started are killed.

mod common;

use common::agent::*;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A tampering command's `nft` arguments, given a way to look up a rule handle by chain.
type Tamper = fn(&dyn Fn(&str) -> String) -> Vec<String>;

fn words(s: &str) -> Vec<String> {
    s.split(' ').map(str::to_string).collect()
}

const TPROXY: [&str; 6] = ["-i", "*", "-b", "*", "-m", "TPROXY"];

#[test]
fn tampering_of_each_kind_is_repaired() {
    if !in_node("tampering_of_each_kind_is_repaired") {
        return;
    }
    let d = Dirs::new();
    let _agent = Agent::start(&d, "0.5");
    let p = pod("p1");
    add(
        &d,
        &p,
        &[&TPROXY[..], &["-x", "10.1.0.0/16,10.3.0.0/16"]].concat(),
    );
    let want = ruleset(&p);
    assert!(want.contains("istio-proxy-nat") && want.contains("istio-proxy-mangle"));
    // Set elements: the capture's sets are anonymous (bound to their rule), and the kernel
    // refuses to change them, so this kind of tampering cannot happen to a pod's capture.
    let name = Path::new(&p)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &name,
            "nft",
            "delete",
            "element",
            "inet",
            "istio-proxy-nat",
            "__set0",
            "{ 10.1.0.0/16 }",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Operation not supported"));
    assert_eq!(ruleset(&p), want);
    let handle = |chain: &str| -> String {
        let listing = in_pod(
            &p,
            "nft",
            &["-a", "list", "chain", "inet", "istio-proxy-nat", chain],
        );
        let line = listing
            .lines()
            .find(|l| l.contains("# handle") && l.contains("redirect to"))
            .unwrap();
        line.rsplit(' ').next().unwrap().to_string()
    };
    let tampers: [(&str, Tamper); 4] = [
        ("flush the table", |_| {
            words("flush table inet istio-proxy-nat")
        }),
        ("delete the table", |_| {
            words("delete table inet istio-proxy-mangle")
        }),
        ("delete one rule", |h| {
            words(&format!(
                "delete rule inet istio-proxy-nat istio-redirect handle {}",
                h("istio-redirect")
            ))
        }),
        ("add a foreign rule", |_| {
            words("add rule inet istio-proxy-nat istio-output counter accept")
        }),
    ];
    let mut repairs = 0;
    for (what, args) in tampers {
        let args = args(&handle);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        in_pod(&p, "nft", &args);
        eventually(&format!("{what}: repaired"), || ruleset(&p) == want);
        repairs += 1;
        let s = status(&d, &p);
        assert_eq!(s["repairs"], repairs, "{what}: {s}");
        let cause = s["recent_repairs"][repairs - 1]["cause"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            cause.starts_with("notification: changed by another process"),
            "{what}: {cause}"
        );
    }
    // The TPROXY route: the routing notifications tell, and it is repaired at once.
    in_pod(
        &p,
        "ip",
        &[
            "route", "del", "local", "default", "dev", "lo", "table", "133",
        ],
    );
    eventually("the TPROXY route restored", || {
        in_pod(&p, "ip", &["route", "show", "table", "133"]).contains("local default")
    });
    let s = status(&d, &p);
    assert_eq!(s["repairs"], repairs + 1);
    assert!(
        s["recent_repairs"][repairs]["cause"]
            .as_str()
            .unwrap()
            .starts_with("notification: routing changed"),
        "{s}"
    );
    assert_eq!(s["last_error"], Value::Null);
}

#[test]
fn sigkill_and_restart_readopt_and_deleted_namespaces_are_forgotten() {
    if !in_node("sigkill_and_restart_readopt_and_deleted_namespaces_are_forgotten") {
        return;
    }
    let d = Dirs::new();
    let agent = Agent::start(&d, "0.3");
    let (p1, p2, p3) = (pod("p1"), pod("p2"), pod("p3"));
    for p in [&p1, &p2, &p3] {
        add(&d, p, &["-i", "*"]);
    }
    let want = ruleset(&p1);
    assert_eq!(agent.kill("KILL"), None);
    assert_eq!(ruleset(&p1), want, "killing the agent leaves the capture");
    // While it is down: p1 tampered with, p2's namespace deleted.
    in_pod(&p1, "nft", &["flush", "table", "inet", "istio-proxy-nat"]);
    let o = Command::new("ip")
        .args(["netns", "del", "p2"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let _agent = Agent::start(&d, "0.3");
    assert_eq!(
        ruleset(&p1),
        want,
        "re-adopted and repaired before it listens"
    );
    let s = status(&d, &p1);
    assert!(
        s["recent_repairs"][0]["cause"]
            .as_str()
            .unwrap()
            .starts_with("adopt"),
        "{s}"
    );
    assert_eq!(
        status(&d, &p3)["repairs"],
        0,
        "an intact pod is adopted without a repair"
    );
    let (_, list, _) = cli(&d, &["list"]);
    assert_eq!(list, format!("{p1}\n{p3}\n"));
    // A namespace deleted under the running agent: forgotten at the next resync.
    let o = Command::new("ip")
        .args(["netns", "del", "p3"])
        .output()
        .unwrap();
    assert!(o.status.success());
    eventually("p3 forgotten", || cli(&d, &["list"]).1 == format!("{p1}\n"));
    // And SIGTERM stops it, captures in place.
    assert_eq!(_agent.kill("TERM"), Some(0));
    assert_eq!(ruleset(&p1), want);
}

#[test]
fn remove_takes_the_capture_away_for_good() {
    if !in_node("remove_takes_the_capture_away_for_good") {
        return;
    }
    let d = Dirs::new();
    let _agent = Agent::start(&d, "0.2");
    let p = pod("p1");
    add(&d, &p, &["-i", "*"]);
    assert!(ruleset(&p).contains("istio-proxy-nat"));
    let (ok, _, err) = cli(&d, &["remove", "--network-namespace", &p]);
    assert!(ok, "{err}");
    assert_eq!(ruleset(&p), "");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(ruleset(&p), "", "no resync brings it back");
    assert_eq!(cli(&d, &["list"]).1, "");
    // An ambient pod, from a config file; kept, and removed the same way.
    let file = d.root.join("ambient.json");
    std::fs::write(&file, "{}").unwrap();
    let q = pod("q1");
    add(&d, &q, &["--ambient-config", file.to_str().unwrap()]);
    assert!(ruleset(&q).contains("table inet istio-ambient-nat"));
    assert_eq!(status(&d, &q)["kind"], "ambient");
    in_pod(
        &q,
        "nft",
        &["delete", "table", "inet", "istio-ambient-mangle"],
    );
    eventually("the ambient capture repaired", || {
        ruleset(&q).contains("istio-ambient-mangle")
    });
    let (ok, _, err) = cli(&d, &["remove", "--network-namespace", &q]);
    assert!(ok, "{err}");
    assert_eq!(ruleset(&q), "");
}

#[test]
fn concurrent_adds_bad_requests_and_a_refused_peer() {
    if !in_node("concurrent_adds_bad_requests_and_a_refused_peer") {
        return;
    }
    let d = Dirs::new();
    let _agent = Agent::start(&d, "30");
    let pods: Vec<String> = (0..20).map(|i| pod(&format!("c{i}"))).collect();
    let threads: Vec<_> = pods
        .iter()
        .cloned()
        .map(|p| {
            let socket = d.socket();
            std::thread::spawn(move || {
                let req = json!({"command": "add", "network_namespace": p, "capture": {"outbound_cidrs_include": "all"}});
                nftmesh_agent::client::call(&socket, req, Duration::from_secs(30)).unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap()["ok"], true);
    }
    let (_, list, _) = cli(&d, &["list"]);
    assert_eq!(list.lines().count(), 20);
    for p in &pods {
        assert!(ruleset(p).contains("redirect to :15001"), "{p}");
    }

    // Bad requests get an error reply, and the agent keeps serving on the same connection.
    let mut s = UnixStream::connect(d.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    for (line, word) in [
        ("{not json", "bad request"),
        (r#"{"version":7,"command":"list"}"#, "version"),
        (r#"{"version":1,"command":"explode"}"#, "unknown command"),
        (
            r#"{"version":1,"command":"add","network_namespace":"/run/netns/none","capture":{}}"#,
            "none",
        ),
        (
            r#"{"version":1,"command":"check","network_namespace":"/run/netns/none"}"#,
            "not registered",
        ),
    ] {
        writeln!(s, "{line}").unwrap();
        let mut reply = String::new();
        r.read_line(&mut reply).unwrap();
        let v: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["ok"], false, "{line}");
        assert!(v["error"].as_str().unwrap().contains(word), "{line}: {v}");
    }
    writeln!(
        s,
        r#"{{"version":1,"command":"check","network_namespace":"{}"}}"#,
        pods[0]
    )
    .unwrap();
    let mut reply = String::new();
    r.read_line(&mut reply).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&reply).unwrap()["ok"], true);
    // An oversized line: an error, then the connection is closed.
    let big = vec![b'x'; (1 << 20) + 10];
    let _ = s.write_all(&big);
    let mut reply = String::new();
    r.read_line(&mut reply).unwrap();
    assert!(reply.contains("over"), "{reply}");

    // A peer that is not root: the socket (0600) keeps it out; with the mode opened, the
    // credential check does.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let socket = d.socket();
    let denied = std::thread::spawn(move || {
        nftmesh_netlink::probe::become_user(1000, 1000).unwrap();
        UnixStream::connect(&socket).map(drop)
    })
    .join()
    .unwrap();
    assert!(denied.is_err(), "uid 1000 cannot connect to a 0600 socket");
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let socket = d.socket();
    let reply = std::thread::spawn(move || {
        nftmesh_netlink::probe::become_user(1000, 1000).unwrap();
        nftmesh_agent::client::call(&socket, json!({"command": "list"}), Duration::from_secs(5))
    })
    .join()
    .unwrap()
    .unwrap();
    assert_eq!(reply["ok"], false);
    assert!(
        reply["error"].as_str().unwrap().contains("refused"),
        "{reply}"
    );
    // Still serving root.
    assert_eq!(cli(&d, &["list"]).1.lines().count(), 20);
}

#[test]
fn one_transaction_of_changes_is_one_repair_and_metrics_count_it() {
    if !in_node("one_transaction_of_changes_is_one_repair_and_metrics_count_it") {
        return;
    }
    let o = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let d = Dirs::new();
    let _agent = Agent::start_with(&d, "30", &["--metrics-addr", "127.0.0.1:15114"]);
    let p = pod("p1");
    add(&d, &p, &["-i", "*"]);
    let want = ruleset(&p);
    // Three changes in one `nft -f` transaction: one notification burst, one repair.
    let script = d.root.join("tamper.nft");
    std::fs::write(
        &script,
        "flush chain inet istio-proxy-nat istio-redirect\n\
         add rule inet istio-proxy-nat istio-output counter accept\n\
         flush chain inet istio-proxy-nat istio-inbound\n",
    )
    .unwrap();
    let o = Command::new("ip")
        .args(["netns", "exec", "p1", "nft", "-f"])
        .arg(&script)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eventually("repaired", || ruleset(&p) == want);
    // Its own repair commit is not taken for tampering: no second repair follows.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        status(&d, &p)["repairs"],
        1,
        "one repair for one transaction"
    );
    let mut s = std::net::TcpStream::connect("127.0.0.1:15114").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).unwrap();
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    for line in [
        "nftmesh_agent_pods 1\n",
        "nftmesh_agent_applies_total 1\n",
        "nftmesh_agent_repairs_total{cause=\"notification\"} 1\n",
        "nftmesh_agent_apply_seconds_count 1\n",
        "nftmesh_agent_repair_seconds_count 1\n",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}

/// Whether `t` is RFC 3339 UTC with milliseconds: `2026-12-02T10:58:57.123Z`.
fn rfc3339_ms(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// The agent's log so far, once `done` holds for it (at most 5 s).
fn log_when(path: &Path, done: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    eventually("the log line", || {
        text = std::fs::read_to_string(path).unwrap_or_default();
        done(&text)
    });
    text
}

#[test]
fn a_repair_is_one_log_line_with_its_cause_and_a_summary_in_json_or_text() {
    if !in_node("a_repair_is_one_log_line_with_its_cause_and_a_summary_in_json_or_text") {
        return;
    }
    let d = Dirs::new();
    let bad = Command::new(BIN)
        .args([
            "agent",
            "run",
            "--socket",
            "/nonexistent/s",
            "--state-dir",
            "/nonexistent",
        ])
        .args(["--log-format", "xml"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("text or json"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let json_log = d.root.join("agent.json.log");
    let file = std::fs::File::create(&json_log).unwrap();
    let agent = Agent::start_logging(&d, "30", &["--log-format", "json"], file.into());
    let p = pod("p1");
    add(&d, &p, &["-i", "*"]);
    let want = ruleset(&p);
    // Three changes in one transaction: one repair, one line.
    let script = d.root.join("tamper.nft");
    std::fs::write(
        &script,
        "flush chain inet istio-proxy-nat istio-redirect\n\
         add rule inet istio-proxy-nat istio-output counter accept\n\
         flush chain inet istio-proxy-nat istio-inbound\n",
    )
    .unwrap();
    in_pod(&p, "nft", &["-f", script.to_str().unwrap()]);
    eventually("repaired", || ruleset(&p) == want);
    let text = log_when(&json_log, |t| t.contains("\"repaired\""));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for v in &lines {
        assert!(rfc3339_ms(v["time"].as_str().unwrap()), "{v}");
        assert!(v["level"].is_string() && v["msg"].is_string(), "{v}");
    }
    let msgs: Vec<&str> = lines.iter().map(|v| v["msg"].as_str().unwrap()).collect();
    assert_eq!(msgs, ["listening", "added", "repaired"], "{text}");
    let r = &lines[2];
    assert_eq!(
        (&r["level"], &r["pod"], &r["cause"]),
        (&json!("info"), &json!(p), &json!("notification")),
        "{r}"
    );
    assert!(
        r["why"]
            .as_str()
            .unwrap()
            .starts_with("changed by another process: table"),
        "{r}"
    );
    let summary = r["differences"].as_str().unwrap();
    assert!(
        summary.ends_with("rules missing, 1 rule extra"),
        "{summary}"
    );
    // `status` shows RFC 3339 times and the same summary.
    let s = status(&d, &p);
    assert!(rfc3339_ms(s["installed_at"].as_str().unwrap()), "{s}");
    assert!(rfc3339_ms(s["last_check"].as_str().unwrap()), "{s}");
    assert!(
        rfc3339_ms(s["recent_repairs"][0]["at"].as_str().unwrap()),
        "{s}"
    );
    assert_eq!(s["recent_repairs"][0]["summary"], summary, "{s}");

    // Text, with each difference at debug: tampered while the agent is down, repaired on
    // adoption.
    assert_eq!(agent.kill("TERM"), Some(0));
    in_pod(&p, "nft", &["flush", "table", "inet", "istio-proxy-nat"]);
    let text_log = d.root.join("agent.text.log");
    let file = std::fs::File::create(&text_log).unwrap();
    let _agent = Agent::start_logging(&d, "30", &["--log-level", "debug"], file.into());
    let text = log_when(&text_log, |t| t.contains("\tlistening\t"));
    assert_eq!(ruleset(&p), want);
    let mut repaired = 0;
    let mut details = 0;
    for line in text.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(cols.len() == 3 || cols.len() == 4, "{line}");
        assert!(rfc3339_ms(cols[0]), "{line}");
        match (cols[1], cols[2]) {
            ("info", "repaired") => {
                repaired += 1;
                assert!(
                    cols[3].starts_with(&format!(
                        "pod={p} cause=adopt why=\"adopted after a restart\" differences=\""
                    )),
                    "{line}"
                );
                assert!(cols[3].ends_with(" rules missing\""), "{line}");
            }
            ("debug", "repaired a difference") => {
                details += 1;
                assert!(cols[3].contains("rule #"), "{line}");
            }
            _ => {}
        }
    }
    assert_eq!(repaired, 1, "{text}");
    assert!(details >= 2, "{text}");
}
