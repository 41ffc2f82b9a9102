//! `immediate`: load a value into a register (`immediate reg DATA`), or set the verdict
//! (`immediate reg 0 VERDICT [chain]`: accept, drop, return, jump, goto).

use super::{u32_of, Attrs};
use crate::codec::bounds::BuildError;
use crate::codec::ir::Expr;
use crate::codec::nftnl::attr::{self, IMM_CHAIN, IMM_DATA, IMM_DREG, IMM_VERDICT};
use crate::codec::nftnl::{Built, ExprBuilder};
use crate::codec::sys::*;
use crate::codec::wire::attrs;

pub(super) fn encode_data(dreg: u32, data: &[u8]) -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Immediate>::new()?;
    b.u32(IMM_DREG, dreg);
    b.data(IMM_DATA, data)?;
    Ok(b.finish())
}

pub(super) fn encode_verdict(code: i32, chain: Option<&str>) -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Immediate>::new()?;
    b.u32(IMM_DREG, NFT_REG_VERDICT);
    b.verdict(IMM_VERDICT, code as u32);
    if let Some(c) = chain {
        b.verdict_chain(IMM_CHAIN, "jump target chain", c)?;
    }
    Ok(b.finish())
}

pub(super) fn decode(d: &Attrs<'_>) -> Result<Expr, String> {
    let n = "immediate";
    let dreg = u32_of(d, NFTA_IMMEDIATE_DREG, n, "dreg")?;
    let nested = d
        .get(NFTA_IMMEDIATE_DATA)
        .ok_or_else(|| format!("expression {n}: missing data"))?;
    let inner = attrs(nested).map_err(|e| format!("expression {n}: {e}"))?;
    if dreg == NFT_REG_VERDICT {
        let v = inner
            .get(NFTA_DATA_VERDICT)
            .ok_or_else(|| format!("expression {n}: no verdict"))?;
        let v = attrs(v).map_err(|e| format!("expression {n} verdict: {e}"))?;
        Ok(Expr::Verdict {
            code: u32_of(&v, NFTA_VERDICT_CODE, n, "verdict code")? as i32,
            chain: v.string(NFTA_VERDICT_CHAIN),
        })
    } else {
        Ok(Expr::Immediate {
            dreg,
            data: inner
                .get(NFTA_DATA_VALUE)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| format!("expression {n}: no value"))?,
        })
    }
}
