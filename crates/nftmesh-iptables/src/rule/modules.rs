//! Match modules: loading them (`-m NAME`, or `-p tcp`/`-p udp` implicitly), handing each
//! `--option` to the most recently loaded module that has it, and the checks on the modules a
//! whole rule loaded.

use super::helpers::err;
use super::{comment, conntrack, mark, multiport, owner, set, socket, tcp_udp, RuleParser};
use crate::ast::IptMatch;
use crate::error::{ParseError, ParseErrorKind as K};
use crate::lex::Token;
use nftmesh_model::expr::L4Proto;

/// The modules `-m` loads.
const MODULES: [&str; 11] = [
    "tcp",
    "udp",
    "multiport",
    "owner",
    "mark",
    "connmark",
    "conntrack",
    "state",
    "socket",
    "set",
    "comment",
];

/// A loaded match module and whether an option of it was seen.
pub(super) struct Module {
    /// The module's name.
    pub(super) name: String,
    /// The token that loaded it (`-m`'s value, or `-p`'s).
    pub(super) tok: Token,
    /// Whether one of its options was given.
    pub(super) used: bool,
    /// Loaded by `-p tcp`/`-p udp` rather than `-m`.
    pub(super) implicit: bool,
}

/// Reads the value(s) of a match option: the parser, the option (after any `!`), whether it is
/// negated, and the name of the module it belongs to.
type Read = fn(&mut RuleParser<'_>, &Token, bool, &str) -> Result<IptMatch, ParseError>;

/// Match options: their names, the modules they may belong to, and how they are read.
const OPTIONS: [(&[&str], &[&str], Read); 10] = [
    (tcp_udp::OPTIONS, tcp_udp::MODULES, tcp_udp::read),
    (multiport::OPTIONS, &["multiport"], multiport::read),
    (owner::OPTIONS, &["owner"], owner::read),
    (&["--socket-exists"], &["owner"], socket::exists),
    (&["--match-set"], &["set"], set::read),
    (&["--mark"], &["mark", "connmark"], mark::read),
    (&["--ctstate"], &["conntrack"], conntrack::read),
    (&["--state"], &["state"], conntrack::read),
    (&["--transparent"], &["socket"], socket::transparent),
    (&["--comment"], &["comment"], comment::read),
];

/// `-m NAME`: load a match module.
pub(super) fn load(p: &mut RuleParser<'_>, t: &Token, negate: bool) -> Result<(), ParseError> {
    if negate {
        return Err(err(t, K::BadNegation));
    }
    let v = p.next(t)?;
    if !MODULES.contains(&v.text.as_str()) {
        return Err(err(&v, K::UnknownMatch));
    }
    p.modules.push(Module {
        name: v.text.clone(),
        tok: v,
        used: false,
        implicit: false,
    });
    Ok(())
}

/// A `--option` that is not the target's: read it as an option of the module that owns it.
pub(super) fn option(p: &mut RuleParser<'_>, t: &Token, negate: bool) -> Result<(), ParseError> {
    let opt = t.text.as_str();
    let Some(&(_, wanted, read)) = OPTIONS.iter().find(|(names, _, _)| names.contains(&opt)) else {
        return Err(err(t, K::UnsupportedOption));
    };
    let Some(m) = p
        .modules
        .iter_mut()
        .rev()
        .find(|m| wanted.contains(&m.name.as_str()))
    else {
        // The port options' modules are loaded by `-p tcp`/`-p udp`.
        let kind = if wanted == tcp_udp::MODULES {
            K::NeedsProtocol
        } else {
            K::UnsupportedOption
        };
        return Err(err(t, kind));
    };
    m.used = true;
    let module = m.name.clone();
    let node = read(p, t, negate, &module)?;
    p.push(node, t);
    Ok(())
}

/// Every module but the protocol ones needs one of its options.
pub(super) fn check_used(modules: &[Module]) -> Result<(), ParseError> {
    match modules
        .iter()
        .find(|m| !m.used && !m.implicit && !matches!(m.name.as_str(), "tcp" | "udp"))
    {
        Some(m) => Err(err(&m.tok, K::MissingValue)),
        None => Ok(()),
    }
}

/// Port modules loaded by `-m` need a non-negated `-p tcp` or `-p udp` matching them.
pub(super) fn check_protocol(
    modules: &[Module],
    rule_proto: Option<L4Proto>,
) -> Result<(), ParseError> {
    for m in modules {
        if !m.implicit && matches!(m.name.as_str(), "tcp" | "udp" | "multiport") {
            let want = match m.name.as_str() {
                "tcp" => Some(L4Proto::Tcp),
                "udp" => Some(L4Proto::Udp),
                _ => None,
            };
            if rule_proto.is_none() || (want.is_some() && want != rule_proto) {
                return Err(err(&m.tok, K::NeedsProtocol));
            }
        }
    }
    Ok(())
}
