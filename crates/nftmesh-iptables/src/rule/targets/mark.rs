//! `-j MARK`: set the packet's mark, as `--set-mark`, `--set-xmark`, `--and-mark`, `--or-mark`
//! or `--xor-mark`, all reduced to one value and mask.

use super::{Extension, Given};
use crate::ast::Target;
use crate::error::{ParseError, ParseErrorKind as K};
use crate::rule::helpers::{err, parse_u32, value_mask};

/// The extension.
pub(super) const EXTENSION: Extension = Extension {
    name: "MARK",
    blank: || Target::Mark { value: 0, mask: 0 },
    options: &[
        "--set-mark",
        "--set-xmark",
        "--and-mark",
        "--or-mark",
        "--xor-mark",
    ],
    flags: &[],
    finish,
};

/// Exactly one of the options.
fn finish(tgt: &mut Target, g: &Given<'_>) -> Result<(), ParseError> {
    let [(o, v)] = g.opts else {
        return Err(g.err(K::BadTarget(
            "MARK needs exactly one of --set-mark, --set-xmark, --and-mark, --or-mark, --xor-mark",
        )));
    };
    let Some(v) = v else {
        return Err(err(o, K::MissingValue));
    };
    let (value, mask) = match o.text.as_str() {
        "--set-xmark" => value_mask(v)?,
        "--set-mark" => {
            let (val, m) = value_mask(v)?;
            (val, val | m)
        }
        _ => {
            let m = parse_u32(&v.text).ok_or_else(|| err(v, K::BadNumber))?;
            match o.text.as_str() {
                "--and-mark" => (0, !m),
                "--or-mark" => (m, m),
                _ => (m, 0),
            }
        }
    };
    *tgt = Target::Mark { value, mask };
    Ok(())
}
