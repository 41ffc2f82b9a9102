//! `-j REDIRECT [--to-ports PORT]`: to the local host, on another port.

use super::{Extension, Given};
use crate::ast::Target;
use crate::error::{ParseError, ParseErrorKind as K};
use crate::rule::helpers::{err, port_range};

/// The extension.
pub(super) const EXTENSION: Extension = Extension {
    name: "REDIRECT",
    blank: || Target::Redirect { to_port: None },
    options: &["--to-ports", "--to-port", "--random"],
    flags: &["--random"],
    finish,
};

/// One port (a range is refused); `--random` is not supported.
fn finish(tgt: &mut Target, g: &Given<'_>) -> Result<(), ParseError> {
    if let Some((t, _)) = g.opts.iter().find(|(t, _)| t.text == "--random") {
        return Err(err(t, K::UnsupportedOption));
    }
    if g.has("--to-ports") && g.has("--to-port") {
        return Err(g.err(K::Duplicate));
    }
    if let Some(v) = g.get("--to-ports").or_else(|| g.get("--to-port")) {
        g.needs_protocol()?;
        let r = port_range(&v, &v.text)?;
        if r.first != r.last {
            return Err(err(
                &v,
                K::BadTarget("REDIRECT to a port range is not supported"),
            ));
        }
        *tgt = Target::Redirect {
            to_port: Some(r.first),
        };
    }
    Ok(())
}
