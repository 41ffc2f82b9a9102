//! nftmesh's eBPF capture backend (issue 27, its foundation): Istio's outbound capture done at
//! `connect()` for the processes of one cgroup v2 directory, with no NAT and no conntrack.
//!
//! ```no_run
//! use nftmesh_ebpf::{Attachment, Bpffs, EbpfCapture};
//! use nftmesh_model::config::CaptureConfig;
//! use std::path::Path;
//!
//! // Istio's sidecar settings: TCP connects of the pod's processes (but the proxy's, uid and
//! // gid 1337) go to 127.0.0.1:15001; the proxy reads where they were going with
//! // getsockopt(SOL_IP, SO_ORIGINAL_DST) on the accepted socket.
//! let bpffs = Bpffs::find()?; // usually /sys/fs/bpf
//! let pod = Path::new("/sys/fs/cgroup/unified/mypod");
//! let mut capture = EbpfCapture::new(&CaptureConfig::sidecar())?;
//! capture.install(&bpffs, pod)?; // pinned: survives this process
//! // ... later, from any process:
//! if let Some(attached) = Attachment::open(&bpffs, pod)? {
//!     attached.remove()?; // nothing is redirected any more, nothing left in bpffs
//! }
//! # Ok::<(), nftmesh_ebpf::EbpfError>(())
//! ```
//!
//! The BPF programs are C (`bpf/capture.c`), compiled by `build.rs` with clang and loaded with
//! aya: `cgroup/connect4` rewrites the destination of a captured connect to the proxy port on
//! 127.0.0.1 and keeps the original one by socket cookie; `sockops` moves it, once the
//! connection is established, to a map keyed by the 4-tuple the proxy's accepted socket sees;
//! `cgroup/getsockopt` answers `SO_ORIGINAL_DST` from there; `cgroup/getpeername4`/`6` show
//! the app its original peer (kept in its socket's storage), as REDIRECT does. Their links and the maps of
//! original destinations are pinned in bpffs under `nftmesh/<cgroup inode>/` by
//! [`EbpfCapture::install`]; installing on a cgroup that has a capture replaces its programs
//! in place (`BPF_LINK_UPDATE`), keeping the maps. [`EbpfCapture::attach`] attaches for the
//! life of the returned handle only (tests, benchmarks).
//!
//! The decision follows nf_tables' `istio-output` chain for TCP: excluded outbound ports, the
//! 127.0.0.6 (`::6`) passthrough source, proxy uids and gids, loopback destinations, owner
//! groups, the host loopback range (and `::1`), excluded CIDRs, included ports, included CIDRs.
//! `cgroup/connect6` applies it to IPv6 connects when `CaptureConfig::ipv6` is on (to
//! `[::1]:proxy_port`, answered by `IP6T_SO_ORIGINAL_DST`), and always to a dual-stack
//! socket's IPv4-mapped connects, as IPv4. With DNS capture in effect, IPv4 UDP to port 53 of
//! the DNS servers (or any, with capture-all) goes to 127.0.0.1:15053 (`cgroup/sendmsg4`, and
//! `connect4` for a UDP socket's connect), its replies shown as from the server
//! (`cgroup/recvmsg4`), and TCP to port 53 to 15053 via `connect4`; `sendmsg6`/`recvmsg6` do
//! the same for IPv6 servers (to `[::1]:15053`) and dual-stack sockets.
//!
//! A capture made with [`EbpfCapture::in_namespace`] applies only to the cgroup's sockets in
//! that network namespace (the programs compare [`NetnsCookie`]s), as nf_tables' capture
//! applies in its namespace only; [`EbpfCapture::new`] applies in every namespace the cgroup's
//! processes use.
//!
//! Inbound: [`InboundCapture`] steers the connections nf_tables' inbound chain would redirect
//! to the proxy's listener with `sk_lookup` (no NAT, no conntrack). [`Acceleration`] (off
//! unless asked: the half-close bug) hands bytes between the app's and the proxy's ends with
//! sk_msg. Settings the programs cannot apply exactly are refused with
//! [`EbpfError::Unsupported`]. See the crate's README.
#![deny(missing_docs)]

mod accel;
mod attachment;
mod capture;
mod error;
mod inbound;
mod maps;
mod netns;
mod pins;
mod programs;
mod settings;
mod sys;

pub use accel::{Accelerated, Acceleration};
pub use attachment::Attachment;
pub use capture::{EbpfCapture, Tracked};
pub use error::EbpfError;
pub use inbound::{InboundAttachment, InboundCapture};
pub use netns::NetnsCookie;
pub use pins::Bpffs;
pub use {
    attachment::Link,
    pins::{check_cgroup, StalePins, LOCK_WAIT},
};
