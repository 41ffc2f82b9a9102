//! The agent's side of its protocol ([`nftmesh_protocol`], re-exported here): requests read
//! with [`parse`], replies written as JSON (see the protocol crate's docs for the wire format).
//!
//! Compiling a [`nftmesh_protocol::Desired`] needs the `nftmesh` crate, which the protocol
//! crate does not depend on: [`DesiredExt::capture`] adds it here. Until the server calls it
//! through that trait, this module keeps the agent's own [`Desired`] and [`Command`] (the
//! same data and serde shape, converted from the protocol's by [`parse`]) whose inherent
//! `capture()` the server calls; they go once the server imports the protocol's types and
//! `DesiredExt`.

use nftmesh_model::ambient::AmbientConfig;
use nftmesh_model::config::CaptureConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;

pub use nftmesh_protocol::{
    parse_with_id, ErrorKind, Failure, Pod, PodStatus, RecentRepair, Reply, ReplyError, Request,
    RequestId, Verb, MAX_REQUEST, PROTOCOL_VERSION,
};

/// The capture compiled from a desired one, for the protocol's [`nftmesh_protocol::Desired`].
pub trait DesiredExt {
    /// The capture to install.
    fn capture(&self) -> Result<nftmesh::Capture, nftmesh::CaptureError>;
}

impl DesiredExt for nftmesh_protocol::Desired {
    fn capture(&self) -> Result<nftmesh::Capture, nftmesh::CaptureError> {
        match self {
            nftmesh_protocol::Desired::Capture(c) => nftmesh::Capture::new(c),
            nftmesh_protocol::Desired::Ambient(a) => nftmesh::Capture::ambient(a),
        }
    }
}

/// The capture a pod should have, as it travels in requests and in the state file: the
/// protocol's [`nftmesh_protocol::Desired`] (same variants, same serde shape), kept as the
/// agent's own type so that it has an inherent `capture()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Istio's sidecar capture (`nftmesh apply --config`'s schema).
    Capture(Box<CaptureConfig>),
    /// Istio ambient's in-pod capture.
    Ambient(Box<AmbientConfig>),
}

impl From<nftmesh_protocol::Desired> for Desired {
    fn from(d: nftmesh_protocol::Desired) -> Self {
        match d {
            nftmesh_protocol::Desired::Capture(c) => Desired::Capture(c),
            nftmesh_protocol::Desired::Ambient(a) => Desired::Ambient(a),
        }
    }
}

impl From<Desired> for nftmesh_protocol::Desired {
    fn from(d: Desired) -> Self {
        match d {
            Desired::Capture(c) => nftmesh_protocol::Desired::Capture(c),
            Desired::Ambient(a) => nftmesh_protocol::Desired::Ambient(a),
        }
    }
}

impl Desired {
    /// From the `capture` or `ambient` value of a request or configuration: exactly one,
    /// validated ([`nftmesh_protocol::Desired::from_parts`]).
    pub fn from_parts(capture: Option<&Value>, ambient: Option<&Value>) -> Result<Self, String> {
        nftmesh_protocol::Desired::from_parts(capture, ambient).map(Desired::from)
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

/// What a request asks, checked: the protocol's [`nftmesh_protocol::Command`] with the
/// agent's [`Desired`].
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

impl From<nftmesh_protocol::Command> for Command {
    fn from(c: nftmesh_protocol::Command) -> Self {
        use nftmesh_protocol::Command as P;
        match c {
            P::Add {
                netns,
                desired,
                container_id,
            } => Command::Add {
                netns,
                desired: desired.into(),
                container_id,
            },
            P::Remove(n) => Command::Remove(n),
            P::Check(n) => Command::Check(n),
            P::Status(n) => Command::Status(n),
            P::List => Command::List,
        }
    }
}

/// Parse one request line ([`nftmesh_protocol::parse`]).
pub fn parse(line: &[u8]) -> Result<Command, String> {
    nftmesh_protocol::parse(line).map(Command::from)
}

/// An error reply, as agents before error kinds wrote it: `{"ok": false, "error": TEXT}`
/// (clients read a text starting with "busy" as [`ErrorKind::Busy`]).
pub fn error(text: &str) -> Value {
    Reply::error(ErrorKind::Unknown(None), text).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_are_read_into_the_agents_command() {
        let add =
            br#"{"version":1,"command":"add","network_namespace":"/run/netns/p","ambient":{}}"#;
        let Ok(Command::Add { desired, netns, .. }) = parse(add) else {
            panic!()
        };
        assert_eq!((desired.kind(), netns), ("ambient", "/run/netns/p".into()));
        assert!(desired.capture().is_ok());
        assert_eq!(
            parse(br#"{"version":1,"command":"check","network_namespace":"/p"}"#),
            Ok(Command::Check("/p".into()))
        );
        let e = parse(br#"{"version":1,"command":"nuke"}"#).unwrap_err();
        assert!(e.contains("unknown command"), "{e}");
    }

    #[test]
    fn the_agents_desired_is_the_protocols_on_the_wire_and_compiles_alike() {
        for v in [
            json!({"capture": {"proxy_port": 15001}}),
            json!({"ambient": {}}),
        ] {
            let ours: Desired = serde_json::from_value(v.clone()).unwrap();
            let theirs: nftmesh_protocol::Desired = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(
                serde_json::to_value(&ours).unwrap(),
                serde_json::to_value(&theirs).unwrap()
            );
            assert_eq!(nftmesh_protocol::Desired::from(ours.clone()), theirs);
            assert_eq!(Desired::from(theirs.clone()), ours);
            assert_eq!(ours.kind(), theirs.kind());
            let (a, b) = (ours.capture().unwrap(), theirs.capture().unwrap());
            assert_eq!(a.render(), b.render());
        }
    }

    #[test]
    fn error_replies_are_written_as_before_kinds() {
        assert_eq!(error("no"), json!({"ok": false, "error": "no"}));
    }
}
