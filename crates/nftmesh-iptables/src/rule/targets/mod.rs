//! The target: `-j TARGET`/`-g CHAIN`, the target's options, and the target each extension
//! makes of its options once the whole rule is read (one module per target that takes
//! options).

mod connmark;
mod ct;
mod log;
mod mark;
mod redirect;
mod snat;
mod tproxy;

use super::helpers::err;
use super::{RuleParser, TARGETS};
use crate::ast::{IptTable, Spanned, Target};
use crate::error::{ParseError, ParseErrorKind as K};
use crate::lex::Token;
use nftmesh_model::expr::{IpVersion, L4Proto};
use std::net::IpAddr;

/// A target extension nftmesh reads.
struct Extension {
    /// Its name after `-j`.
    name: &'static str,
    /// The target before its options are applied.
    blank: fn() -> Target,
    /// The options it takes.
    options: &'static [&'static str],
    /// Those of `options` that take no value.
    flags: &'static [&'static str],
    /// Apply the options to the target.
    finish: fn(&mut Target, &Given<'_>) -> Result<(), ParseError>,
}

/// The targets nftmesh reads; the other names of [`TARGETS`] are refused.
const EXTENSIONS: [Extension; 10] = [
    Extension::plain("ACCEPT", || Target::Accept),
    Extension::plain("DROP", || Target::Drop),
    Extension::plain("RETURN", || Target::Return),
    redirect::EXTENSION,
    tproxy::EXTENSION,
    mark::EXTENSION,
    connmark::EXTENSION,
    ct::EXTENSION,
    log::EXTENSION,
    snat::EXTENSION,
];

impl Extension {
    /// A target without options.
    const fn plain(name: &'static str, blank: fn() -> Target) -> Self {
        Extension {
            name,
            blank,
            options: &[],
            flags: &[],
            finish: |_, _| Ok(()),
        }
    }
}

/// The extension named `name`, if nftmesh reads it.
fn extension(name: &str) -> Option<&'static Extension> {
    EXTENSIONS.iter().find(|e| e.name == name)
}

/// Whether the target named `target` takes option `opt`.
pub(super) fn has_option(target: &str, opt: &str) -> bool {
    extension(target).is_some_and(|e| e.options.contains(&opt))
}

/// `-j TARGET` or `-g CHAIN`: a target, or a jump or goto to a user chain.
pub(super) fn select(p: &mut RuleParser<'_>, t: &Token, negate: bool) -> Result<(), ParseError> {
    if negate {
        return Err(err(t, K::BadNegation));
    }
    let v = p.next(t)?;
    if p.target.is_some() {
        return Err(err(t, K::Duplicate));
    }
    let goto = matches!(t.text.as_str(), "-g" | "--goto");
    let node = if goto || !TARGETS.contains(&v.text.as_str()) {
        user_chain(p.table, &v, goto)?
    } else {
        match extension(&v.text) {
            Some(e) => (e.blank)(),
            None => return Err(err(&v, K::UnknownTarget)),
        }
    };
    let span = v.span;
    p.target = Some((Spanned { node, span }, v.text));
    Ok(())
}

/// A jump (or with `goto`, a goto) to the user chain named by `v`.
fn user_chain(table: &IptTable, v: &Token, goto: bool) -> Result<Target, ParseError> {
    let Some(c) = table.chain(&v.text) else {
        let kind = if goto {
            K::UnknownChain
        } else {
            K::UnknownTarget
        };
        return Err(err(v, kind));
    };
    if c.policy.is_some() {
        return Err(err(v, K::BuiltinChain));
    }
    Ok(if goto {
        Target::Goto(v.text.clone())
    } else {
        Target::Jump(v.text.clone())
    })
}

/// An option `t` of the target given so far; its value, if it takes one, is the next token.
pub(super) fn option(p: &mut RuleParser<'_>, t: &Token, negate: bool) -> Result<(), ParseError> {
    if negate {
        return Err(err(t, K::BadNegation));
    }
    let flag = p
        .target
        .as_ref()
        .and_then(|(_, name)| extension(name))
        .is_some_and(|e| e.flags.contains(&t.text.as_str()));
    let v = if flag { None } else { Some(p.next(t)?) };
    if p.target_opts.iter().any(|(o, _)| o.text == t.text) {
        return Err(err(t, K::Duplicate));
    }
    p.target_opts.push((t.clone(), v));
    Ok(())
}

/// The target once the whole rule is read: its options applied.
pub(super) fn finish(
    target: Option<(Spanned<Target>, String)>,
    opts: &[(Token, Option<Token>)],
    rule_proto: Option<L4Proto>,
    family: IpVersion,
) -> Result<Option<Spanned<Target>>, ParseError> {
    let Some((mut tgt, name)) = target else {
        if let Some((o, _)) = opts.first() {
            return Err(err(o, K::UnsupportedOption));
        }
        return Ok(None);
    };
    if let Some(e) = extension(&name) {
        let given = Given {
            here: Token {
                text: name,
                span: tgt.span,
            },
            opts,
            rule_proto,
            family,
        };
        (e.finish)(&mut tgt.node, &given)?;
    }
    Ok(Some(tgt))
}

/// A target's options as given, and what its checks need to know of the rule.
struct Given<'a> {
    /// The target's name where it was given: errors about the target as a whole point here.
    here: Token,
    /// The options in the order given, each with its value if it takes one.
    opts: &'a [(Token, Option<Token>)],
    /// The rule's protocol, from a non-negated `-p tcp` or `-p udp`.
    rule_proto: Option<L4Proto>,
    /// The IP version of the rule.
    family: IpVersion,
}

impl Given<'_> {
    /// The value of option `o`, if it was given with one.
    fn get(&self, o: &str) -> Option<Token> {
        self.opts
            .iter()
            .find(|(t, _)| t.text == o)
            .and_then(|(_, v)| v.clone())
    }

    /// Whether option `o` was given.
    fn has(&self, o: &str) -> bool {
        self.opts.iter().any(|(t, _)| t.text == o)
    }

    /// Refuse the first option given that is not `allowed`.
    fn only(&self, allowed: &str) -> Result<(), ParseError> {
        match self.opts.iter().find(|(t, _)| t.text != allowed) {
            Some((t, _)) => Err(err(t, K::UnsupportedOption)),
            None => Ok(()),
        }
    }

    /// The error `kind` at the target's name.
    fn err(&self, kind: K) -> ParseError {
        err(&self.here, kind)
    }

    /// Refuse a rule without a port protocol: the target needs one.
    fn needs_protocol(&self) -> Result<(), ParseError> {
        match self.rule_proto {
            Some(_) => Ok(()),
            None => Err(self.err(K::NeedsProtocol)),
        }
    }
}

/// An address a target's option gives (`--on-ip`, `--to-source`).
fn ip(v: &Token, opt: &'static str) -> Result<IpAddr, ParseError> {
    v.text.parse().map_err(|_| err(v, K::BadAddress(opt)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_extension_is_a_reserved_target_and_its_flags_are_its_options() {
        for e in &EXTENSIONS {
            assert!(TARGETS.contains(&e.name), "{} is not in TARGETS", e.name);
            for f in e.flags {
                assert!(
                    e.options.contains(f),
                    "{}: flag {f} is not an option",
                    e.name
                );
            }
        }
    }
}
