//! The node agent client of `agent_socket` mode, over [`nftmesh_agent::client`]: a pod must
//! not start without capture, so an agent that cannot be reached fails the command (code 11:
//! the runtime tries again); its refusals are code 103, a failed check's differences 101.

use crate::CniError;
use nftmesh_agent::client::{self, ClientError};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// How long the agent may take to answer (an ADD waits for the commit).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Send `request` to the agent at `socket`; its reply when it says `ok`.
pub fn call(socket: &Path, request: Value) -> Result<Value, CniError> {
    let v = client::call(socket, request, REPLY_TIMEOUT).map_err(|e| match e {
        ClientError::Unreachable(m) => CniError::TryAgain(m),
        ClientError::Protocol(m) => CniError::Agent(m),
    })?;
    if v["ok"] == Value::Bool(true) {
        return Ok(v);
    }
    let msg = v["error"].as_str().unwrap_or("no reason given").to_string();
    let diffs: Vec<String> = v["differences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Err(if diffs.is_empty() {
        CniError::Agent(msg)
    } else {
        CniError::Drift(diffs)
    })
}
