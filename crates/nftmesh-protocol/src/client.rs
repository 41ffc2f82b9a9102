//! A client of the agent's socket: one request line, one reply line. [`call`] returns the
//! reply as it came; [`call_ok`] (through [`decode`]) makes an error reply an error, and
//! [`CallError::is_transient`] says which failures are worth trying again.

use crate::reply::{ErrorKind, Failure, Reply};
use crate::request::Request;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The longest reply read.
pub const MAX_REPLY: u64 = 16 << 20;

/// Why a call got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The agent could not be reached, or did not answer in time: try again later.
    #[error("{0}")]
    Unreachable(String),
    /// The agent closed the connection before a complete reply (it stopped, or dropped the
    /// client): try again later.
    #[error("{0}")]
    Dropped(String),
    /// The agent answered something that is not a reply.
    #[error("{0}")]
    Protocol(String),
}

/// Send `request` and read its reply. A reply with `"ok": false` is returned as it is.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Reply, ClientError> {
    let line = exchange(socket, &request.to_json(), timeout)?;
    Reply::parse(line.as_bytes())
        .map_err(|e| ClientError::Protocol(format!("from the agent at {}: {e}", socket.display())))
}

/// Why a call did not end in an `"ok": true` reply.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No reply came, or what came was not a reply.
    #[error(transparent)]
    NoReply(#[from] ClientError),
    /// The agent answered `"ok": false`: its error text, then its differences, one a line.
    #[error(transparent)]
    Refused(#[from] Failure),
}

impl CallError {
    /// Whether the same request may succeed later: the agent could not be reached, dropped
    /// the connection before a complete reply, or said it is busy.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::NoReply(e) => {
                matches!(e, ClientError::Unreachable(_) | ClientError::Dropped(_))
            }
            CallError::Refused(f) => f.kind == ErrorKind::Busy,
        }
    }
}

/// A call's result with an error reply made an error: the reply when it says `"ok": true`.
pub fn decode(result: Result<Reply, ClientError>) -> Result<Reply, CallError> {
    Ok(result?.into_result()?)
}

/// [`call`], and [`decode`] its reply: for clients that only go on when the agent did it.
pub fn call_ok(socket: &Path, request: &Request, timeout: Duration) -> Result<Reply, CallError> {
    decode(call(socket, request, timeout))
}

/// Send a request given as JSON (its `version` set to [`crate::PROTOCOL_VERSION`]) and read
/// the reply as JSON, which must have a boolean `ok`: for tests and tools that send what
/// [`Request`] cannot (malformed requests) or read replies untyped.
pub fn call_value(
    socket: &Path,
    mut request: Value,
    timeout: Duration,
) -> Result<Value, ClientError> {
    if let Some(m) = request.as_object_mut() {
        m.insert("version".into(), crate::PROTOCOL_VERSION.into());
    }
    let line = exchange(socket, &request.to_string(), timeout)?;
    let shown = socket.display();
    let v: Value = serde_json::from_str(&line)
        .map_err(|e| ClientError::Protocol(format!("unreadable reply from {shown}: {e}")))?;
    if !v.get("ok").is_some_and(Value::is_boolean) {
        return Err(ClientError::Protocol(format!(
            "reply from {shown} has no \"ok\": {v}"
        )));
    }
    Ok(v)
}

/// Write `request` and a newline, read one complete reply line.
fn exchange(socket: &Path, request: &str, timeout: Duration) -> Result<String, ClientError> {
    use ClientError::{Dropped, Unreachable};
    let shown = socket.display();
    let mut s =
        UnixStream::connect(socket).map_err(|e| Unreachable(format!("agent at {shown}: {e}")))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| Unreachable(format!("agent at {shown}: {e}")))?;
    // An agent that refuses the peer answers and closes before reading: a failed send may
    // still have a reply waiting.
    let sent = s.write_all(format!("{request}\n").as_bytes());
    let mut line = String::new();
    let read = BufReader::new(s.take(MAX_REPLY)).read_line(&mut line);
    if !line.ends_with('\n') {
        return Err(match (sent, read) {
            (Err(e), _) => Unreachable(format!("sending to the agent at {shown}: {e}")),
            (_, Err(e)) => Unreachable(format!("reading the agent at {shown}: {e}")),
            _ => Dropped(format!(
                "the agent at {shown} closed the connection without a complete reply"
            )),
        });
    }
    Ok(line)
}

#[cfg(test)]
mod tests;
