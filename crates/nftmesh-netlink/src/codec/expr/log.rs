//! `log`: log the packet, with an optional prefix.

use super::Attrs;
use crate::codec::bounds::{BuildError, Limit};
use crate::codec::ir::Expr;
use crate::codec::nftnl::attr::{self, LOG_PREFIX};
use crate::codec::nftnl::{Built, ExprBuilder};
use crate::codec::sys::*;

pub(super) fn encode(prefix: Option<&str>) -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Log>::new()?;
    if let Some(p) = prefix {
        b.string(LOG_PREFIX, "log prefix", p, Limit::LogPrefix)?;
    }
    Ok(b.finish())
}

pub(super) fn decode(d: &Attrs<'_>) -> Result<Expr, String> {
    Ok(Expr::Log {
        prefix: d.string(NFTA_LOG_PREFIX),
    })
}
