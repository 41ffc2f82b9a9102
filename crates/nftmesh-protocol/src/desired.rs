//! The capture a pod should have, as it travels in requests, replies and the agent's records.

use nftmesh_model::ambient::AmbientConfig;
use nftmesh_model::config::{CaptureConfig, GroupNames};
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

    /// `sidecar` or `ambient`.
    pub fn kind(&self) -> &'static str {
        match self {
            Desired::Capture(_) => "sidecar",
            Desired::Ambient(_) => "ambient",
        }
    }

    /// The capture to install (the `capture` feature: compiled with the capture API).
    #[cfg(feature = "capture")]
    pub fn capture(&self) -> Result<nftmesh::Capture, nftmesh::CaptureError> {
        match self {
            Desired::Capture(c) => nftmesh::Capture::new(c),
            Desired::Ambient(a) => nftmesh::Capture::ambient(a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_of_capture_or_ambient_validated_and_serialized_under_its_key() {
        let d = Desired::from_parts(Some(&json!({"proxy_port": 15001})), None).unwrap();
        assert_eq!(d.kind(), "sidecar");
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["capture"]["proxy_port"], 15001);
        assert_eq!(serde_json::from_value::<Desired>(v).unwrap(), d);
        let a = Desired::from_parts(None, Some(&json!({}))).unwrap();
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
            let e = Desired::from_parts(c.as_ref(), a.as_ref()).unwrap_err();
            assert!(e.contains(word), "{e}");
        }
    }
}
