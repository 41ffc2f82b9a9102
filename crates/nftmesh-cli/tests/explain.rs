//! `nftmesh explain`: a described packet through the flags' capture or the live tables, with
//! the trail and the outcome as text and JSON.

mod common;

use common::{netns_or_skip, nftmesh};
use serde_json::Value;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `nftmesh explain ARGS --json`, parsed.
fn explain(args: &[&str]) -> Value {
    let o = nftmesh(&[&["explain"][..], args, &["--json"]].concat());
    assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o.stdout)))
}

fn last_rule(v: &Value) -> String {
    v["trail"]
        .as_array()
        .and_then(|t| t.last())
        .map(|r| r["rule"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

const CAPTURE: [&str; 4] = ["-i", "*", "-b", "*"];

#[test]
fn explain_names_the_rule_that_captures_or_passes_a_packet() {
    let app = explain(&[&CAPTURE[..], &["--uid", "1000", "--dst", "10.1.2.3:8080"]].concat());
    assert_eq!(app["outcome"], "redirect");
    assert_eq!(app["port"], 15001);
    assert_eq!(app["captured"], true);
    assert!(last_rule(&app).contains("redirect to :15001"), "{app}");
    assert_eq!(app["summary"], "captured outbound: redirect to :15001");
    for r in app["trail"].as_array().unwrap() {
        assert_eq!(r["table"], "istio-proxy-nat", "{r}");
        assert!(r["chain"].is_string() && r["index"].is_u64(), "{r}");
    }

    let proxy = explain(&[&CAPTURE[..], &["--uid", "1337", "--dst", "10.1.2.3:8080"]].concat());
    assert_eq!(proxy["outcome"], "accept");
    assert_eq!(proxy["captured"], false);
    assert_eq!(proxy["port"], Value::Null);
    assert!(last_rule(&proxy).contains("skuid 1337"), "{proxy}");
    assert!(
        proxy["summary"]
            .as_str()
            .unwrap()
            .starts_with("not captured: istio-output rule "),
        "{proxy}"
    );

    let inbound = explain(&[&CAPTURE[..], &["--dst", "10.0.0.5:8080", "-m", "TPROXY"]].concat());
    assert_eq!(inbound["outcome"], "tproxy");
    assert_eq!(inbound["port"], 15006);
    assert_eq!(inbound["captured"], true);

    // Excluded inbound port, and a packet that is not a connection's first.
    let excluded = explain(&[&CAPTURE[..], &["-d", "15090", "--dst", "10.0.0.5:15090"]].concat());
    assert_eq!(excluded["captured"], false, "{excluded}");
    let later = explain(
        &[
            &CAPTURE[..],
            &["--dst", "10.0.0.5:8080", "--ct-state", "established"],
        ]
        .concat(),
    );
    assert_eq!(later["captured"], false);
    assert!(later["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["step"] == "nat_skipped"));

    // Text: the chains and rules, then the outcome.
    let o = nftmesh(
        &[
            &["explain"][..],
            &CAPTURE[..],
            &["--uid", "1000", "--dst", "10.1.2.3:8080"],
        ]
        .concat(),
    );
    let out = text(&o.stdout);
    assert!(
        out.starts_with("packet: tcp 192.0.2.1:40000 -> 10.1.2.3:8080 at output uid 1000"),
        "{out}"
    );
    assert!(
        out.contains("chain inet istio-proxy-nat istio-redirect"),
        "{out}"
    );
    assert!(
        out.trim_end()
            .ends_with("outcome: captured outbound: redirect to :15001"),
        "{out}"
    );
}

#[test]
fn bad_packets_are_errors_naming_the_flag() {
    let o = nftmesh(&["explain", "--dst", "10.0.0.5"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let o = nftmesh(&["explain", "--src", "fd00::1", "--dst", "10.0.0.5:80"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("different IP versions"),
        "{}",
        text(&o.stderr)
    );
    let o = nftmesh(&["explain", "--direction", "outbound", "--dst", "10.0.0.5:80"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("--uid"), "{}", text(&o.stderr));
    let o = nftmesh(&["explain", "--mark", "0xzz", "--dst", "10.0.0.5:80"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

#[test]
fn live_tables_explain_like_the_flags_that_installed_them() {
    let Some(ns) = netns_or_skip() else { return };
    let path = ns.path();
    let mode = ["-m", "TPROXY"];
    let o = nftmesh(
        &[
            &["apply"][..],
            &CAPTURE[..],
            &mode[..],
            &["--network-namespace", &path],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let packets: [&[&str]; 4] = [
        &["--uid", "1000", "--dst", "10.1.2.3:8080"],
        &["--uid", "1337", "--dst", "10.1.2.3:8080"],
        &["--dst", "10.0.0.5:8080"],
        &["--dst", "10.0.0.5:15008"],
    ];
    for p in packets {
        // The same namespace decides IPv6 (auto) for the flags, as it did for apply.
        let planned =
            explain(&[&CAPTURE[..], &mode[..], &["--network-namespace", &path], p].concat());
        let live = explain(&[&["--live", "--network-namespace", &path][..], p].concat());
        for key in ["outcome", "port", "captured"] {
            assert_eq!(planned[key], live[key], "{p:?} {key}");
        }
        // The same rules by place; the live text is the kernel's canonical form (a protocol
        // match implied by a port match is not written twice).
        let place = |v: &Value| -> Vec<(Value, Value, Value)> {
            v["trail"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["table"].clone(), r["chain"].clone(), r["index"].clone()))
                .collect()
        };
        assert_eq!(place(&planned), place(&live), "{p:?}");
        assert!(!place(&live).is_empty(), "{p:?}: {live}");
    }
    // An empty namespace captures nothing.
    let Some(empty) = netns_or_skip() else { return };
    let v = explain(&[
        "--live",
        "--network-namespace",
        &empty.path(),
        "--uid",
        "1000",
        "--dst",
        "10.1.2.3:8080",
    ]);
    assert_eq!(v["captured"], false);
    assert_eq!(v["summary"], "not captured: no rule matched");
}

#[test]
fn explain_says_which_direction_it_assumed_and_its_usage_names_no_capture_flag() {
    let dst = ["--dst", "10.1.2.3:8080"];
    let o = nftmesh(&[&["explain"][..], &CAPTURE[..], &dst[..]].concat());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("no --direction or --hook: explaining the packet as inbound"),
        "{err}"
    );
    let o = nftmesh(&[&["explain"][..], &CAPTURE[..], &dst[..], &["--uid", "7"]].concat());
    assert!(
        text(&o.stderr).contains("as outbound"),
        "{}",
        text(&o.stderr)
    );
    // Said, nothing is assumed.
    for way in [&["--direction", "inbound"][..], &["--hook", "output"][..]] {
        let o = nftmesh(&[&["explain"][..], &CAPTURE[..], &dst[..], way].concat());
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(!text(&o.stderr).contains("assum"), "{}", text(&o.stderr));
        assert!(
            !text(&o.stderr).contains("no --direction"),
            "{}",
            text(&o.stderr)
        );
    }
    // A usage error shows the command's shape, not the capture flags that were given as if
    // they were required.
    let o = nftmesh(
        &[
            &["explain"][..],
            &CAPTURE[..],
            &dst[..],
            &["--hook", "output", "--direction", "inbound"],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains("Usage: nftmesh explain [CAPTURE FLAGS | --live]"),
        "{err}"
    );
    assert!(!err.contains("--istio-service-cidr"), "{err}");
}
