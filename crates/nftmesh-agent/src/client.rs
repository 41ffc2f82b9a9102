//! A client of the agent's socket: one request line, one reply line.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The longest reply read.
pub const MAX_REPLY: u64 = 16 << 20;

/// Why a call got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The agent could not be reached, or did not answer in time: try again later.
    #[error("{0}")]
    Unreachable(String),
    /// The agent answered something that is not a reply.
    #[error("{0}")]
    Protocol(String),
}

/// Send `request` (its `version` set to [`crate::protocol::PROTOCOL_VERSION`]) and read the
/// reply. A reply with `"ok": false` is returned as it is.
pub fn call(socket: &Path, mut request: Value, timeout: Duration) -> Result<Value, ClientError> {
    use ClientError::{Protocol, Unreachable};
    request["version"] = serde_json::json!(crate::protocol::PROTOCOL_VERSION);
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
            _ => Protocol(format!("no complete reply from the agent at {shown}")),
        });
    }
    let v: Value = serde_json::from_str(&line)
        .map_err(|e| Protocol(format!("unreadable reply from {shown}: {e}")))?;
    if !v.get("ok").is_some_and(Value::is_boolean) {
        return Err(Protocol(format!("reply from {shown} has no \"ok\": {v}")));
    }
    Ok(v)
}
