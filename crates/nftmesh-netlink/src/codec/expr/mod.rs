//! The expression codec, one file per kernel expression kind (as google/nftables keeps
//! them): each file writes its kind through libnftnl's typed builder
//! (`codec::nftnl::ExprBuilder`, which counts the bytes the expression will take in a rule
//! message for [`crate::codec::bounds`] to check before the rule is written) and reads it back
//! from dumped attributes. This module dispatches on [`Expr`]. It uses the writer's builder;
//! the writer only takes built expressions.

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

use crate::codec::bounds::{self, BuildError};
use crate::codec::ir::Expr;
use crate::codec::nftnl::Built;
use crate::codec::sys::NFTA_DATA_VALUE;
use crate::codec::wire::attrs;

/// An expression's decoded data attributes.
pub(crate) use crate::codec::wire::Attrs;

/// A required 32-bit attribute.
pub(crate) fn u32_of(at: &Attrs<'_>, ty: u16, expr: &str, what: &str) -> Result<u32, String> {
    at.be32(ty)
        .ok_or_else(|| format!("expression {expr}: missing or short {what}"))
}

/// An optional 32-bit attribute.
pub(crate) fn opt_u32(at: &Attrs<'_>, ty: u16) -> Option<u32> {
    at.be32(ty)
}

/// The value bytes of a nested `NFTA_DATA_VALUE`.
pub(crate) fn data_value(
    at: &Attrs<'_>,
    ty: u16,
    expr: &str,
    what: &str,
) -> Result<Vec<u8>, String> {
    let nested = at
        .get(ty)
        .ok_or_else(|| format!("expression {expr}: missing {what}"))?;
    let inner = attrs(nested).map_err(|e| format!("expression {expr} {what}: {e}"))?;
    inner
        .get(NFTA_DATA_VALUE)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format!("expression {expr}: {what} holds no value"))
}

/// Build the libnftnl expressions of a rule, in order (a failure frees what was built).
pub(crate) fn encode_all(exprs: &[Expr]) -> Result<Vec<Built>, BuildError> {
    exprs.iter().map(encode).collect()
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

#[cfg(test)]
mod tests;
