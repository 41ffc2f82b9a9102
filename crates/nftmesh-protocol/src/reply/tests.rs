use super::*;
use serde_json::json;

/// Every reply shape `crates/nftmesh-agent/src/server.rs` writes (its `json!` objects and
/// `protocol::error`), as it writes them.
fn server_replies() -> Vec<Value> {
    let pod = json!({
        "network_namespace": "/run/netns/p",
        "identity": {"dev": 4, "ino": 4026532913u64},
        "kind": "sidecar",
        "desired": {"capture": {"proxy_port": 15001}},
        "container_id": "c1",
        "installed_at": 1_796_209_137.123_4,
        "last_check": null,
        "repairs": 2,
        "recent_repairs": [
            {"at": 1_796_209_140.5, "cause": "notification: flush", "summary": "1 rule missing"},
            {"at": 1_796_209_141.0, "cause": "resync"},
        ],
        "last_error": null,
    });
    vec![
        json!({"ok": true, "report": "installed 3 tables, 26 rules"}),
        json!({"ok": true, "tables": 3}),
        json!({"ok": true}),
        json!({
            "ok": false,
            "error": "the capture differs from the desired one",
            "differences": ["table inet istio-proxy-nat: missing"],
        }),
        json!({"ok": true, "pods": [pod]}),
        json!({
            "ok": true, "pods": [],
            "unadopted": [{"file": "x.json", "network_namespace": "/run/netns/q", "error": "gone"}],
            "unreadable": [{"file": "y.json", "error": "bad"}],
        }),
        json!({"ok": true, "pods": ["/run/netns/a", "/run/netns/b"]}),
        json!({"ok": false, "error": "/run/netns/p is not registered"}),
        json!({"ok": false, "error": "refused: only root may use the agent"}),
    ]
}

#[test]
fn every_reply_the_server_writes_is_read_and_written_back_as_it_was() {
    for v in server_replies() {
        let line = v.to_string();
        let reply = Reply::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(reply.is_ok(), v["ok"] == true, "{line}");
        assert_eq!(reply.to_value(), v, "{line}");
        assert_eq!(Reply::parse(reply.to_json().as_bytes()), Ok(reply));
    }
}

#[test]
fn replies_are_typed() {
    let r = Reply::from_value(server_replies()[3].clone()).unwrap();
    let f = r.failure.unwrap();
    assert_eq!(f.kind, ErrorKind::Unknown(None));
    assert_eq!(f.differences, ["table inet istio-proxy-nat: missing"]);
    let r = Reply::from_value(server_replies()[4].clone()).unwrap();
    let Some([Pod::Status(s)]) = r.pods.as_deref() else {
        panic!("{r:?}")
    };
    assert_eq!(s.network_namespace, Path::new("/run/netns/p"));
    assert_eq!((s.kind.as_str(), s.repairs), ("sidecar", 2));
    assert_eq!(s.container_id.as_deref(), Some("c1"));
    assert_eq!(s.installed_at, 1_796_209_137.123_4);
    assert_eq!(s.last_check, None);
    assert_eq!(
        s.recent_repairs[0].summary.as_deref(),
        Some("1 rule missing")
    );
    assert_eq!(s.recent_repairs[1].summary, None);
    assert_eq!(s.extra["identity"]["dev"], 4);
    assert!(matches!(s.desired(), Ok(Desired::Capture(c)) if c.proxy_port == 15001));
    let r = Reply::from_value(server_replies()[6].clone()).unwrap();
    let paths: Vec<_> = r
        .pods
        .iter()
        .flatten()
        .map(Pod::network_namespace)
        .collect();
    assert_eq!(
        paths,
        [Path::new("/run/netns/a"), Path::new("/run/netns/b")]
    );
    assert_eq!(
        Reply::from_value(server_replies()[0].clone())
            .unwrap()
            .report
            .as_deref(),
        Some("installed 3 tables, 26 rules")
    );
    assert_eq!(
        Reply::from_value(server_replies()[1].clone())
            .unwrap()
            .tables,
        Some(3)
    );
}

#[test]
fn busy_without_a_kind_is_busy_for_agents_before_kinds() {
    for text in [
        "busy: 256 clients already",
        "busy: the agent's workers are gone",
    ] {
        let line = json!({"ok": false, "error": text}).to_string();
        let f = Reply::parse(line.as_bytes()).unwrap().failure.unwrap();
        assert_eq!(f.kind, ErrorKind::Busy, "{line}");
    }
    // A kind, when there is one, is what counts.
    let line = br#"{"ok":false,"kind":"failed","error":"busy device"}"#;
    assert_eq!(
        Reply::parse(line).unwrap().failure.unwrap().kind,
        ErrorKind::Failed
    );
}

#[test]
fn kinds_are_read_and_unknown_kinds_survive() {
    for (name, kind) in [
        ("busy", ErrorKind::Busy),
        ("invalid", ErrorKind::Invalid),
        ("refused", ErrorKind::Refused),
        ("failed", ErrorKind::Failed),
        ("quota", ErrorKind::Unknown(Some("quota".into()))),
    ] {
        let v = json!({"ok": false, "kind": name, "error": "x", "id": 9});
        let r = Reply::from_value(v.clone()).unwrap();
        assert_eq!(r.id, Some(9));
        assert_eq!(r.failure.as_ref().unwrap().kind, kind);
        assert_eq!(r.to_value(), v);
        assert_eq!(ErrorKind::from_name(kind.name()), kind);
    }
}

#[test]
fn typed_replies_round_trip() {
    let status = PodStatus {
        network_namespace: "/run/netns/p".into(),
        kind: "ambient".into(),
        desired: json!({"ambient": {}}),
        container_id: None,
        installed_at: 12.5,
        last_check: Some(13.25),
        repairs: 1,
        recent_repairs: vec![RecentRepair {
            at: 13.0,
            cause: "resync".into(),
            summary: Some("routing missing".into()),
            extra: Map::new(),
        }],
        last_error: Some("EPERM".into()),
        extra: [("newer".to_string(), json!([1]))].into_iter().collect(),
    };
    let mut busy = Reply::error(ErrorKind::Busy, "busy: try later").with_id(Some(4));
    busy.extra.insert("retry_after".into(), json!(0.5));
    let mut drift = Reply::error(ErrorKind::Failed, "differs");
    if let Some(f) = drift.failure.as_mut() {
        f.differences = vec!["a".into(), "b".into()];
    }
    for reply in [
        Reply::ok(),
        Reply::ok().with_id(Some(u64::MAX)),
        Reply {
            report: Some("installed".into()),
            ..Reply::ok()
        },
        Reply {
            tables: Some(0),
            ..Reply::ok()
        },
        Reply {
            pods: Some(vec![
                Pod::Status(Box::new(status)),
                Pod::Listed("/run/netns/q".into()),
            ]),
            ..Reply::ok()
        },
        busy,
        drift,
        Reply::error(ErrorKind::Invalid, "bad request"),
        Reply::error(ErrorKind::Refused, "no"),
        Reply::error(ErrorKind::Unknown(Some("new".into())), "?"),
        Reply::error(ErrorKind::Unknown(None), "old agent"),
    ] {
        let line = reply.to_json();
        assert!(!line.contains('\n'));
        assert_eq!(Reply::parse(line.as_bytes()), Ok(reply), "{line}");
    }
}

#[test]
fn what_is_not_a_reply_is_refused() {
    for line in [&b"{"[..], b"[]", b"{}", br#"{"ok":"yes"}"#] {
        assert!(
            Reply::parse(line).is_err(),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    assert!(matches!(
        Reply::parse(br#"{"ok":true,"tables":"three"}"#),
        Err(ReplyError::Unreadable(_))
    ));
    assert!(matches!(Reply::parse(b"{}"), Err(ReplyError::NoOk(_))));
    // Beside ok, error keys are kept as they were.
    let v = json!({"ok": true, "error": "stale", "kind": "busy"});
    let r = Reply::from_value(v.clone()).unwrap();
    assert!(r.is_ok());
    assert_eq!(r.to_value(), v);
}
