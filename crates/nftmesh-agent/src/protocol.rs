//! The agent's protocol: one JSON request per line on its unix socket, one JSON reply line
//! back, versioned ([`PROTOCOL_VERSION`]). Shared by `nftmesh agent` and the CNI plugin's
//! `agent_socket` mode.
//!
//! Requests: `{"version": 1, "command": "add", "network_namespace": PATH, "capture": CONFIG}`
//! (or `"ambient": CONFIG`; `"container_id"` optional), `"remove"`, `"check"` and `"status"`
//! with `network_namespace` (optional for `status`), `"list"`. Replies: `{"ok": true, ...}` or
//! `{"ok": false, "error": TEXT}` (`"differences": [TEXT, ...]` for a failed `check`).
//!
//! `status` replies `{"ok": true, "pods": [POD, ...]}`, each `POD` with `network_namespace`,
//! `kind`, `desired`, `container_id`, `installed_at`, `last_check`, `repairs` (a count),
//! `recent_repairs` (`[{"at", "cause", "summary"}, ...]`, the last 16) and `last_error`. The
//! times are seconds since the epoch (JSON numbers, as in version 1 from the start; a client
//! shows them as it likes: `nftmesh agent status` prints RFC 3339 with [`nftmesh::log`]).
//! `summary` (the repair's differences counted) was added within version 1: clients ignore
//! keys they do not know.

use nftmesh_model::ambient::AmbientConfig;
use nftmesh_model::config::{CaptureConfig, GroupNames};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;

/// The protocol version this agent speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The longest request line accepted.
pub const MAX_REQUEST: usize = 1 << 20;

/// The capture a pod should have, as it travels in requests and in the state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Istio's sidecar capture (`nftmesh apply --config`'s schema).
    Capture(Box<CaptureConfig>),
    /// Istio ambient's in-pod capture.
    Ambient(Box<AmbientConfig>),
}

impl Desired {
    /// From the `capture` or `ambient` value of a request or configuration: exactly one,
    /// validated (owner groups as numeric gids only).
    pub fn from_parts(capture: Option<&Value>, ambient: Option<&Value>) -> Result<Self, String> {
        match (capture, ambient) {
            (Some(c), None) => {
                let mut cfg: CaptureConfig =
                    serde_json::from_value(c.clone()).map_err(|e| format!("capture: {e}"))?;
                cfg.validate().map_err(|e| format!("capture: {e}"))?;
                cfg.resolve_groups(&|_: &str| None, GroupNames::Strict)
                    .map_err(|e| format!("capture: {e}"))?;
                Ok(Desired::Capture(Box::new(cfg)))
            }
            (None, Some(a)) => {
                let cfg: AmbientConfig =
                    serde_json::from_value(a.clone()).map_err(|e| format!("ambient: {e}"))?;
                cfg.validate().map_err(|e| format!("ambient: {e}"))?;
                Ok(Desired::Ambient(Box::new(cfg)))
            }
            (Some(_), Some(_)) => {
                Err("capture and ambient are exclusive: a pod is captured one way".into())
            }
            (None, None) => Err("one of capture (sidecar) or ambient is required".into()),
        }
    }

    /// The capture to install.
    pub fn capture(&self) -> Result<nftmesh::Capture, nftmesh::CaptureError> {
        match self {
            Desired::Capture(c) => nftmesh::Capture::new(c),
            Desired::Ambient(a) => nftmesh::Capture::ambient(a),
        }
    }

    /// `sidecar` or `ambient`.
    pub fn kind(&self) -> &'static str {
        match self {
            Desired::Capture(_) => "sidecar",
            Desired::Ambient(_) => "ambient",
        }
    }
}

/// A request, as read from one line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Request {
    /// The protocol version the client speaks.
    pub version: u32,
    /// `add`, `remove`, `check`, `status` or `list`.
    pub command: String,
    /// The pod's network namespace.
    #[serde(default)]
    pub network_namespace: Option<PathBuf>,
    /// The sidecar capture (`add`).
    #[serde(default)]
    pub capture: Option<Value>,
    /// The ambient capture (`add`).
    #[serde(default)]
    pub ambient: Option<Value>,
    /// The runtime's container id (the CNI plugin sends it; kept in status).
    #[serde(default)]
    pub container_id: Option<String>,
}

/// What a request asks, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Register the pod and install its capture; returns once committed.
    Add {
        /// The namespace.
        netns: PathBuf,
        /// The capture.
        desired: Desired,
        /// The runtime's container id.
        container_id: Option<String>,
    },
    /// Remove the pod's capture and forget it.
    Remove(PathBuf),
    /// Compare the pod's live capture with the desired one.
    Check(PathBuf),
    /// The state of one pod, or of all.
    Status(Option<PathBuf>),
    /// The registered namespaces.
    List,
}

/// Parse one request line.
pub fn parse(line: &[u8]) -> Result<Command, String> {
    if line.len() > MAX_REQUEST {
        return Err(format!(
            "request of {} bytes, more than {MAX_REQUEST}",
            line.len()
        ));
    }
    let req: Request = serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))?;
    if req.version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} is not {PROTOCOL_VERSION}",
            req.version
        ));
    }
    let netns = || {
        req.network_namespace
            .clone()
            .filter(|p| p.is_absolute())
            .ok_or_else(|| {
                format!(
                    "{}: network_namespace (an absolute path) is required",
                    req.command
                )
            })
    };
    match req.command.as_str() {
        "add" => Ok(Command::Add {
            netns: netns()?,
            desired: Desired::from_parts(req.capture.as_ref(), req.ambient.as_ref())?,
            container_id: req.container_id.clone(),
        }),
        "remove" => Ok(Command::Remove(netns()?)),
        "check" => Ok(Command::Check(netns()?)),
        "status" => Ok(Command::Status(req.network_namespace.clone())),
        "list" => Ok(Command::List),
        other => Err(format!(
            "unknown command {other:?}: add, remove, check, status or list"
        )),
    }
}

/// An error reply.
pub fn error(text: &str) -> Value {
    serde_json::json!({ "ok": false, "error": text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_or_refused_naming_what_is_wrong() {
        let add =
            br#"{"version":1,"command":"add","network_namespace":"/run/netns/p","capture":{}}"#;
        assert!(matches!(parse(add), Ok(Command::Add { .. })));
        let amb =
            br#"{"version":1,"command":"add","network_namespace":"/run/netns/p","ambient":{}}"#;
        let Ok(Command::Add { desired, .. }) = parse(amb) else {
            panic!()
        };
        assert_eq!(desired.kind(), "ambient");
        assert_eq!(
            parse(br#"{"version":1,"command":"list"}"#),
            Ok(Command::List)
        );
        for (bad, word) in [
            (&b"{"[..], "bad request"),
            (br#"{"version":2,"command":"list"}"#, "version"),
            (br#"{"version":1,"command":"nuke"}"#, "unknown command"),
            (br#"{"version":1,"command":"remove"}"#, "network_namespace"),
            (br#"{"version":1,"command":"remove","network_namespace":"rel"}"#, "absolute"),
            (br#"{"version":1,"command":"add","network_namespace":"/p"}"#, "required"),
            (br#"{"version":1,"command":"add","network_namespace":"/p","capture":{"proxy_port":0}}"#, "proxy_port"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(word), "{e}");
        }
        assert!(parse(&vec![b' '; MAX_REQUEST + 1])
            .unwrap_err()
            .contains("more than"));
    }
}
