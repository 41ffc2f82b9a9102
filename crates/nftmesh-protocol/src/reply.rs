//! Replies: `{"ok": true, ...}` or `{"ok": false, "error": TEXT, "kind": KIND, ...}`, one JSON
//! line each; [`Reply::parse`] and [`Reply::to_json`] side by side.

use crate::desired::Desired;
use crate::request::RequestId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Why the agent did not do what was asked (`"kind"` of an error reply).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `busy`: the agent cannot take the request now; try again (CNI code 11).
    Busy,
    /// `invalid`: the request is malformed or names something that does not exist.
    Invalid,
    /// `refused`: the agent will not do it (not allowed, or not its to do).
    Refused,
    /// `failed`: the agent tried and the kernel or a file failed it.
    Failed,
    /// A kind this client does not know (a newer agent's), kept as it was written; `None`
    /// when the reply had no `kind` (agents before kinds, except "busy" texts: see
    /// [`Reply::parse`]).
    Unknown(Option<String>),
}

impl ErrorKind {
    /// The kind written as `name` (`None`: no `kind` key).
    pub fn from_name(name: Option<&str>) -> Self {
        match name {
            Some("busy") => ErrorKind::Busy,
            Some("invalid") => ErrorKind::Invalid,
            Some("refused") => ErrorKind::Refused,
            Some("failed") => ErrorKind::Failed,
            other => ErrorKind::Unknown(other.map(str::to_string)),
        }
    }

    /// Its name on the wire (`None`: written without a `kind`).
    pub fn name(&self) -> Option<&str> {
        match self {
            ErrorKind::Busy => Some("busy"),
            ErrorKind::Invalid => Some("invalid"),
            ErrorKind::Refused => Some("refused"),
            ErrorKind::Failed => Some("failed"),
            ErrorKind::Unknown(name) => name.as_deref(),
        }
    }
}

/// What an error reply says.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Why, as a kind a client can act on.
    pub kind: ErrorKind,
    /// Why, in words (`"error"`).
    pub error: String,
    /// A failed `check`'s differences, one line each (empty otherwise).
    pub differences: Vec<String>,
}

/// The error text ("the agent refused" when the reply gave none), then each difference on a
/// line of its own, indented by two spaces.
impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.error.is_empty() {
            f.write_str("the agent refused")?;
        } else {
            f.write_str(&self.error)?;
        }
        for d in &self.differences {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

/// One pod of a `status` or `list` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Pod {
    /// A `list` entry: the pod's namespace path.
    Listed(PathBuf),
    /// A `status` entry.
    Status(Box<PodStatus>),
}

impl Pod {
    /// The pod's network namespace.
    pub fn network_namespace(&self) -> &Path {
        match self {
            Pod::Listed(p) => p,
            Pod::Status(s) => &s.network_namespace,
        }
    }
}

/// A pod's state in a `status` reply. Times are seconds since the epoch. Keys this version
/// does not know are kept in `extra` (clients ignore what they do not know).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodStatus {
    /// The namespace path it was registered with.
    pub network_namespace: PathBuf,
    /// `sidecar` or `ambient` (a newer agent may add kinds).
    #[serde(default)]
    pub kind: String,
    /// The desired capture as the agent wrote it, kept as JSON: a newer agent's capture
    /// settings must not make the reply unreadable. Typed by [`PodStatus::desired`].
    #[serde(default)]
    pub desired: Value,
    /// The runtime's container id.
    #[serde(default)]
    pub container_id: Option<String>,
    /// When the pod was registered.
    #[serde(default)]
    pub installed_at: f64,
    /// When the pod's capture was last checked equal to the desired one.
    #[serde(default)]
    pub last_check: Option<f64>,
    /// How many repairs the pod had.
    #[serde(default)]
    pub repairs: u64,
    /// The last repairs, oldest first.
    #[serde(default)]
    pub recent_repairs: Vec<RecentRepair>,
    /// The last error repairing or checking it.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Keys this version does not know, as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl PodStatus {
    /// [`PodStatus::desired`] typed (an error names what this version cannot read).
    pub fn desired(&self) -> Result<Desired, String> {
        serde_json::from_value(self.desired.clone()).map_err(|e| format!("desired: {e}"))
    }
}

/// One repair of a pod, in `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentRepair {
    /// When.
    #[serde(default)]
    pub at: f64,
    /// `KIND: WHY: DIFFERENCES`.
    #[serde(default)]
    pub cause: String,
    /// The differences counted, in words (added within version 1: absent from older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Keys this version does not know, as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A reply: ok, or a [`Failure`]; what each command returns beside.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reply {
    /// The request's id, echoed (none when the request had none, or from an agent before ids).
    pub id: Option<RequestId>,
    /// Why the agent did not do it; `None`: `"ok": true`.
    pub failure: Option<Failure>,
    /// `add`: what was installed, in words.
    pub report: Option<String>,
    /// `remove`: how many tables were removed.
    pub tables: Option<u64>,
    /// `status` and `list`: the pods.
    pub pods: Option<Vec<Pod>>,
    /// Keys this version does not know, as written.
    pub extra: Map<String, Value>,
}

/// A reply line that is not a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// Not a JSON object of the reply's shape.
    #[error("unreadable reply: {0}")]
    Unreadable(String),
    /// No boolean `ok`.
    #[error("reply has no boolean \"ok\": {0}")]
    NoOk(String),
}

/// The reply's keys as written.
#[derive(Serialize, Deserialize)]
struct Wire {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<RequestId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    differences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    report: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tables: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pods: Option<Vec<Pod>>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl Reply {
    /// `{"ok": true}`.
    pub fn ok() -> Self {
        Reply::default()
    }

    /// `{"ok": false, "kind": KIND, "error": TEXT}`.
    pub fn error(kind: ErrorKind, text: impl Into<String>) -> Self {
        Reply {
            failure: Some(Failure {
                kind,
                error: text.into(),
                differences: Vec::new(),
            }),
            ..Reply::default()
        }
    }

    /// With the request's id.
    pub fn with_id(mut self, id: Option<RequestId>) -> Self {
        self.id = id;
        self
    }

    /// Whether the agent did what was asked (`"ok": true`).
    pub fn is_ok(&self) -> bool {
        self.failure.is_none()
    }

    /// The reply when the agent did what was asked; its [`Failure`] when it says `"ok": false`.
    pub fn into_result(mut self) -> Result<Reply, Failure> {
        match self.failure.take() {
            None => Ok(self),
            Some(f) => Err(f),
        }
    }

    /// Read a reply line. Keys it does not know are kept in `extra`; an error without a
    /// `kind` is [`ErrorKind::Unknown`]`(None)`, except that an error text starting with
    /// `busy` is [`ErrorKind::Busy`]: agents before kinds said "busy: ..." when they could not
    /// take a client (compatibility with them; written back with `"kind": "busy"`).
    pub fn parse(line: &[u8]) -> Result<Reply, ReplyError> {
        let v: Value =
            serde_json::from_slice(line).map_err(|e| ReplyError::Unreadable(e.to_string()))?;
        Reply::from_value(v)
    }

    /// [`Reply::parse`] of a JSON value.
    pub fn from_value(v: Value) -> Result<Reply, ReplyError> {
        if !v.get("ok").is_some_and(Value::is_boolean) {
            return Err(ReplyError::NoOk(v.to_string()));
        }
        let w: Wire =
            serde_json::from_value(v).map_err(|e| ReplyError::Unreadable(e.to_string()))?;
        let mut extra = w.extra;
        let failure = if w.ok {
            // Meaningless beside ok: kept as written.
            let kept = [
                ("error", w.error.map(Value::from)),
                ("kind", w.kind.map(Value::from)),
                ("differences", w.differences.map(Value::from)),
            ];
            extra.extend(
                kept.into_iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v?))),
            );
            None
        } else {
            let error = w.error.unwrap_or_default();
            let kind = match w.kind.as_deref() {
                None if error.starts_with("busy") => ErrorKind::Busy,
                name => ErrorKind::from_name(name),
            };
            Some(Failure {
                kind,
                error,
                differences: w.differences.unwrap_or_default(),
            })
        };
        Ok(Reply {
            id: w.id,
            failure,
            report: w.report,
            tables: w.tables,
            pods: w.pods,
            extra,
        })
    }

    /// The reply as a JSON object.
    pub fn to_value(&self) -> Value {
        let f = self.failure.as_ref();
        let w = Wire {
            ok: f.is_none(),
            id: self.id,
            error: f.map(|f| f.error.clone()),
            kind: f.and_then(|f| f.kind.name().map(str::to_string)),
            differences: f
                .filter(|f| !f.differences.is_empty())
                .map(|f| f.differences.clone()),
            report: self.report.clone(),
            tables: self.tables,
            pods: self.pods.clone(),
            extra: self.extra.clone(),
        };
        serde_json::to_value(w).unwrap_or_else(|e| {
            // Only a map key that is not a string fails, and every key here is one.
            serde_json::json!({"ok": false, "kind": "failed", "error": format!("reply: {e}")})
        })
    }

    /// The reply's line, without its newline.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

#[cfg(test)]
mod tests;
