//! `-m comment --comment TEXT`.

use super::helpers::err;
use super::RuleParser;
use crate::ast::IptMatch;
use crate::error::{ParseError, ParseErrorKind as K};
use crate::lex::Token;

/// The longest comment xt_comment takes.
const COMMENT_MAX: usize = 256;

/// `--comment TEXT`; it cannot be negated.
pub(super) fn read(
    p: &mut RuleParser<'_>,
    t: &Token,
    negate: bool,
    _module: &str,
) -> Result<IptMatch, ParseError> {
    let v = p.next(t)?;
    if negate {
        return Err(err(t, K::BadNegation));
    }
    if v.text.len() > COMMENT_MAX {
        return Err(err(&v, K::BadComment));
    }
    p.comments += 1;
    Ok(IptMatch::Comment(v.text))
}
