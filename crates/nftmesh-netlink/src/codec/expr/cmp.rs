//! `cmp`: compare a register with a value (`cmp OP reg DATA`).

use super::{data_value, u32_of, Attrs};
use crate::codec::bounds::BuildError;
use crate::codec::ir::Expr;
use crate::codec::nftnl::attr::{self, CMP_DATA, CMP_OP, CMP_SREG};
use crate::codec::nftnl::{Built, ExprBuilder};
use crate::codec::sys::*;

pub(super) fn encode(sreg: u32, op: u32, data: &[u8]) -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Cmp>::new()?;
    b.u32(CMP_SREG, sreg);
    b.u32(CMP_OP, op);
    b.data(CMP_DATA, data)?;
    Ok(b.finish())
}

pub(super) fn decode(d: &Attrs<'_>) -> Result<Expr, String> {
    let n = "cmp";
    Ok(Expr::Cmp {
        sreg: u32_of(d, NFTA_CMP_SREG, n, "sreg")?,
        op: u32_of(d, NFTA_CMP_OP, n, "op")?,
        data: data_value(d, NFTA_CMP_DATA, n, "data")?,
    })
}
