//! nftmesh's kernel I/O: a [`nftmesh_model::Ruleset`] applied as one nf_tables transaction
//! over a kept-open netlink socket ([`Connection`]), plus network namespaces ([`netns`]).
//!
//! Encoding goes through libnftnl (`nftnl-sys`); every object is checked against the kernel's
//! and netlink's limits first ([`bounds`]), so no input makes libnftnl write past its buffer.
//! Replies are read by the bounds-checked parser in [`wire`]. All `unsafe` code (libnftnl,
//! socket options, `fork`, `dup`, per-thread ids, `SO_ORIGINAL_DST`) is in [`ffi`]; the rest of
//! the crate denies it.
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod batch;
pub mod bounds;
pub mod conn;
pub mod decode;
pub mod error;
pub mod ffi;
pub mod ir;
pub mod lower;
pub mod migrate;
pub mod netns;
mod objects;
pub mod probe;
pub mod raise;
pub mod routes;
pub mod sys;
pub mod wire;

pub use conn::{ApplyReport, Connection, LiveChain, LiveSet, LiveTable};
pub use error::{NetlinkError, Object};
