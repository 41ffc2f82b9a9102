//! `bitwise`: mask and flip a register (`bitwise reg = (reg & MASK) ^ XOR`).

use super::{data_value, u32_of, Attrs};
use crate::codec::bounds::BuildError;
use crate::codec::ir::Expr;
use crate::codec::nftnl::attr::{
    self, BITWISE_DREG, BITWISE_LEN, BITWISE_MASK, BITWISE_SREG, BITWISE_XOR,
};
use crate::codec::nftnl::{Built, ExprBuilder};
use crate::codec::sys::*;

pub(super) fn encode(
    sreg: u32,
    dreg: u32,
    len: u32,
    mask: &[u8],
    xor: &[u8],
) -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Bitwise>::new()?;
    b.u32(BITWISE_SREG, sreg);
    b.u32(BITWISE_DREG, dreg);
    b.u32(BITWISE_LEN, len);
    b.data(BITWISE_MASK, mask)?;
    b.data(BITWISE_XOR, xor)?;
    Ok(b.finish())
}

pub(super) fn decode(d: &Attrs<'_>) -> Result<Expr, String> {
    let n = "bitwise";
    Ok(Expr::Bitwise {
        sreg: u32_of(d, NFTA_BITWISE_SREG, n, "sreg")?,
        dreg: u32_of(d, NFTA_BITWISE_DREG, n, "dreg")?,
        len: u32_of(d, NFTA_BITWISE_LEN, n, "len")?,
        mask: data_value(d, NFTA_BITWISE_MASK, n, "mask")?,
        xor: data_value(d, NFTA_BITWISE_XOR, n, "xor")?,
    })
}
