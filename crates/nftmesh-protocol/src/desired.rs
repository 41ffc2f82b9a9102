//! The capture a pod should have, as it travels in requests, replies and the agent's records.

use nftmesh_model::ambient::AmbientConfig;
use nftmesh_model::config::{CaptureConfig, GroupNames};
use nftmesh_model::linkerd::LinkerdConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The capture a pod should have: `{"capture": CONFIG}` or `{"ambient": CONFIG}` on the wire.
///
/// Compiling it into an installable capture needs the `nftmesh` crate, which this crate does
/// not depend on: the agent and the CNI plugin each have a `capture()` extension for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Istio's sidecar capture (`nftmesh apply --config`'s schema).
    Capture(Box<CaptureConfig>),
    /// Istio ambient's in-pod capture.
    Ambient(Box<AmbientConfig>),
    /// Linkerd's capture (linkerd2-proxy-init's rules).
    Linkerd(Box<LinkerdConfig>),
}

impl Desired {
    /// From the `capture`, `ambient` or `linkerd` value of a request or configuration: exactly
    /// one, validated (owner groups as numeric gids only).
    pub fn from_parts(
        capture: Option<&Value>,
        ambient: Option<&Value>,
        linkerd: Option<&Value>,
    ) -> Result<Self, String> {
        match (capture, ambient, linkerd) {
            (Some(c), None, None) => {
                let mut cfg: CaptureConfig =
                    serde_json::from_value(c.clone()).map_err(|e| format!("capture: {e}"))?;
                cfg.validate().map_err(|e| format!("capture: {e}"))?;
                cfg.resolve_groups(&|_: &str| None, GroupNames::Strict)
                    .map_err(|e| format!("capture: {e}"))?;
                Ok(Desired::Capture(Box::new(cfg)))
            }
            (None, Some(a), None) => {
                let cfg: AmbientConfig =
                    serde_json::from_value(a.clone()).map_err(|e| format!("ambient: {e}"))?;
                cfg.validate().map_err(|e| format!("ambient: {e}"))?;
                Ok(Desired::Ambient(Box::new(cfg)))
            }
            (None, None, Some(l)) => {
                let cfg: LinkerdConfig =
                    serde_json::from_value(l.clone()).map_err(|e| format!("linkerd: {e}"))?;
                cfg.validate().map_err(|e| format!("linkerd: {e}"))?;
                Ok(Desired::Linkerd(Box::new(cfg)))
            }
            (None, None, None) => {
                Err("one of capture (sidecar), ambient or linkerd is required".into())
            }
            _ => {
                Err("capture, ambient and linkerd are exclusive: a pod is captured one way".into())
            }
        }
    }

    /// `sidecar`, `ambient` or `linkerd`.
    pub fn kind(&self) -> &'static str {
        match self {
            Desired::Capture(_) => "sidecar",
            Desired::Ambient(_) => "ambient",
            Desired::Linkerd(_) => "linkerd",
        }
    }

    /// The capture to install (the `capture` feature: compiled with the capture API).
    #[cfg(feature = "capture")]
    pub fn capture(&self) -> Result<nftmesh::Capture, nftmesh::CaptureError> {
        match self {
            Desired::Capture(c) => nftmesh::Capture::new(c),
            Desired::Ambient(a) => nftmesh::Capture::ambient(a),
            Desired::Linkerd(l) => nftmesh::Capture::linkerd(l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_of_capture_or_ambient_validated_and_serialized_under_its_key() {
        let d = Desired::from_parts(Some(&json!({"proxy_port": 15001})), None, None).unwrap();
        assert_eq!(d.kind(), "sidecar");
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["capture"]["proxy_port"], 15001);
        assert_eq!(serde_json::from_value::<Desired>(v).unwrap(), d);
        let a = Desired::from_parts(None, Some(&json!({})), None).unwrap();
        let l = Desired::from_parts(None, None, Some(&json!({"proxy_uid": 2102}))).unwrap();
        assert_eq!(l.kind(), "linkerd");
        assert_eq!(
            serde_json::to_value(&l).unwrap()["linkerd"]["proxy_uid"],
            2102
        );
        assert_eq!(a.kind(), "ambient");
        assert!(serde_json::to_value(&a).unwrap()["ambient"].is_object());
        for (c, a, word) in [
            (None, None, "required"),
            (Some(json!({})), Some(json!({})), "exclusive"),
            (Some(json!({"proxy_port": 0})), None, "capture: "),
            (
                Some(json!({"owner_groups": {"include": ["mesh"]}})),
                None,
                "mesh",
            ),
            (None, Some(json!({"bogus": 1})), "ambient: "),
        ] {
            let e = Desired::from_parts(c.as_ref(), a.as_ref(), None).unwrap_err();
            assert!(e.contains(word), "{e}");
        }
    }
}
