use super::*;
use crate::{ErrorKind, Request};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::thread::JoinHandle;

/// A stand-in agent in a fresh directory: accepts one client, reads one line, writes `answer`
/// (as it is: no newline added) and closes; returns the line it read.
fn stand_in(name: &str, answer: &'static [u8]) -> (PathBuf, JoinHandle<String>) {
    let dir = std::env::temp_dir().join(format!("nftmesh-protocol-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let served = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        (&s).write_all(answer).unwrap();
        line
    });
    (socket, served)
}

const T: Duration = Duration::from_secs(5);

#[test]
fn a_typed_request_is_one_line_and_its_reply_is_typed() {
    let (socket, served) = stand_in("typed", b"{\"ok\":true,\"id\":3,\"tables\":2}\n");
    let req = Request::remove(Path::new("/run/netns/p")).with_id(3);
    let reply = call(&socket, &req, T).unwrap();
    assert_eq!(
        (reply.id, reply.tables, reply.is_ok()),
        (Some(3), Some(2), true)
    );
    assert_eq!(served.join().unwrap(), format!("{}\n", req.to_json()));
}

#[test]
fn an_error_reply_is_a_reply() {
    let (socket, served) = stand_in(
        "busy",
        b"{\"ok\":false,\"error\":\"busy: 256 clients already\"}\n",
    );
    let reply = call(&socket, &Request::list(), T).unwrap();
    assert_eq!(reply.failure.unwrap().kind, ErrorKind::Busy);
    served.join().unwrap();
}

#[test]
fn no_agent_is_unreachable() {
    let socket =
        std::env::temp_dir().join(format!("nftmesh-protocol-{}-none.sock", std::process::id()));
    let e = call(&socket, &Request::list(), T).unwrap_err();
    assert!(matches!(e, ClientError::Unreachable(_)), "{e:?}");
}

#[test]
fn a_connection_closed_before_a_complete_reply_is_dropped() {
    for (name, answer) in [("closed", &b""[..]), ("partial", &b"{\"ok\":tr"[..])] {
        let (socket, served) = stand_in(name, answer);
        let e = call(&socket, &Request::list(), T).unwrap_err();
        assert!(matches!(e, ClientError::Dropped(_)), "{name}: {e:?}");
        served.join().unwrap();
    }
}

#[test]
fn what_is_not_a_reply_is_a_protocol_error() {
    for (name, answer) in [
        ("garbage", &b"hello\n"[..]),
        ("no-ok", &b"{\"pods\":[]}\n"[..]),
    ] {
        let (socket, served) = stand_in(name, answer);
        let e = call(&socket, &Request::list(), T).unwrap_err();
        assert!(matches!(e, ClientError::Protocol(_)), "{name}: {e:?}");
        served.join().unwrap();
        let (socket, served) = stand_in(&format!("{name}-value"), answer);
        let e = call_value(&socket, serde_json::json!({"command": "list"}), T).unwrap_err();
        assert!(matches!(e, ClientError::Protocol(_)), "{name}: {e:?}");
        served.join().unwrap();
    }
}

#[test]
fn a_json_request_gets_the_version_and_its_reply_back_as_json() {
    let (socket, served) = stand_in("value", b"{\"ok\":true,\"pods\":[]}\n");
    let v = call_value(&socket, serde_json::json!({"command": "list"}), T).unwrap();
    assert_eq!(v, serde_json::json!({"ok": true, "pods": []}));
    assert_eq!(
        served.join().unwrap(),
        "{\"command\":\"list\",\"version\":1}\n"
    );
}

#[test]
fn call_ok_makes_an_error_reply_an_error_and_keeps_an_ok_one() {
    let (socket, served) = stand_in("ok", b"{\"ok\":true,\"report\":\"installed\"}\n");
    let reply = call_ok(&socket, &Request::list(), T).unwrap();
    assert_eq!(reply.report.as_deref(), Some("installed"));
    served.join().unwrap();
    let (socket, served) = stand_in(
        "refused",
        b"{\"ok\":false,\"kind\":\"failed\",\"error\":\"differs\",\"differences\":[\"a\",\"b\"]}\n",
    );
    let e = call_ok(&socket, &Request::list(), T).unwrap_err();
    assert_eq!(e.to_string(), "differs\n  a\n  b");
    assert!(!e.is_transient(), "{e:?}");
    served.join().unwrap();
}

#[test]
fn unreachable_dropped_and_busy_are_transient_the_rest_is_not() {
    let reply = |line: &str| Ok(Reply::parse(line.as_bytes()).unwrap());
    let transient = |r: Result<Reply, ClientError>| decode(r).unwrap_err().is_transient();
    assert!(transient(Err(ClientError::Unreachable("gone".into()))));
    assert!(transient(Err(ClientError::Dropped("closed".into()))));
    assert!(transient(reply(
        r#"{"ok":false,"kind":"busy","error":"x"}"#
    )));
    assert!(transient(reply(
        r#"{"ok":false,"error":"busy: 256 clients"}"#
    )));
    assert!(!transient(Err(ClientError::Protocol("hello".into()))));
    assert!(!transient(reply(
        r#"{"ok":false,"kind":"invalid","error":"x"}"#
    )));
    assert!(decode(reply(r#"{"ok":true,"tables":2}"#)).is_ok_and(|r| r.tables == Some(2)));
    let e = decode(reply(r#"{"ok":false}"#)).unwrap_err();
    assert_eq!(e.to_string(), "the agent refused");
}
