//! The node agent client of `agent_socket` mode, over [`nftmesh_protocol`]: a pod must not
//! start without capture, so an agent that cannot be reached, that drops the connection
//! before a complete reply or that says it is busy fails the command with code 11 (the
//! runtime tries again); a failed check's differences are code 101, its other refusals 103.

use crate::CniError;
use nftmesh_protocol::{client, ClientError, ErrorKind, Reply, Request};
use std::path::Path;
use std::time::Duration;

/// How long the agent may take to answer (an ADD waits for the commit).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Send `request` to the agent at `socket`; its reply when it says `ok`.
pub fn call(socket: &Path, request: &Request) -> Result<Reply, CniError> {
    outcome(client::call(socket, request, REPLY_TIMEOUT))
}

/// A call's outcome as the plugin reports it: unreachable, dropped or busy is
/// [`CniError::TryAgain`] (11), a refusal with differences [`CniError::Drift`] (101), any
/// other refusal or an unreadable reply [`CniError::Agent`] (103).
pub fn outcome(result: Result<Reply, ClientError>) -> Result<Reply, CniError> {
    let reply = result.map_err(|e| match e {
        ClientError::Unreachable(m) | ClientError::Dropped(m) => CniError::TryAgain(m),
        other => CniError::Agent(other.to_string()),
    })?;
    let Some(f) = &reply.failure else {
        return Ok(reply);
    };
    let msg = if f.error.is_empty() {
        "no reason given".to_string()
    } else {
        f.error.clone()
    };
    Err(match &f.kind {
        ErrorKind::Busy => CniError::TryAgain(format!("node agent: {msg}")),
        _ if !f.differences.is_empty() => CniError::Drift(f.differences.clone()),
        _ => CniError::Agent(msg),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
