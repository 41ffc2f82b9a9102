//! `redir`: NAT to a local port (`redir [proto_min reg] flags`).

use super::{opt_u32, Attrs};
use crate::codec::bounds::BuildError;
use crate::codec::ir::Expr;
use crate::codec::nftnl::attr::{self, REDIR_FLAGS, REDIR_REG_PROTO_MIN};
use crate::codec::nftnl::{Built, ExprBuilder};
use crate::codec::sys::*;

pub(super) fn encode(reg_proto_min: Option<u32>, flags: u32) -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Redir>::new()?;
    if let Some(r) = reg_proto_min {
        b.u32(REDIR_REG_PROTO_MIN, r);
    }
    if flags != 0 {
        b.u32(REDIR_FLAGS, flags);
    }
    Ok(b.finish())
}

pub(super) fn decode(d: &Attrs<'_>) -> Result<Expr, String> {
    Ok(Expr::Redir {
        reg_proto_min: opt_u32(d, NFTA_REDIR_REG_PROTO_MIN),
        flags: opt_u32(d, NFTA_REDIR_FLAGS).unwrap_or(0),
    })
}
