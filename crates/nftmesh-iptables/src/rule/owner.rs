//! `-m owner`: `--uid-owner` and `--gid-owner`, an id, a range of ids or a name
//! (`--socket-exists`, also of this module, is read in [`super::socket`]).

use super::helpers::err;
use super::RuleParser;
use crate::ast::{IptMatch, OwnerKind};
use crate::error::{ParseError, ParseErrorKind as K};
use crate::lex::Token;
use nftmesh_model::expr::Owner;

/// The options read here.
pub(super) const OPTIONS: &[&str] = &["--uid-owner", "--gid-owner"];

/// `--uid-owner OWNER` or `--gid-owner OWNER`.
pub(super) fn read(
    p: &mut RuleParser<'_>,
    t: &Token,
    negate: bool,
    _module: &str,
) -> Result<IptMatch, ParseError> {
    let v = p.next(t)?;
    let kind = if t.text == "--uid-owner" {
        OwnerKind::Uid
    } else {
        OwnerKind::Gid
    };
    Ok(IptMatch::Owner {
        kind,
        negate,
        owner: owner(&v)?,
    })
}

/// `ID`, `FIRST-LAST` or a user or group name.
fn owner(t: &Token) -> Result<Owner, ParseError> {
    let s = t.text.as_str();
    // `1000-2000` is a range; a name may hold a dash too (`istio-proxy`).
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if let Some((a, b)) = s.split_once('-').filter(|(a, _)| digits(a)) {
        return match (a.parse::<u32>(), b.parse::<u32>()) {
            (Ok(a), Ok(b)) if a <= b => Ok(Owner::Range(a, b)),
            _ => Err(err(t, K::BadNumber)),
        };
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(Owner::Id).map_err(|_| err(t, K::BadNumber));
    }
    let name_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if name_ok {
        Ok(Owner::Name(s.to_string()))
    } else {
        Err(err(t, K::BadNumber))
    }
}
