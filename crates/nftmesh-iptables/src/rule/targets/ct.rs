//! `-j CT --zone ZONE`: the conntrack zone (the other options of CT are refused).

use super::{Extension, Given};
use crate::ast::Target;
use crate::error::{ParseError, ParseErrorKind as K};
use crate::rule::helpers::err;

/// The extension.
pub(super) const EXTENSION: Extension = Extension {
    name: "CT",
    blank: || Target::CtZone(0),
    options: &[
        "--zone",
        "--notrack",
        "--helper",
        "--ctevents",
        "--expevents",
        "--timeout",
        "--zone-orig",
        "--zone-reply",
    ],
    flags: &["--notrack"],
    finish,
};

/// `--zone` only, and required.
fn finish(tgt: &mut Target, g: &Given<'_>) -> Result<(), ParseError> {
    g.only("--zone")?;
    let v = g
        .get("--zone")
        .ok_or_else(|| g.err(K::BadTarget("CT needs --zone")))?;
    let z = v.text.parse::<u16>().map_err(|_| err(&v, K::BadNumber))?;
    *tgt = Target::CtZone(z);
    Ok(())
}
