//! `nat`: source or destination NAT to an address held in a register (`nat snat ip addr_min
//! reg 1`, as `nft` writes `snat ip to ADDR`).

use super::{opt_u32, u32_of, Attrs};
use crate::codec::bounds::BuildError;
use crate::codec::ir::Expr;
use crate::codec::nftnl::attr::{self, NAT_FAMILY, NAT_REG_ADDR_MIN, NAT_TYPE};
use crate::codec::nftnl::{Built, ExprBuilder};
use crate::codec::sys::*;

pub(super) fn encode(
    kind: u32,
    family: u32,
    reg_addr_min: Option<u32>,
) -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Nat>::new()?;
    b.u32(NAT_TYPE, kind);
    b.u32(NAT_FAMILY, family);
    if let Some(r) = reg_addr_min {
        b.u32(NAT_REG_ADDR_MIN, r);
    }
    Ok(b.finish())
}

pub(super) fn decode(d: &Attrs<'_>) -> Result<Expr, String> {
    Ok(Expr::Nat {
        kind: u32_of(d, NFTA_NAT_TYPE, "nat", "type")?,
        family: u32_of(d, NFTA_NAT_FAMILY, "nat", "family")?,
        reg_addr_min: opt_u32(d, NFTA_NAT_REG_ADDR_MIN),
    })
}
