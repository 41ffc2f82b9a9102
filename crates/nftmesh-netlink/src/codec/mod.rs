//! The nf_tables codec, with no socket: the model lowered to kernel expressions ([`lower`]),
//! checked against the kernel's limits ([`bounds`]) and written as netlink messages by
//! libnftnl ([`nftnl`]); replies and dumps parsed ([`wire`]), decoded into expressions
//! ([`decode`]) and objects ([`objects`]) and raised back into the model ([`raise`]);
//! a written transaction read back without a kernel ([`readback`]).

pub mod bounds;
pub(crate) mod decode;
pub(crate) mod expr;
pub(crate) mod ir;
pub(crate) mod lower;
pub(crate) mod nftnl;
pub(crate) mod numbers;
pub(crate) mod objects;
pub(crate) mod raise;
pub mod readback;
pub(crate) mod sys;
pub(crate) mod wire;
