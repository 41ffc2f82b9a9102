//! nftmesh's kernel I/O: a [`nftmesh_model::Ruleset`] applied as one nf_tables transaction
//! over a kept-open netlink socket ([`Connection`]), plus network namespaces ([`netns`]).
//!
//! Encoding goes through libnftnl (`nftnl-sys`, all `unsafe` in [`ffi`]); replies are read by
//! the bounds-checked parser in [`wire`].
#![deny(missing_docs)]

pub mod bounds;
pub mod conn;
pub mod decode;
pub mod diff;
pub mod error;
pub mod ffi;
pub mod ir;
pub mod lower;
pub mod migrate;
pub mod netns;
pub mod probe;
pub mod raise;
pub mod routes;
pub mod sys;
pub mod wire;

pub use conn::{ApplyReport, Connection, LiveChain, LiveSet, LiveTable};
pub use error::{NetlinkError, Object};
