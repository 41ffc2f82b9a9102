//! `tproxy`: hand the packet to a local transparent socket (`tproxy FAMILY [addr reg]
//! [port reg]`).

use super::{opt_u32, u32_of, Attrs};
use crate::codec::bounds::BuildError;
use crate::codec::ir::Expr;
use crate::codec::nftnl::attr::{self, TPROXY_FAMILY, TPROXY_REG_ADDR, TPROXY_REG_PORT};
use crate::codec::nftnl::{Built, ExprBuilder};
use crate::codec::sys::*;

pub(super) fn encode(
    family: u32,
    reg_addr: Option<u32>,
    reg_port: Option<u32>,
) -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Tproxy>::new()?;
    b.u32(TPROXY_FAMILY, family);
    if let Some(r) = reg_addr {
        b.u32(TPROXY_REG_ADDR, r);
    }
    if let Some(r) = reg_port {
        b.u32(TPROXY_REG_PORT, r);
    }
    Ok(b.finish())
}

pub(super) fn decode(d: &Attrs<'_>) -> Result<Expr, String> {
    Ok(Expr::Tproxy {
        family: u32_of(d, NFTA_TPROXY_FAMILY, "tproxy", "family")?,
        reg_addr: opt_u32(d, NFTA_TPROXY_REG_ADDR),
        reg_port: opt_u32(d, NFTA_TPROXY_REG_PORT),
    })
}
