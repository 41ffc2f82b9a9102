//! The node agent client of `agent_socket` mode, over [`nftmesh_protocol::client`] (which
//! decodes the reply): a pod must not start without capture, so an agent that cannot be
//! reached, that drops the connection before a complete reply or that says it is busy fails
//! the command with code 11 (the runtime tries again); a failed check's differences are code
//! 101, its other refusals 103.

use crate::CniError;
use nftmesh_protocol::{client, CallError, Reply, Request};
use std::path::Path;
use std::time::Duration;

/// How long the agent may take to answer (an ADD waits for the commit).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Send `request` to the agent at `socket`; its reply when it says `ok`.
pub fn call(socket: &Path, request: &Request) -> Result<Reply, CniError> {
    client::call_ok(socket, request, REPLY_TIMEOUT).map_err(cni_error)
}

/// A failed call as the plugin reports it: unreachable, dropped or busy (the transient
/// failures) is [`CniError::TryAgain`] (11), a refusal with differences [`CniError::Drift`]
/// (101), any other refusal or an unreadable reply [`CniError::Agent`] (103).
pub fn cni_error(e: CallError) -> CniError {
    let transient = e.is_transient();
    match e {
        CallError::Refused(f) => {
            let msg = if f.error.is_empty() {
                "no reason given".to_string()
            } else {
                f.error
            };
            if transient {
                CniError::TryAgain(format!("node agent: {msg}"))
            } else if !f.differences.is_empty() {
                CniError::Drift(f.differences)
            } else {
                CniError::Agent(msg)
            }
        }
        no_reply if transient => CniError::TryAgain(no_reply.to_string()),
        other => CniError::Agent(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftmesh_protocol::ClientError;

    fn outcome(r: Result<Reply, ClientError>) -> Result<Reply, CniError> {
        client::decode(r).map_err(cni_error)
    }

    fn code(r: Result<Reply, ClientError>) -> u32 {
        outcome(r).map_or_else(|e| e.code(), |_| 0)
    }

    #[test]
    fn each_outcome_has_its_cni_code() {
        let reply = |line: &str| Ok(Reply::parse(line.as_bytes()).unwrap());
        assert_eq!(code(reply(r#"{"ok":true}"#)), 0);
        assert_eq!(code(Err(ClientError::Unreachable("gone".into()))), 11);
        assert_eq!(code(Err(ClientError::Dropped("closed".into()))), 11);
        assert_eq!(code(Err(ClientError::Protocol("hello".into()))), 103);
        assert_eq!(code(reply(r#"{"ok":false,"kind":"busy","error":"x"}"#)), 11);
        assert_eq!(
            code(reply(r#"{"ok":false,"error":"busy: 256 clients already"}"#)),
            11
        );
        let drift = r#"{"ok":false,"error":"differs","differences":["a","b"]}"#;
        let Err(CniError::Drift(d)) = outcome(reply(drift)) else {
            panic!()
        };
        assert_eq!(d, ["a", "b"]);
        for refusal in [
            r#"{"ok":false,"error":"refused: only root may use the agent"}"#,
            r#"{"ok":false,"kind":"invalid","error":"bad request"}"#,
            r#"{"ok":false,"kind":"failed","error":"EPERM"}"#,
            r#"{"ok":false,"kind":"quota","error":"a newer agent's kind"}"#,
            r#"{"ok":false}"#,
        ] {
            assert_eq!(code(reply(refusal)), 103, "{refusal}");
        }
    }
}
