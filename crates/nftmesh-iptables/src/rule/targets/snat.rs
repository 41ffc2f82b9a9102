//! `-j SNAT --to-source ADDR`: one source address (ranges, ports and the other options are
//! refused).

use super::{ip, Extension, Given};
use crate::ast::Target;
use crate::error::{ParseError, ParseErrorKind as K};
use crate::rule::helpers::err;
use nftmesh_model::expr::IpVersion;
use std::net::IpAddr;

/// The extension.
pub(super) const EXTENSION: Extension = Extension {
    name: "SNAT",
    blank: || Target::Snat {
        to: IpAddr::from([0u8; 4]),
    },
    options: &["--to-source", "--random", "--random-fully", "--persistent"],
    flags: &["--random", "--random-fully", "--persistent"],
    finish,
};

/// `--to-source` only, and required: one address of the rule's IP version.
fn finish(tgt: &mut Target, g: &Given<'_>) -> Result<(), ParseError> {
    g.only("--to-source")?;
    let v = g
        .get("--to-source")
        .ok_or_else(|| g.err(K::BadTarget("SNAT needs --to-source")))?;
    // One address: ranges (`A-B`) and ports (`A:P`) are not supported.
    let to = ip(&v, "--to-source")?;
    if IpVersion::of(to) != g.family {
        return Err(err(&v, K::BadAddress("--to-source")));
    }
    *tgt = Target::Snat { to };
    Ok(())
}
