//! A client of the agent's socket: [`nftmesh_protocol::client`], re-exported. [`call`] here is
//! the JSON one ([`nftmesh_protocol::client::call_value`]) for tests and tools; typed clients
//! use [`nftmesh_protocol::call`] with a [`nftmesh_protocol::Request`].

pub use nftmesh_protocol::client::{call_value as call, ClientError, MAX_REPLY};
