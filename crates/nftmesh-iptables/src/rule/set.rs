//! `-m set --match-set NAME src|dst`: a lookup in a named ipset.

use super::helpers::err;
use super::RuleParser;
use crate::ast::IptMatch;
use crate::error::{ParseError, ParseErrorKind as K};
use crate::lex::Token;
use nftmesh_model::expr::Direction;

/// The longest set name ipset takes.
const NAME_MAX: usize = 31;

/// `--match-set NAME FLAGS`, one dimension only.
pub(super) fn read(
    p: &mut RuleParser<'_>,
    t: &Token,
    negate: bool,
    _module: &str,
) -> Result<IptMatch, ParseError> {
    let name = p.next(t)?;
    let flags = p.next(t)?;
    let ok = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    if name.text.is_empty() || name.text.len() > NAME_MAX || !name.text.chars().all(ok) {
        return Err(err(&name, K::BadSetName));
    }
    let dir = match flags.text.as_str() {
        "src" => Direction::Src,
        "dst" => Direction::Dst,
        // Several dimensions (`src,dst`) name a set of tuples.
        _ => return Err(err(&flags, K::UnsupportedOption)),
    };
    Ok(IptMatch::IpSet {
        dir,
        negate,
        name: name.text,
    })
}
