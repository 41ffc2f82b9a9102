//! `-m mark` and `-m connmark`: `--mark VALUE[/MASK]`, on the packet's or the connection's mark.

use super::helpers::value_mask;
use super::RuleParser;
use crate::ast::IptMatch;
use crate::error::ParseError;
use crate::lex::Token;

/// `--mark VALUE[/MASK]` of `module` (`mark` or `connmark`).
pub(super) fn read(
    p: &mut RuleParser<'_>,
    t: &Token,
    negate: bool,
    module: &str,
) -> Result<IptMatch, ParseError> {
    let v = p.next(t)?;
    let (value, mask) = value_mask(&v)?;
    Ok(if module == "mark" {
        IptMatch::Mark {
            negate,
            value,
            mask,
        }
    } else {
        IptMatch::Connmark {
            negate,
            value,
            mask,
        }
    })
}
