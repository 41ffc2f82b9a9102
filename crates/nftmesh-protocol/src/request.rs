//! Requests: what a client sends ([`Request`], built by one constructor per command) and what
//! the agent makes of it ([`parse`] into a checked [`Command`]).

use crate::desired::Desired;
use crate::{MAX_REQUEST, PROTOCOL_VERSION};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A client-chosen request id, echoed by an agent that knows ids in its reply's `id`.
pub type RequestId = u64;

/// The command a request names (`"command"` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `add`: register the pod and install its capture.
    Add,
    /// `remove`: remove the pod's capture and forget it.
    Remove,
    /// `check`: compare the pod's live capture with the desired one.
    Check,
    /// `status`: the state of one pod, or of all.
    Status,
    /// `list`: the registered namespaces.
    List,
}

impl Verb {
    /// Every verb, in the order the protocol lists them.
    pub const ALL: [Verb; 5] = [
        Verb::Add,
        Verb::Remove,
        Verb::Check,
        Verb::Status,
        Verb::List,
    ];

    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "add",
            Verb::Remove => "remove",
            Verb::Check => "check",
            Verb::Status => "status",
            Verb::List => "list",
        }
    }

    /// The verb named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.as_str() == name)
    }
}

/// A request as a client sends it: one JSON object on one line,
/// `{"version":1,"command":VERB,"network_namespace":PATH,"container_id":ID,"capture"|"ambient":CONFIG,"cgroup":DIR,"id":N}`,
/// absent keys left out. Built with [`Request::add`], [`Request::remove`], [`Request::check`],
/// [`Request::status`] or [`Request::list`]; written with [`Request::to_json`], read back with
/// [`Request::parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// A client-chosen id the agent echoes in its reply (none: the reply has none either).
    pub id: Option<RequestId>,
    /// The command.
    pub verb: Verb,
    /// The pod's network namespace (every command but `list`; optional for `status`).
    pub network_namespace: Option<PathBuf>,
    /// The runtime's container id (the CNI plugin sends it; kept in status).
    pub container_id: Option<String>,
    /// The capture (`add`; the CNI plugin also sends the decided one with `check`).
    pub desired: Option<Desired>,
    /// `add` with the eBPF backend: the pod's cgroup v2 directory (an absolute path), whose
    /// processes' connects the programs capture. Absent: the nf_tables backend.
    pub cgroup: Option<PathBuf>,
}

impl Request {
    fn new(verb: Verb, netns: Option<&Path>) -> Self {
        Request {
            id: None,
            verb,
            network_namespace: netns.map(Path::to_path_buf),
            container_id: None,
            desired: None,
            cgroup: None,
        }
    }

    /// `add`: register the pod in `netns` with `desired` and install it.
    pub fn add(netns: &Path, desired: Desired) -> Self {
        Request::new(Verb::Add, Some(netns)).with_desired(desired)
    }

    /// `remove`: remove the capture of the pod in `netns` and forget it.
    pub fn remove(netns: &Path) -> Self {
        Request::new(Verb::Remove, Some(netns))
    }

    /// `check`: compare the live capture of the pod in `netns` with the desired one.
    pub fn check(netns: &Path) -> Self {
        Request::new(Verb::Check, Some(netns))
    }

    /// `status` of the pod in `netns`, or of every pod.
    pub fn status(netns: Option<&Path>) -> Self {
        Request::new(Verb::Status, netns)
    }

    /// `list`: the registered namespaces.
    pub fn list() -> Self {
        Request::new(Verb::List, None)
    }

    /// With this request id.
    pub fn with_id(mut self, id: RequestId) -> Self {
        self.id = Some(id);
        self
    }

    /// With the runtime's container id.
    pub fn with_container_id(mut self, container_id: Option<String>) -> Self {
        self.container_id = container_id;
        self
    }

    /// With the eBPF backend on this cgroup v2 directory (`add`).
    pub fn with_cgroup(mut self, cgroup: Option<PathBuf>) -> Self {
        self.cgroup = cgroup;
        self
    }

    /// With this capture.
    pub fn with_desired(mut self, desired: Desired) -> Self {
        self.desired = Some(desired);
        self
    }

    /// The request as a JSON object (`version` set to [`PROTOCOL_VERSION`]).
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("version".into(), PROTOCOL_VERSION.into());
        m.insert("command".into(), self.verb.as_str().into());
        if let Some(n) = &self.network_namespace {
            m.insert("network_namespace".into(), path_value(n));
        }
        if let Some(c) = &self.container_id {
            m.insert("container_id".into(), c.clone().into());
        }
        if let Some(d) = &self.desired {
            // `{"capture": {...}}`, `{"ambient": {...}}` or `{"linkerd": {...}}`: the
            // request's own keys.
            if let Ok(Value::Object(kv)) = serde_json::to_value(d) {
                m.extend(kv);
            }
        }
        if let Some(c) = &self.cgroup {
            m.insert("cgroup".into(), path_value(c));
        }
        if let Some(id) = self.id {
            m.insert("id".into(), id.into());
        }
        Value::Object(m)
    }

    /// The request's line, without its newline.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    /// Read a request line as the client wrote it: the version, the command's name, the id and
    /// the capture (validated) checked; what the command needs (its namespace) is checked by
    /// [`parse`].
    pub fn parse(line: &[u8]) -> Result<Request, String> {
        let raw = Raw::read(line)?;
        let verb = raw.verb()?;
        let desired = match (&raw.capture, &raw.ambient, &raw.linkerd) {
            (None, None, None) => None,
            (c, a, l) => Some(Desired::from_parts(c.as_ref(), a.as_ref(), l.as_ref())?),
        };
        Ok(Request {
            id: raw.id,
            verb,
            network_namespace: raw.network_namespace,
            container_id: raw.container_id,
            desired,
            cgroup: raw.cgroup,
        })
    }
}

/// A path as JSON: a string (a path that is not UTF-8 lossily, as serde would refuse it).
fn path_value(p: &Path) -> Value {
    Value::String(p.to_string_lossy().into_owned())
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
        /// The eBPF backend's cgroup v2 directory (absolute); `None`: nf_tables.
        cgroup: Option<PathBuf>,
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

/// A request line as the agent reads it, before it is checked.
#[derive(Deserialize)]
struct Raw {
    version: u32,
    command: String,
    #[serde(default)]
    id: Option<RequestId>,
    #[serde(default)]
    network_namespace: Option<PathBuf>,
    #[serde(default)]
    capture: Option<Value>,
    #[serde(default)]
    ambient: Option<Value>,
    #[serde(default)]
    linkerd: Option<Value>,
    #[serde(default)]
    container_id: Option<String>,
    #[serde(default)]
    cgroup: Option<PathBuf>,
}

impl Raw {
    /// The line's length, JSON and version checked.
    fn read(line: &[u8]) -> Result<Raw, String> {
        if line.len() > MAX_REQUEST {
            return Err(format!(
                "request of {} bytes, more than {MAX_REQUEST}",
                line.len()
            ));
        }
        let raw: Raw = serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))?;
        if raw.version != PROTOCOL_VERSION {
            return Err(format!(
                "protocol version {} is not {PROTOCOL_VERSION}",
                raw.version
            ));
        }
        Ok(raw)
    }

    fn verb(&self) -> Result<Verb, String> {
        Verb::from_name(&self.command).ok_or_else(|| {
            format!(
                "unknown command {:?}: add, remove, check, status or list",
                self.command
            )
        })
    }
}

/// Parse one request line into what it asks, refusing it with a reason: too long, not JSON,
/// another version, an unknown command, a missing or relative `network_namespace`, a missing,
/// doubled or invalid capture, a relative `cgroup` or one with a capture that is not a
/// sidecar's.
pub fn parse(line: &[u8]) -> Result<Command, String> {
    parse_with_id(line).1
}

/// [`parse`], and the request's `id` (when the line was read that far; a line that is not a
/// request may still name its id, which the agent can then echo in the error reply).
pub fn parse_with_id(line: &[u8]) -> (Option<RequestId>, Result<Command, String>) {
    let raw = match Raw::read(line) {
        Ok(raw) => raw,
        Err(e) => return (id_only(line), Err(e)),
    };
    let id = raw.id;
    let command = raw.verb().and_then(|verb| {
        let netns = || {
            raw.network_namespace
                .clone()
                .filter(|p| p.is_absolute())
                .ok_or_else(|| {
                    format!(
                        "{}: network_namespace (an absolute path) is required",
                        raw.command
                    )
                })
        };
        match verb {
            Verb::Add => {
                let netns = netns()?;
                let desired = Desired::from_parts(
                    raw.capture.as_ref(),
                    raw.ambient.as_ref(),
                    raw.linkerd.as_ref(),
                )?;
                if let Some(c) = &raw.cgroup {
                    if !c.is_absolute() {
                        return Err(format!(
                            "add: cgroup {} is not an absolute path",
                            c.display()
                        ));
                    }
                    if !matches!(desired, Desired::Capture(_)) {
                        return Err(format!(
                            "add: cgroup (the eBPF backend) installs sidecar captures, not {}",
                            desired.kind()
                        ));
                    }
                }
                Ok(Command::Add {
                    netns,
                    desired,
                    container_id: raw.container_id.clone(),
                    cgroup: raw.cgroup.clone(),
                })
            }
            Verb::Remove => Ok(Command::Remove(netns()?)),
            Verb::Check => Ok(Command::Check(netns()?)),
            Verb::Status => Ok(Command::Status(raw.network_namespace.clone())),
            Verb::List => Ok(Command::List),
        }
    });
    (id, command)
}

/// The `id` of a line that is JSON but not a valid request.
fn id_only(line: &[u8]) -> Option<RequestId> {
    #[derive(Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: Option<RequestId>,
    }
    if line.len() > MAX_REQUEST {
        return None;
    }
    serde_json::from_slice::<IdOnly>(line).ok()?.id
}

#[cfg(test)]
mod tests;
