//! The node agent's protocol, typed on both ends: one JSON request per line on the agent's
//! unix socket, one JSON reply line back, versioned ([`PROTOCOL_VERSION`]). Shared by the
//! agent (`nftmesh agent run`), its CLI clients (`nftmesh agent add|remove|status|list`) and
//! the CNI plugin's `agent_socket` mode. It holds data and the client, nothing that compiles
//! or installs a capture (that is the `nftmesh` crate's).
//!
//! Requests ([`Request`], one constructor per command):
//! `{"version": 1, "command": "add", "network_namespace": PATH, "capture": CONFIG}` (or
//! `"ambient": CONFIG`; `"container_id"` optional; `"cgroup": DIR`, optional, installs a sidecar
//! capture with the eBPF backend on that cgroup v2 directory), `"remove"`, `"check"` and
//! `"status"` with
//! `network_namespace` (optional for `status`), `"list"`; any of them may carry an `"id"` (a
//! number the client chooses) that an agent which knows ids echoes in its reply. The agent
//! reads them with [`parse`] into a checked [`Command`].
//!
//! Replies ([`Reply`]): `{"ok": true, ...}` or `{"ok": false, "error": TEXT, "kind": KIND}`
//! ([`ErrorKind`]: `busy` try again, `invalid`, `refused`, `failed`; `"differences": [TEXT,
//! ...]` for a failed `check`). `add` replies `"report"`, `remove` `"tables"`, `list`
//! `"pods": [PATH, ...]` and `status` `"pods": [POD, ...]` ([`PodStatus`]: `network_namespace`,
//! `kind`, `desired`, `container_id`, `installed_at`, `last_check`, `repairs` (a count),
//! `recent_repairs` (`[{"at", "cause", "summary"}, ...]`, the last 16) and `last_error`; times
//! in seconds since the epoch; `backend`, `nf_tables` or `ebpf`, and for an eBPF pod `ebpf`:
//! its cgroup, bpffs and the links attached). Keys were added within version 1 (`summary`,
//! `kind`, `id`, `cgroup`, `backend`):
//! each side ignores, and [`Reply`] keeps, keys it does not know.
//!
//! ```
//! use nftmesh_protocol::{parse, Command, Desired, ErrorKind, Reply, Request};
//! use std::path::Path;
//!
//! let desired = Desired::from_parts(Some(&serde_json::json!({})), None, None)?;
//! let request = Request::add(Path::new("/run/netns/p"), desired).with_id(7);
//! let line = request.to_json();
//! assert!(matches!(parse(line.as_bytes()), Ok(Command::Add { .. })));
//!
//! let reply = Reply::parse(br#"{"ok":false,"error":"busy: 256 clients already"}"#)?;
//! assert_eq!(reply.failure.map(|f| f.kind), Some(ErrorKind::Busy));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
mod desired;
mod reply;
mod request;

pub use client::{call, call_ok, CallError, ClientError};
pub use desired::Desired;
pub use reply::{ErrorKind, Failure, Pod, PodStatus, RecentRepair, Reply, ReplyError};
pub use request::{parse, parse_with_id, Command, Request, RequestId, Verb};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The longest request line an agent accepts.
pub const MAX_REQUEST: usize = 1 << 20;
