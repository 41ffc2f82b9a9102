//! `payload`: load bytes of a header (`payload load LEN @ BASE + OFFSET => reg`).

use super::{u32_of, Attrs};
use crate::codec::bounds::BuildError;
use crate::codec::ir::Expr;
use crate::codec::nftnl::attr::{self, PAYLOAD_BASE, PAYLOAD_DREG, PAYLOAD_LEN, PAYLOAD_OFFSET};
use crate::codec::nftnl::{Built, ExprBuilder};
use crate::codec::sys::*;

pub(super) fn encode(base: u32, offset: u32, len: u32, dreg: u32) -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Payload>::new()?;
    b.u32(PAYLOAD_BASE, base);
    b.u32(PAYLOAD_OFFSET, offset);
    b.u32(PAYLOAD_LEN, len);
    b.u32(PAYLOAD_DREG, dreg);
    Ok(b.finish())
}

pub(super) fn decode(d: &Attrs<'_>) -> Result<Expr, String> {
    let n = "payload";
    Ok(Expr::Payload {
        base: u32_of(d, NFTA_PAYLOAD_BASE, n, "base")?,
        offset: u32_of(d, NFTA_PAYLOAD_OFFSET, n, "offset")?,
        len: u32_of(d, NFTA_PAYLOAD_LEN, n, "len")?,
        dreg: u32_of(d, NFTA_PAYLOAD_DREG, n, "dreg")?,
    })
}
