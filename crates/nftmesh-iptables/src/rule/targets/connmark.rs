//! `-j CONNMARK`: `--save-mark` and `--restore-mark` between the packet's and the connection's
//! mark, or `--set-mark`/`--set-xmark` on the connection; masks only all ones.

use super::{Extension, Given};
use crate::ast::Target;
use crate::error::{ParseError, ParseErrorKind as K};
use crate::lex::Token;
use crate::rule::helpers::{err, parse_u32, value_mask};

/// The extension.
pub(super) const EXTENSION: Extension = Extension {
    name: "CONNMARK",
    blank: || Target::ConnmarkSave,
    options: &[
        "--save-mark",
        "--restore-mark",
        "--set-mark",
        "--set-xmark",
        "--nfmask",
        "--ctmask",
        "--mask",
    ],
    flags: &["--save-mark", "--restore-mark"],
    finish,
};

/// Exactly one mode; masks, if given, all ones; `--set-mark` without masks.
fn finish(tgt: &mut Target, g: &Given<'_>) -> Result<(), ParseError> {
    for mask_opt in ["--nfmask", "--ctmask", "--mask"] {
        if let Some(v) = g.get(mask_opt) {
            if parse_u32(&v.text) != Some(u32::MAX) {
                return Err(err(
                    &v,
                    K::BadTarget("CONNMARK masks other than 0xffffffff are not supported"),
                ));
            }
        }
    }
    let modes: Vec<&(Token, Option<Token>)> = g
        .opts
        .iter()
        .filter(|(t, _)| {
            matches!(
                t.text.as_str(),
                "--save-mark" | "--restore-mark" | "--set-mark" | "--set-xmark"
            )
        })
        .collect();
    let [(o, v)] = modes.as_slice() else {
        return Err(g.err(K::BadTarget(
            "CONNMARK needs exactly one of --save-mark, --restore-mark, --set-mark, --set-xmark",
        )));
    };
    *tgt = mode(o, v.as_ref())?;
    if g.opts.len() != 1 && matches!(tgt, Target::ConnmarkSet { .. }) {
        return Err(g.err(K::BadTarget(
            "CONNMARK --set-mark takes no --nfmask/--ctmask",
        )));
    }
    Ok(())
}

/// The target of mode option `o` with its value `v`.
fn mode(o: &Token, v: Option<&Token>) -> Result<Target, ParseError> {
    Ok(match o.text.as_str() {
        "--save-mark" => Target::ConnmarkSave,
        "--restore-mark" => Target::ConnmarkRestore,
        mode => {
            let Some(v) = v else {
                return Err(err(o, K::MissingValue));
            };
            let (val, m) = value_mask(v)?;
            let mask = if mode == "--set-mark" { val | m } else { m };
            Target::ConnmarkSet { value: val, mask }
        }
    })
}
