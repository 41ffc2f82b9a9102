//! The agent's side of its protocol: the types of [`nftmesh_protocol`] (re-exported here),
//! requests read with [`parse_with_id`], replies written as [`Reply`]s with an error
//! [`ErrorKind`] and the request's `id` echoed; [`Desired::capture`] compiles a capture (the
//! protocol crate's `capture` feature).

pub use nftmesh_protocol::{
    parse, parse_with_id, Command, Desired, ErrorKind, Failure, Pod, PodStatus, RecentRepair,
    Reply, ReplyError, Request, RequestId, Verb, MAX_REQUEST, PROTOCOL_VERSION,
};

/// An error reply of `kind` saying `text`, as JSON.
pub fn error(kind: ErrorKind, text: &str) -> serde_json::Value {
    Reply::error(kind, text).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_are_read_and_their_captures_compile() {
        let add =
            br#"{"version":1,"command":"add","network_namespace":"/run/netns/p","ambient":{}}"#;
        let Ok(Command::Add { desired, netns, .. }) = parse(add) else {
            panic!()
        };
        assert_eq!((desired.kind(), netns), ("ambient", "/run/netns/p".into()));
        assert!(desired.capture().is_ok());
        let e = parse(br#"{"version":1,"command":"nuke"}"#).unwrap_err();
        assert!(e.contains("unknown command"), "{e}");
    }

    #[test]
    fn error_replies_carry_their_kind() {
        assert_eq!(
            error(ErrorKind::Busy, "busy: full"),
            json!({"ok": false, "error": "busy: full", "kind": "busy"})
        );
    }
}
