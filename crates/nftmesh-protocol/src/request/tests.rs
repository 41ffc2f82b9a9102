use super::*;
use nftmesh_model::config::CaptureConfig;
use serde_json::json;

fn sidecar() -> Desired {
    Desired::Capture(Box::new(CaptureConfig::sidecar()))
}

#[test]
fn requests_are_read_or_refused_naming_what_is_wrong() {
    let add = br#"{"version":1,"command":"add","network_namespace":"/run/netns/p","capture":{}}"#;
    assert!(matches!(parse(add), Ok(Command::Add { .. })));
    let amb = br#"{"version":1,"command":"add","network_namespace":"/run/netns/p","ambient":{}}"#;
    let Ok(Command::Add { desired, .. }) = parse(amb) else {
        panic!()
    };
    assert_eq!(desired.kind(), "ambient");
    assert_eq!(
        parse(br#"{"version":1,"command":"list"}"#),
        Ok(Command::List)
    );
    // A check may carry the capture the plugin decided: the agent does not read it.
    assert_eq!(
        parse(br#"{"version":1,"command":"check","network_namespace":"/p","capture":{"proxy_port":0}}"#),
        Ok(Command::Check("/p".into()))
    );
    for (bad, word) in [
        (&b"{"[..], "bad request"),
        (br#"{"version":2,"command":"list"}"#, "version"),
        (br#"{"version":1,"command":"nuke"}"#, "unknown command"),
        (br#"{"version":1,"command":"remove"}"#, "network_namespace"),
        (
            br#"{"version":1,"command":"remove","network_namespace":"rel"}"#,
            "absolute",
        ),
        (
            br#"{"version":1,"command":"add","network_namespace":"/p"}"#,
            "required",
        ),
        (
            br#"{"version":1,"command":"add","network_namespace":"/p","capture":{"proxy_port":0}}"#,
            "proxy_port",
        ),
        (
            br#"{"version":1,"command":"add","capture":{"proxy_port":0}}"#,
            "network_namespace",
        ),
        (
            br#"{"version":1,"command":"list","id":"seven"}"#,
            "bad request",
        ),
    ] {
        let e = parse(bad).unwrap_err();
        assert!(e.contains(word), "{e}");
    }
    assert!(parse(&vec![b' '; MAX_REQUEST + 1])
        .unwrap_err()
        .contains("more than"));
}

/// The lines the CLI and the CNI plugin wrote by hand before the protocol was typed (a
/// `json!` object, `version` set by the client; serde_json's maps keep keys sorted).
#[test]
fn each_constructor_writes_the_line_clients_wrote_by_hand() {
    let netns = Path::new("/run/netns/p");
    let mut by_hand = json!({"command": "add", "network_namespace": netns, "container_id": "c1"});
    by_hand["capture"] = serde_json::to_value(CaptureConfig::sidecar()).unwrap();
    by_hand["version"] = json!(1);
    let add = Request::add(netns, sidecar()).with_container_id(Some("c1".into()));
    assert_eq!(add.to_json(), by_hand.to_string());
    assert!(
        add.to_json().starts_with(r#"{"capture":{"#),
        "{}",
        add.to_json()
    );
    for (req, line) in [
        (Request::list(), r#"{"command":"list","version":1}"#),
        (
            Request::remove(netns),
            r#"{"command":"remove","network_namespace":"/run/netns/p","version":1}"#,
        ),
        (
            Request::check(netns).with_id(7),
            r#"{"command":"check","id":7,"network_namespace":"/run/netns/p","version":1}"#,
        ),
        (Request::status(None), r#"{"command":"status","version":1}"#),
        (
            Request::status(Some(netns)),
            r#"{"command":"status","network_namespace":"/run/netns/p","version":1}"#,
        ),
    ] {
        assert_eq!(req.to_json(), line);
    }
}

#[test]
fn requests_round_trip_and_parse_into_the_command_they_were_built_for() {
    let netns = Path::new("/run/netns/p");
    let ambient = Desired::from_parts(None, Some(&json!({})), None).unwrap();
    let cases = [
        (
            Request::add(netns, sidecar()).with_container_id(Some("c".into())),
            Command::Add {
                netns: netns.into(),
                desired: sidecar(),
                container_id: Some("c".into()),
                cgroup: None,
            },
        ),
        (
            Request::add(netns, ambient.clone()).with_id(u64::MAX),
            Command::Add {
                netns: netns.into(),
                desired: ambient,
                container_id: None,
                cgroup: None,
            },
        ),
        (
            Request::add(netns, sidecar()).with_cgroup(Some("/sys/fs/cgroup/pod".into())),
            Command::Add {
                netns: netns.into(),
                desired: sidecar(),
                container_id: None,
                cgroup: Some("/sys/fs/cgroup/pod".into()),
            },
        ),
        (
            Request::remove(netns).with_id(1),
            Command::Remove(netns.into()),
        ),
        (
            Request::check(netns).with_desired(sidecar()),
            Command::Check(netns.into()),
        ),
        (Request::status(None), Command::Status(None)),
        (
            Request::status(Some(netns)).with_id(0),
            Command::Status(Some(netns.into())),
        ),
        (Request::list().with_id(3), Command::List),
    ];
    for (req, command) in cases {
        let line = req.to_json();
        assert_eq!(Request::parse(line.as_bytes()), Ok(req.clone()), "{line}");
        assert_eq!(
            parse_with_id(line.as_bytes()),
            (req.id, Ok(command)),
            "{line}"
        );
    }
}

#[test]
fn the_id_comes_back_also_from_a_refused_request() {
    assert_eq!(
        parse_with_id(br#"{"version":1,"command":"nuke","id":5}"#).0,
        Some(5)
    );
    assert_eq!(
        parse_with_id(br#"{"version":2,"command":"list","id":6}"#).0,
        Some(6)
    );
    assert_eq!(parse_with_id(br#"{"command":"list","id":8}"#).0, Some(8));
    assert_eq!(parse_with_id(br#"{"version":1,"command":"list"}"#).0, None);
    assert_eq!(parse_with_id(b"{").0, None);
}

#[test]
fn verbs_are_named_as_on_the_wire() {
    let names: Vec<_> = Verb::ALL.iter().map(|v| v.as_str()).collect();
    assert_eq!(names, ["add", "remove", "check", "status", "list"]);
    for v in Verb::ALL {
        assert_eq!(Verb::from_name(v.as_str()), Some(v));
    }
    assert_eq!(Verb::from_name("nuke"), None);
}

#[test]
fn a_cgroup_must_be_absolute_and_go_with_a_sidecar_capture() {
    let e = parse(
        br#"{"version":1,"command":"add","network_namespace":"/run/netns/p","capture":{},"cgroup":"pod"}"#,
    )
    .unwrap_err();
    assert!(e.contains("cgroup pod is not an absolute path"), "{e}");
    let e = parse(
        br#"{"version":1,"command":"add","network_namespace":"/run/netns/p","ambient":{},"cgroup":"/sys/fs/cgroup/p"}"#,
    )
    .unwrap_err();
    assert!(e.contains("not ambient"), "{e}");
    let Ok(Command::Add { cgroup, .. }) = parse(
        br#"{"version":1,"command":"add","network_namespace":"/run/netns/p","capture":{},"cgroup":"/sys/fs/cgroup/p"}"#,
    ) else {
        panic!("a sidecar add with a cgroup")
    };
    assert_eq!(cgroup, Some("/sys/fs/cgroup/p".into()));
}
