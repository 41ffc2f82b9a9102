//! `byteorder`: convert a register between host and network order (`byteorder reg = hton(reg,
//! SIZE, LEN)`).

use super::{u32_of, Attrs};
use crate::codec::bounds::BuildError;
use crate::codec::ir::Expr;
use crate::codec::nftnl::attr::{
    self, BYTEORDER_DREG, BYTEORDER_LEN, BYTEORDER_OP, BYTEORDER_SIZE, BYTEORDER_SREG,
};
use crate::codec::nftnl::{Built, ExprBuilder};
use crate::codec::sys::*;

pub(super) fn encode(
    sreg: u32,
    dreg: u32,
    op: u32,
    len: u32,
    size: u32,
) -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Byteorder>::new()?;
    b.u32(BYTEORDER_SREG, sreg);
    b.u32(BYTEORDER_DREG, dreg);
    b.u32(BYTEORDER_OP, op);
    b.u32(BYTEORDER_LEN, len);
    b.u32(BYTEORDER_SIZE, size);
    Ok(b.finish())
}

pub(super) fn decode(d: &Attrs<'_>) -> Result<Expr, String> {
    let n = "byteorder";
    Ok(Expr::Byteorder {
        sreg: u32_of(d, NFTA_BYTEORDER_SREG, n, "sreg")?,
        dreg: u32_of(d, NFTA_BYTEORDER_DREG, n, "dreg")?,
        op: u32_of(d, NFTA_BYTEORDER_OP, n, "op")?,
        len: u32_of(d, NFTA_BYTEORDER_LEN, n, "len")?,
        size: u32_of(d, NFTA_BYTEORDER_SIZE, n, "size")?,
    })
}
