//! The node agent client of `agent_socket` mode: one JSON request line on the agent's unix
//! socket, one JSON reply line back. A pod must not start without capture, so an agent that
//! cannot be reached fails the command (code 11: the runtime tries again).
//!
//! Request: `{"version": 1, "command": "add"|"check"|"remove", "network_namespace": PATH,
//! "container_id": ID, "capture"|"ambient": CONFIG}`. Reply: `{"ok": true}` or `{"ok": false,
//! "error": TEXT, "differences": [TEXT...]}` (CHECK).

use crate::CniError;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The protocol version sent.
pub const PROTOCOL_VERSION: u32 = 1;
/// The longest reply read.
pub const MAX_REPLY: u64 = 64 * 1024;
/// How long the agent may take to answer (an ADD waits for the commit).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Send `request` (the protocol version added) to the agent at `socket`; its reply when it
/// says `ok`.
pub fn call(socket: &Path, mut request: Value) -> Result<Value, CniError> {
    request["version"] = json!(PROTOCOL_VERSION);
    let shown = socket.display();
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| CniError::TryAgain(format!("node agent at {shown}: {e}")))?;
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(REPLY_TIMEOUT)))
        .map_err(|e| CniError::TryAgain(format!("node agent at {shown}: {e}")))?;
    let mut line = request.to_string();
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| CniError::TryAgain(format!("sending to the node agent at {shown}: {e}")))?;
    let mut reply = String::new();
    BufReader::new(stream.take(MAX_REPLY))
        .read_line(&mut reply)
        .map_err(|e| CniError::TryAgain(format!("reading the node agent at {shown}: {e}")))?;
    if !reply.ends_with('\n') {
        return Err(CniError::Agent(format!(
            "no complete reply line from {shown} (closed, or over {MAX_REPLY} bytes)"
        )));
    }
    let v: Value = serde_json::from_str(&reply)
        .map_err(|e| CniError::Agent(format!("unreadable reply from {shown}: {e}")))?;
    match v.get("ok") {
        Some(Value::Bool(true)) => Ok(v),
        Some(Value::Bool(false)) => {
            let msg = v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
                .to_string();
            let diffs: Vec<String> = v
                .get("differences")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if diffs.is_empty() {
                Err(CniError::Agent(msg))
            } else {
                Err(CniError::Drift(diffs))
            }
        }
        _ => Err(CniError::Agent(format!(
            "reply from {shown} has no \"ok\": {v}"
        ))),
    }
}
