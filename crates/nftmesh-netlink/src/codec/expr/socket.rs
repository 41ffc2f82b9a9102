//! `socket`: load a property of the packet's local socket (`socket load KEY => reg`).

use super::{u32_of, Attrs};
use crate::codec::bounds::BuildError;
use crate::codec::ir::Expr;
use crate::codec::nftnl::attr::{self, SOCKET_DREG, SOCKET_KEY};
use crate::codec::nftnl::{Built, ExprBuilder};
use crate::codec::sys::*;

pub(super) fn encode(key: u32, dreg: u32) -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Socket>::new()?;
    b.u32(SOCKET_KEY, key);
    b.u32(SOCKET_DREG, dreg);
    Ok(b.finish())
}

pub(super) fn decode(d: &Attrs<'_>) -> Result<Expr, String> {
    Ok(Expr::Socket {
        key: u32_of(d, NFTA_SOCKET_KEY, "socket", "key")?,
        dreg: u32_of(d, NFTA_SOCKET_DREG, "socket", "dreg")?,
    })
}
