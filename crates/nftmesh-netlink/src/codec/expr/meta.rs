//! `meta`: load a packet's metadata (`meta load KEY => reg`) or set it (`meta set KEY with reg`).

use super::{opt_u32, u32_of, Attrs};
use crate::codec::bounds::BuildError;
use crate::codec::ir::Expr;
use crate::codec::nftnl::attr::{self, META_DREG, META_KEY, META_SREG};
use crate::codec::nftnl::{Built, ExprBuilder};
use crate::codec::sys::*;

pub(super) fn encode_load(key: u32, dreg: u32) -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Meta>::new()?;
    b.u32(META_KEY, key);
    b.u32(META_DREG, dreg);
    Ok(b.finish())
}

pub(super) fn encode_set(key: u32, sreg: u32) -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Meta>::new()?;
    b.u32(META_KEY, key);
    b.u32(META_SREG, sreg);
    Ok(b.finish())
}

pub(super) fn decode(d: &Attrs<'_>) -> Result<Expr, String> {
    let key = u32_of(d, NFTA_META_KEY, "meta", "key")?;
    Ok(match opt_u32(d, NFTA_META_DREG) {
        Some(dreg) => Expr::Meta { key, dreg },
        None => Expr::MetaSet {
            key,
            sreg: u32_of(d, NFTA_META_SREG, "meta", "sreg")?,
        },
    })
}
