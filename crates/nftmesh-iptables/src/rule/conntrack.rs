//! `-m conntrack --ctstate` and `-m state --state`: a comma list of conntrack states.

use super::helpers::err;
use super::RuleParser;
use crate::ast::IptMatch;
use crate::error::{ParseError, ParseErrorKind as K};
use crate::lex::Token;
use nftmesh_model::expr::CtStates;

/// `--ctstate STATES` or `--state STATES`.
pub(super) fn read(
    p: &mut RuleParser<'_>,
    t: &Token,
    negate: bool,
    _module: &str,
) -> Result<IptMatch, ParseError> {
    let v = p.next(t)?;
    Ok(IptMatch::CtState {
        negate,
        states: states(&v)?,
    })
}

/// `STATE[,STATE...]`.
fn states(t: &Token) -> Result<CtStates, ParseError> {
    let mut s = CtStates::default();
    for part in t.text.split(',') {
        s = s.union(match part {
            "INVALID" => CtStates::INVALID,
            "NEW" => CtStates::NEW,
            "ESTABLISHED" => CtStates::ESTABLISHED,
            "RELATED" => CtStates::RELATED,
            "UNTRACKED" => CtStates::UNTRACKED,
            _ => return Err(err(t, K::BadState)),
        });
    }
    Ok(s)
}
