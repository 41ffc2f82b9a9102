//! The expression codec, one file per kernel expression kind (as google/nftables keeps
//! them): each file writes its kind through libnftnl ([`ExprBuilder`], typed attributes),
//! reads it back from dumped attributes, and says how many bytes it takes in a rule message
//! (which [`crate::codec::bounds`] checks before anything is written). This module dispatches
//! on [`Expr`].

mod bitwise;
mod byteorder;
mod cmp;
mod counter;
mod ct;
mod immediate;
mod log;
mod lookup;
mod meta;
mod nat;
mod payload;
mod range;
mod redir;
mod socket;
mod tproxy;

use crate::codec::bounds::{self, attr, strz, BuildError};
use crate::codec::ir::Expr;
use crate::codec::nftnl::Built;
use crate::codec::sys::NFTA_DATA_VALUE;
use crate::codec::wire::{attrs, be32, find};

/// An expression's decoded data attributes.
pub(crate) type Attrs<'a> = Vec<(u16, &'a [u8])>;

/// The size of a 32-bit attribute.
pub(crate) const U32: usize = attr(4);
/// The size of a 64-bit attribute.
pub(crate) const U64: usize = attr(8);

/// The size of an optional 32-bit attribute.
pub(crate) fn opt(set: bool) -> usize {
    if set {
        U32
    } else {
        0
    }
}

/// A value nested in a data attribute (`NFTA_*_DATA { NFTA_DATA_VALUE }`).
pub(crate) const fn value(len: usize) -> usize {
    4 + attr(len)
}

/// A required 32-bit attribute.
pub(crate) fn u32_of(at: &Attrs<'_>, ty: u16, expr: &str, what: &str) -> Result<u32, String> {
    find(at, ty)
        .and_then(be32)
        .ok_or_else(|| format!("expression {expr}: missing or short {what}"))
}

/// An optional 32-bit attribute.
pub(crate) fn opt_u32(at: &Attrs<'_>, ty: u16) -> Option<u32> {
    find(at, ty).and_then(be32)
}

/// The value bytes of a nested `NFTA_DATA_VALUE`.
pub(crate) fn data_value(
    at: &Attrs<'_>,
    ty: u16,
    expr: &str,
    what: &str,
) -> Result<Vec<u8>, String> {
    let nested = find(at, ty).ok_or_else(|| format!("expression {expr}: missing {what}"))?;
    let inner = attrs(nested).map_err(|e| format!("expression {expr} {what}: {e}"))?;
    find(&inner, NFTA_DATA_VALUE)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format!("expression {expr}: {what} holds no value"))
}

/// Build the libnftnl expression for `e`, checked against the kernel's limits first.
pub(crate) fn encode(e: &Expr) -> Result<Built, BuildError> {
    bounds::check_expr(e)?;
    match e {
        Expr::Meta { key, dreg } => meta::encode_load(*key, *dreg),
        Expr::MetaSet { key, sreg } => meta::encode_set(*key, *sreg),
        Expr::Ct { key, dreg } => ct::encode_load(*key, *dreg),
        Expr::CtSet { key, sreg } => ct::encode_set(*key, *sreg),
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => payload::encode(*base, *offset, *len, *dreg),
        Expr::Cmp { sreg, op, data } => cmp::encode(*sreg, *op, data),
        Expr::Range { sreg, op, from, to } => range::encode(*sreg, *op, from, to),
        Expr::Bitwise {
            sreg,
            dreg,
            len,
            mask,
            xor,
        } => bitwise::encode(*sreg, *dreg, *len, mask, xor),
        Expr::Byteorder {
            sreg,
            dreg,
            op,
            len,
            size,
        } => byteorder::encode(*sreg, *dreg, *op, *len, *size),
        Expr::Lookup {
            sreg,
            set,
            set_id,
            invert,
        } => lookup::encode(*sreg, set, *set_id, *invert),
        Expr::Immediate { dreg, data } => immediate::encode_data(*dreg, data),
        Expr::Verdict { code, chain } => immediate::encode_verdict(*code, chain.as_deref()),
        Expr::Counter => counter::encode(),
        Expr::Log { prefix } => log::encode(prefix.as_deref()),
        Expr::Redir {
            reg_proto_min,
            flags,
        } => redir::encode(*reg_proto_min, *flags),
        Expr::Tproxy {
            family,
            reg_addr,
            reg_port,
        } => tproxy::encode(*family, *reg_addr, *reg_port),
        Expr::Socket { key, dreg } => socket::encode(*key, *dreg),
        Expr::Nat {
            kind,
            family,
            reg_addr_min,
        } => nat::encode(*kind, *family, *reg_addr_min),
        Expr::Unknown { name, .. } => Err(BuildError::Unsupported(name.clone())),
    }
}

/// Decode one expression named `name` from its data attributes `d` (raw: their bytes). A kind
/// nftmesh does not model is kept as [`Expr::Unknown`].
pub(crate) fn decode(name: &str, raw: &[u8], d: &Attrs<'_>) -> Result<Expr, String> {
    match name {
        "meta" => meta::decode(d),
        "ct" => ct::decode(d),
        "payload" => payload::decode(d),
        "cmp" => cmp::decode(d),
        "range" => range::decode(d),
        "bitwise" => bitwise::decode(d),
        "byteorder" => byteorder::decode(d),
        "lookup" => lookup::decode(d),
        "immediate" => immediate::decode(d),
        "counter" => Ok(Expr::Counter),
        "log" => log::decode(d),
        "redir" => redir::decode(d),
        "tproxy" => tproxy::decode(d),
        "socket" => socket::decode(d),
        "nat" => nat::decode(d),
        other => Ok(Expr::Unknown {
            name: other.to_string(),
            raw: raw.to_vec(),
        }),
    }
}

/// The bytes of `e`'s data attributes as the encoder writes them.
pub(crate) fn body_len(e: &Expr) -> usize {
    match e {
        Expr::Meta { .. } | Expr::MetaSet { .. } => meta::LEN,
        Expr::Ct { .. } | Expr::CtSet { .. } => ct::LEN,
        Expr::Payload { .. } => payload::LEN,
        Expr::Cmp { data, .. } => cmp::len(data.len()),
        Expr::Range { from, to, .. } => range::len(from.len(), to.len()),
        Expr::Bitwise { mask, xor, .. } => bitwise::len(mask.len(), xor.len()),
        Expr::Byteorder { .. } => byteorder::LEN,
        Expr::Lookup {
            set,
            set_id,
            invert,
            ..
        } => lookup::len(set.len(), set_id.is_some(), *invert),
        Expr::Immediate { data, .. } => immediate::data_len(data.len()),
        Expr::Verdict { chain, .. } => immediate::verdict_len(chain.as_ref().map(String::len)),
        Expr::Counter => counter::LEN,
        Expr::Log { prefix } => log::len(prefix.as_ref().map(String::len)),
        Expr::Redir {
            reg_proto_min,
            flags,
        } => redir::len(reg_proto_min.is_some(), *flags != 0),
        Expr::Tproxy {
            reg_addr, reg_port, ..
        } => tproxy::len(reg_addr.is_some(), reg_port.is_some()),
        Expr::Socket { .. } => socket::LEN,
        Expr::Nat { reg_addr_min, .. } => nat::len(reg_addr_min.is_some()),
        Expr::Unknown { raw, .. } => raw.len(),
    }
}

/// The bytes of a string attribute of `len` bytes, when present.
pub(crate) fn opt_strz(len: Option<usize>) -> usize {
    len.map_or(0, strz)
}
