//! `ct`: load a conntrack field (`ct load KEY => reg`) or set it (`ct set KEY with reg`).

use super::{opt_u32, u32_of, Attrs};
use crate::codec::bounds::BuildError;
use crate::codec::ir::Expr;
use crate::codec::nftnl::attr::{self, CT_DREG, CT_KEY, CT_SREG};
use crate::codec::nftnl::{Built, ExprBuilder};
use crate::codec::sys::*;

pub(super) fn encode_load(key: u32, dreg: u32) -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Ct>::new()?;
    b.u32(CT_KEY, key);
    b.u32(CT_DREG, dreg);
    Ok(b.finish())
}

pub(super) fn encode_set(key: u32, sreg: u32) -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Ct>::new()?;
    b.u32(CT_KEY, key);
    b.u32(CT_SREG, sreg);
    Ok(b.finish())
}

pub(super) fn decode(d: &Attrs<'_>) -> Result<Expr, String> {
    let key = u32_of(d, NFTA_CT_KEY, "ct", "key")?;
    Ok(match opt_u32(d, NFTA_CT_DREG) {
        Some(dreg) => Expr::Ct { key, dreg },
        None => Expr::CtSet {
            key,
            sreg: u32_of(d, NFTA_CT_SREG, "ct", "sreg")?,
        },
    })
}
