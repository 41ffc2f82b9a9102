//! `-m tcp` / `-m udp` (loaded by `-p tcp`/`-p udp` too): `--dport` and `--sport`, one port or
//! one range; and the protocol every port match takes from the rule's `-p`.

use super::helpers::port_range;
use super::RuleParser;
use crate::ast::{IptMatch, PortModule, Spanned};
use crate::error::{ParseError, ParseErrorKind as K};
use crate::lex::Token;
use nftmesh_model::expr::{Direction, L4Proto};

/// The options of these modules.
pub(super) const OPTIONS: &[&str] = &["--dport", "--destination-port", "--sport", "--source-port"];

/// The modules: the option belongs to whichever of them was loaded last.
pub(super) const MODULES: &[&str] = &["tcp", "udp"];

/// `--dport PORTS` or `--sport PORTS` of `module` (`tcp` or `udp`).
pub(super) fn read(
    p: &mut RuleParser<'_>,
    t: &Token,
    negate: bool,
    module: &str,
) -> Result<IptMatch, ParseError> {
    let v = p.next(t)?;
    let proto = if module == "tcp" {
        L4Proto::Tcp
    } else {
        L4Proto::Udp
    };
    Ok(IptMatch::Port {
        module: PortModule::Proto,
        proto,
        dir: direction(t),
        negate,
        ports: vec![port_range(&v, &v.text)?],
    })
}

/// Whether a port option (`--dport`, `--sports`, ...) is about the destination or the source.
pub(super) fn direction(t: &Token) -> Direction {
    if t.text.starts_with("--d") {
        Direction::Dst
    } else {
        Direction::Src
    }
}

/// Give every port match the rule's protocol (`rule_proto`, from a non-negated `-p tcp` or
/// `-p udp`); without one a port match is an error.
pub(super) fn settle_protocol(
    matches: &mut [Spanned<IptMatch>],
    rule_proto: Option<L4Proto>,
) -> Result<(), ParseError> {
    for m in matches {
        if let IptMatch::Port { proto, .. } = &mut m.node {
            match rule_proto {
                Some(p) => *proto = p,
                None => return Err(ParseError::new(m.span, "port", K::NeedsProtocol)),
            }
        }
    }
    Ok(())
}
