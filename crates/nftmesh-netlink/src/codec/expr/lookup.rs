//! `lookup`: whether a register's value is in a set (`lookup reg set NAME`), or not.

use super::{opt_u32, u32_of, Attrs};
use crate::codec::bounds::BuildError;
use crate::codec::ir::Expr;
use crate::codec::nftnl::attr::{self, LOOKUP_FLAGS, LOOKUP_SET, LOOKUP_SET_ID, LOOKUP_SREG};
use crate::codec::nftnl::{Built, ExprBuilder};
use crate::codec::sys::*;

pub(super) fn encode(
    sreg: u32,
    set: &str,
    set_id: Option<u32>,
    invert: bool,
) -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Lookup>::new()?;
    b.u32(LOOKUP_SREG, sreg);
    b.name(LOOKUP_SET, "set", set)?;
    if let Some(id) = set_id {
        b.u32(LOOKUP_SET_ID, id);
    }
    if invert {
        b.u32(LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
    }
    Ok(b.finish())
}

pub(super) fn decode(d: &Attrs<'_>) -> Result<Expr, String> {
    Ok(Expr::Lookup {
        sreg: u32_of(d, NFTA_LOOKUP_SREG, "lookup", "sreg")?,
        set: d
            .string(NFTA_LOOKUP_SET)
            .ok_or_else(|| "expression lookup: missing set".to_string())?,
        set_id: opt_u32(d, NFTA_LOOKUP_SET_ID),
        invert: opt_u32(d, NFTA_LOOKUP_FLAGS).unwrap_or(0) & NFT_LOOKUP_F_INV != 0,
    })
}
