//! nftmesh's kernel I/O: a [`nftmesh_model::Ruleset`] applied as one nf_tables transaction
//! over a kept-open netlink socket ([`Connection`]), TPROXY policy routing over rtnetlink
//! ([`routes`]), and work inside network namespaces ([`netns`]).
//!
//! Encoding goes through libnftnl (`nftnl-sys`); every object is checked against the kernel's
//! and netlink's limits first ([`bounds`]), so no input makes libnftnl write past its buffer.
//! Replies are read by a bounds-checked parser. `unsafe` code lives in two fenced modules:
//! libnftnl in `codec::nftnl`, system calls (socket options, `fork`, `dup`, per-thread ids,
//! `SO_ORIGINAL_DST`) in `os`; the rest of the crate denies it.
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod codec;
mod connection;
mod dump;
pub mod error;
mod listing;
pub mod monitor;
pub mod netns;
mod os;
pub mod probe;
mod retry;
pub mod route_monitor;
pub mod routes;
mod socket;
pub mod trace;
pub mod transaction;
pub mod transport;

pub use codec::bounds;
pub use codec::objects::{LiveChain, LiveSet, LiveTable};
pub use codec::readback;
pub use connection::{ApplyReport, Connection};
pub use dump::{LiveRule, RuleJumps};
pub use error::{NetlinkError, Object};
pub use transaction::{LiveState, Removal, TableOwner, Transaction};
