//! `counter`: count packets and bytes (written with both counts zero).

use crate::codec::bounds::BuildError;
use crate::codec::nftnl::attr::{self, CTR_BYTES, CTR_PACKETS};
use crate::codec::nftnl::{Built, ExprBuilder};

pub(super) fn encode() -> Result<Built, BuildError> {
    let mut b = ExprBuilder::<attr::Counter>::new()?;
    b.u64(CTR_PACKETS, 0);
    b.u64(CTR_BYTES, 0);
    Ok(b.finish())
}
