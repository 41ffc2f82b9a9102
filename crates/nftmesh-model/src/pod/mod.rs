//! Per-pod decisions from the pod's own annotations: whether a pod is captured at all, and with
//! which settings. The container runtime passes the annotations to a CNI plugin that asks for
//! them (`io.kubernetes.cri.pod-annotations`), so no API server is on the path.
//!
//! ```
//! use std::collections::BTreeMap;
//! use nftmesh_model::pod::{istio_sidecar, PodDecision, SkipReason};
//! use nftmesh_model::CaptureConfig;
//!
//! let mut annotations = BTreeMap::new();
//! // No sidecar: not captured.
//! let d = istio_sidecar(&annotations, &CaptureConfig::default()).unwrap();
//! assert_eq!(d, PodDecision::Skip(SkipReason::NoSidecarStatus));
//! // Injected with the sidecar as a native sidecar and istio-validation (the CNI shape).
//! annotations.insert(
//!     "sidecar.istio.io/status".to_string(),
//!     r#"{"initContainers":["istio-validation","istio-proxy"],"containers":null}"#.to_string(),
//! );
//! annotations.insert(
//!     "traffic.sidecar.istio.io/excludeOutboundPorts".to_string(),
//!     "5432".to_string(),
//! );
//! let PodDecision::Capture(cfg) = istio_sidecar(&annotations, &CaptureConfig::default()).unwrap()
//! else { panic!() };
//! assert_eq!(cfg.outbound_ports_exclude, vec![5432]);
//! ```

mod istio;
mod linkerd;

pub use istio::{istio_sidecar, keys};
pub use linkerd::{linkerd, linkerd_keys};

use crate::CaptureConfig;
use std::fmt;
use thiserror::Error;

/// What to do with one pod (`C`: the mesh's capture settings, Istio's by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodDecision<C = CaptureConfig> {
    /// Capture its traffic with these settings.
    Capture(Box<C>),
    /// Leave it alone, for this reason.
    Skip(SkipReason),
}

/// Why a pod is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// It has no `sidecar.istio.io/status` annotation: no sidecar was injected.
    NoSidecarStatus,
    /// Its injection status lists no `istio-proxy` container.
    NoIstioProxy {
        /// The containers and init containers the status lists.
        listed: Vec<String>,
    },
    /// Its injection status lists the `istio-init` init container, which installs the capture
    /// itself.
    IstioInit,
    /// `sidecar.istio.io/inject` says false.
    InjectDisabled {
        /// The annotation's value.
        value: String,
    },
    /// It has no `linkerd.io/proxy-version` annotation: Linkerd's injector added no proxy.
    NoLinkerdProxy,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NoSidecarStatus => {
                write!(f, "no {} annotation (no sidecar injected)", keys::STATUS)
            }
            SkipReason::NoIstioProxy { listed } => write!(
                f,
                "{} lists no istio-proxy container (lists {listed:?})",
                keys::STATUS
            ),
            SkipReason::IstioInit => write!(
                f,
                "{} lists the istio-init container, which installs the capture itself",
                keys::STATUS
            ),
            SkipReason::InjectDisabled { value } => {
                write!(f, "{} is {value:?}", keys::INJECT)
            }
            SkipReason::NoLinkerdProxy => write!(
                f,
                "no {} annotation (no Linkerd proxy injected)",
                linkerd_keys::PROXY_VERSION
            ),
        }
    }
}

/// A pod annotation whose value cannot be used; nothing is decided from the pod.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("annotation {annotation}: invalid value {value:?}: {reason}")]
pub struct AnnotationError {
    /// The annotation's key.
    pub annotation: String,
    /// Its value.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}
