//! `-m multiport`: `--dports` and `--sports`, a comma list of ports and ranges.

use super::helpers::{err, port_range};
use super::{tcp_udp, RuleParser};
use crate::ast::{IptMatch, PortModule};
use crate::error::{ParseError, ParseErrorKind as K};
use crate::lex::Token;
use nftmesh_model::expr::L4Proto;

/// The options of the module.
pub(super) const OPTIONS: &[&str] = &[
    "--dports",
    "--destination-ports",
    "--sports",
    "--source-ports",
];

/// The most a list may weigh: a port counts 1, a range 2, as in xt_multiport.
const MAX_WEIGHT: usize = 15;

/// `--dports LIST` or `--sports LIST`.
pub(super) fn read(
    p: &mut RuleParser<'_>,
    t: &Token,
    negate: bool,
    _module: &str,
) -> Result<IptMatch, ParseError> {
    let v = p.next(t)?;
    let mut ports = Vec::new();
    let mut weight = 0;
    for part in v.text.split(',') {
        let r = port_range(&v, part)?;
        weight += if r.first == r.last { 1 } else { 2 };
        ports.push(r);
    }
    if weight > MAX_WEIGHT {
        return Err(err(&v, K::BadPort));
    }
    // The protocol is checked once the whole rule is read.
    Ok(IptMatch::Port {
        module: PortModule::Multiport,
        proto: L4Proto::Tcp,
        dir: tcp_udp::direction(t),
        negate,
        ports,
    })
}
