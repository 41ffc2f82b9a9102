//! `range`: compare a register with an inclusive range (`range OP reg FROM TO`).

use super::{data_value, u32_of, Attrs};
use crate::codec::bounds::BuildError;
use crate::codec::ir::Expr;
use crate::codec::nftnl::attr::{self, RANGE_FROM, RANGE_OP, RANGE_SREG, RANGE_TO};
use crate::codec::nftnl::{Built, ExprBuilder};
use crate::codec::sys::*;

pub(super) fn encode(sreg: u32, op: u32, from: &[u8], to: &[u8]) -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Range>::new()?;
    b.u32(RANGE_SREG, sreg);
    b.u32(RANGE_OP, op);
    b.data(RANGE_FROM, from)?;
    b.data(RANGE_TO, to)?;
    Ok(b.finish())
}

pub(super) fn decode(d: &Attrs<'_>) -> Result<Expr, String> {
    let n = "range";
    Ok(Expr::Range {
        sreg: u32_of(d, NFTA_RANGE_SREG, n, "sreg")?,
        op: u32_of(d, NFTA_RANGE_OP, n, "op")?,
        from: data_value(d, NFTA_RANGE_FROM_DATA, n, "from")?,
        to: data_value(d, NFTA_RANGE_TO_DATA, n, "to")?,
    })
}
