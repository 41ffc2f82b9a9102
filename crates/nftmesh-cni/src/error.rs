//! [`CniError`]: every way the plugin fails, each with the CNI spec's error code (1
//! incompatible version, 4 invalid environment variables, 6 content that does not decode, 7
//! invalid network config, 11 try again later, 50 plugin not available; libcni's
//! `pkg/types` names them `ErrIncompatibleCNIVersion` ... `ErrInvalidNetworkConfig`) or one of
//! ours (100 and up), printed as the spec's error object.

use serde_json::{json, Value};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CniError {
    /// The configuration's `cniVersion` is not one this plugin speaks, or the command needs a
    /// newer one (CHECK: 0.4.0, STATUS and GC: 1.1.0). Code 1.
    #[error("incompatible CNI version {version:?}: {why}")]
    IncompatibleVersion {
        /// The version asked for.
        version: String,
        /// What is wrong with it.
        why: String,
    },
    /// Stdin is not JSON (the spec's "failed to decode content"). Code 6.
    #[error("cannot decode the network configuration: {0}")]
    Decode(String),
    /// The network configuration on stdin is invalid. Code 7.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// A pod annotation the mesh's decision reads has a value it cannot use; nothing was
    /// installed. Code 7 (the pod's part of the network configuration).
    #[error("invalid pod annotation: {0}")]
    Annotation(String),
    /// A `CNI_*` environment variable is missing or invalid. Code 4.
    #[error("invalid environment variable {name}: {why}")]
    InvalidEnv {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The node agent could not be reached or is busy: the runtime should try again. Code 11.
    #[error("try again later: {0}")]
    TryAgain(String),
    /// The plugin cannot work now (STATUS). Code 50.
    #[error("plugin not available: {0}")]
    NotAvailable(String),
    /// Installing, checking or removing the capture failed in the kernel. Code 100.
    #[error("capture failed: {0}")]
    Capture(String),
    /// CHECK found the pod's capture different from the desired one. Code 101.
    #[error("capture differs from the configuration: {}", .0.join("; "))]
    Drift(Vec<String>),
    /// The validation connection after ADD did not behave as the capture says. Code 102.
    #[error("capture validation failed: {0}")]
    Validation(String),
    /// The node agent answered with an error. Code 103.
    #[error("node agent: {0}")]
    Agent(String),
}

impl CniError {
    /// The error code of the CNI spec (1-99) or ours (100 and up).
    pub fn code(&self) -> u32 {
        match self {
            CniError::IncompatibleVersion { .. } => 1,
            CniError::InvalidEnv { .. } => 4,
            CniError::Decode(_) => 6,
            CniError::InvalidConfig(_) | CniError::Annotation(_) => 7,
            CniError::TryAgain(_) => 11,
            CniError::NotAvailable(_) => 50,
            CniError::Capture(_) => 100,
            CniError::Drift(_) => 101,
            CniError::Validation(_) => 102,
            CniError::Agent(_) => 103,
        }
    }

    /// The short message (`msg`) of the error object.
    pub fn msg(&self) -> &'static str {
        match self {
            CniError::IncompatibleVersion { .. } => "incompatible CNI version",
            CniError::Decode(_) => "failed to decode content",
            CniError::InvalidConfig(_) => "invalid network configuration",
            CniError::Annotation(_) => "invalid pod annotation",
            CniError::InvalidEnv { .. } => "invalid environment variables",
            CniError::TryAgain(_) => "try again later",
            CniError::NotAvailable(_) => "plugin not available",
            CniError::Capture(_) => "nftmesh capture failed",
            CniError::Drift(_) => "nftmesh capture differs from the configuration",
            CniError::Validation(_) => "nftmesh capture validation failed",
            CniError::Agent(_) => "nftmesh node agent refused",
        }
    }

    /// The spec's error object, in `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code(),
            "msg": self.msg(),
            "details": self.to_string(),
        })
    }
}

impl From<nftmesh::CaptureError> for CniError {
    fn from(e: nftmesh::CaptureError) -> Self {
        match e {
            nftmesh::CaptureError::Config(c) => CniError::InvalidConfig(c.to_string()),
            nftmesh::CaptureError::Verify(v) => CniError::Validation(v),
            other => CniError::Capture(other.to_string()),
        }
    }
}
