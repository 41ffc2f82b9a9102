//! `-j LOG [--log-prefix PREFIX]` (the other options of LOG are refused).

use super::{Extension, Given};
use crate::ast::Target;
use crate::error::{ParseError, ParseErrorKind as K};
use crate::rule::helpers::err;

/// The extension.
pub(super) const EXTENSION: Extension = Extension {
    name: "LOG",
    blank: || Target::Log { prefix: None },
    options: &[
        "--log-prefix",
        "--log-level",
        "--log-tcp-sequence",
        "--log-tcp-options",
        "--log-ip-options",
        "--log-uid",
    ],
    flags: &[
        "--log-tcp-sequence",
        "--log-tcp-options",
        "--log-ip-options",
        "--log-uid",
    ],
    finish,
};

/// The longest prefix the kernel takes.
const PREFIX_MAX: usize = 29;

/// `--log-prefix` only; it is optional.
fn finish(tgt: &mut Target, g: &Given<'_>) -> Result<(), ParseError> {
    g.only("--log-prefix")?;
    if let Some(p) = g.get("--log-prefix") {
        if p.text.len() > PREFIX_MAX {
            return Err(err(
                &p,
                K::BadTarget("LOG prefix longer than 29 characters"),
            ));
        }
        *tgt = Target::Log {
            prefix: Some(p.text),
        };
    }
    Ok(())
}
