//! A local socket: `-m socket --transparent` and `-m owner --socket-exists`.

use super::helpers::err;
use super::RuleParser;
use crate::ast::IptMatch;
use crate::error::{ParseError, ParseErrorKind as K};
use crate::lex::Token;

/// `--transparent` (of `-m socket`): a transparent socket; it cannot be negated.
pub(super) fn transparent(
    _p: &mut RuleParser<'_>,
    t: &Token,
    negate: bool,
    _module: &str,
) -> Result<IptMatch, ParseError> {
    if negate {
        return Err(err(t, K::BadNegation));
    }
    Ok(IptMatch::SocketTransparent)
}

/// `--socket-exists` (of `-m owner`): the packet has a local socket.
pub(super) fn exists(
    _p: &mut RuleParser<'_>,
    _t: &Token,
    negate: bool,
    _module: &str,
) -> Result<IptMatch, ParseError> {
    Ok(IptMatch::SocketExists { negate })
}
