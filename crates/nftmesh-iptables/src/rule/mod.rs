//! One rule's options (everything after `-A CHAIN`): matches, match modules and the target
//! with its options.
//!
//! Options are resolved the way iptables resolves them: `-p tcp`/`-p udp` loads the protocol's
//! match implicitly, `-m NAME` loads a module, and an option belongs to the most recently loaded
//! module that has it. Comma lists in `-s`/`-d` make one rule per address, as iptables does.
//!
//! As in xtables, each extension has its own module: `base` for the options every rule has
//! (`-p -s -d -i -o`), one module per match (`-m tcp`/`udp`, `multiport`, `owner`, `mark`/
//! `connmark`, `conntrack`/`state`, `socket`, `set`, `comment`) with `modules` handing each
//! `--option` to the loaded match that owns it, and `targets` with one module per target.

mod base;
mod comment;
mod conntrack;
mod helpers;
mod mark;
mod modules;
mod multiport;
mod owner;
mod set;
mod socket;
mod targets;
mod tcp_udp;

pub use helpers::parse_u32;

use crate::ast::{IptMatch, IptRule, IptTable, Span, Spanned, Target};
use crate::error::{ParseError, ParseErrorKind as K};
use crate::lex::Token;
use helpers::err;
use ipnet::IpNet;
use nftmesh_model::expr::{IpVersion, L4Proto};

/// Target names nftmesh reads (a user chain may not take one of these names).
pub const TARGETS: [&str; 13] = [
    "ACCEPT", "DROP", "RETURN", "REDIRECT", "TPROXY", "MARK", "CONNMARK", "CT", "LOG", "QUEUE",
    "NFQUEUE", "REJECT", "SNAT",
];

/// The most matches one rule may have: each takes at least two of the kernel's
/// [`nftmesh_model::limits::RULE_EXPRS_MAX`] expressions per rule.
pub const MAX_MATCHES: usize = nftmesh_model::limits::RULE_EXPRS_MAX / 2;

/// The addresses of `-s` or `-d`: negated, the prefixes, the option's span.
type Addrs = (bool, Vec<IpNet>, Span);

/// What the options of one rule have said so far, and where the reader is.
struct RuleParser<'a> {
    table: &'a IptTable,
    family: IpVersion,
    toks: &'a [Token],
    /// The index of the token being read.
    i: usize,
    matches: Vec<Spanned<IptMatch>>,
    modules: Vec<modules::Module>,
    /// The target and the name it was given by.
    target: Option<(Spanned<Target>, String)>,
    /// The target's options, each with its value if it takes one.
    target_opts: Vec<(Token, Option<Token>)>,
    /// `-p`: negated, the protocol (`None` for `all`), the value's token.
    proto: Option<(bool, Option<L4Proto>, Token)>,
    srcs: Option<Addrs>,
    dsts: Option<Addrs>,
    /// How many of `matches` are comments (they cost the kernel no expression).
    comments: usize,
}

/// Parse the options of one rule of `table`. Returns one rule per combination of
/// `-s`/`-d` addresses (usually one).
pub fn parse_rule(
    table: &IptTable,
    span: Span,
    toks: &[Token],
    family: IpVersion,
) -> Result<Vec<IptRule>, ParseError> {
    let mut p = RuleParser::new(table, toks, family);
    while p.i < toks.len() {
        let (t, negate) = p.negation()?;
        p.option(&t, negate)?;
        // Every match takes at least two kernel expressions (a load and a compare), so a rule
        // with more than half the kernel's expressions per rule in matches can never be loaded.
        if p.matches.len() - p.comments > MAX_MATCHES {
            return Err(err(&t, K::TooManyMatches));
        }
        p.i += 1;
    }
    p.finish(span)
}

impl<'a> RuleParser<'a> {
    fn new(table: &'a IptTable, toks: &'a [Token], family: IpVersion) -> Self {
        RuleParser {
            table,
            family,
            toks,
            i: 0,
            matches: Vec::new(),
            modules: Vec::new(),
            target: None,
            target_opts: Vec::new(),
            proto: None,
            srcs: None,
            dsts: None,
            comments: 0,
        }
    }

    /// The option at the reader, after a `!` if there is one, and whether there was.
    fn negation(&mut self) -> Result<(Token, bool), ParseError> {
        let t = &self.toks[self.i];
        if t.text != "!" {
            return Ok((t.clone(), false));
        }
        self.i += 1;
        let t = self
            .toks
            .get(self.i)
            .ok_or_else(|| err(t, K::BadNegation))?;
        Ok((t.clone(), true))
    }

    /// The value of option `opt`: the next token.
    fn next(&mut self, opt: &Token) -> Result<Token, ParseError> {
        self.i += 1;
        self.toks
            .get(self.i)
            .cloned()
            .ok_or_else(|| err(opt, K::MissingValue))
    }

    /// Add a match read from option `t`.
    fn push(&mut self, node: IptMatch, t: &Token) {
        self.matches.push(Spanned { node, span: t.span });
    }

    /// Hand option `t` to the code that reads it.
    fn option(&mut self, t: &Token, negate: bool) -> Result<(), ParseError> {
        match t.text.as_str() {
            "-p" | "--protocol" => base::protocol(self, t, negate),
            "-s" | "--source" | "--src" | "-d" | "--destination" | "--dst" => {
                base::address(self, t, negate)
            }
            "-i" | "--in-interface" | "-o" | "--out-interface" => base::interface(self, t, negate),
            "-m" | "--match" => modules::load(self, t, negate),
            "-j" | "--jump" | "-g" | "--goto" => targets::select(self, t, negate),
            opt if opt.starts_with("--") && self.target_has(opt) => {
                targets::option(self, t, negate)
            }
            opt if opt.starts_with("--") => modules::option(self, t, negate),
            _ => Err(err(t, K::UnsupportedOption)),
        }
    }

    /// Whether the target given so far has option `opt`.
    fn target_has(&self, opt: &str) -> bool {
        self.target
            .as_ref()
            .is_some_and(|(_, name)| targets::has_option(name, opt))
    }

    /// The checks that need the whole rule, then the rules it makes.
    fn finish(mut self, span: Span) -> Result<Vec<IptRule>, ParseError> {
        modules::check_used(&self.modules)?;
        let rule_proto = self.rule_proto();
        modules::check_protocol(&self.modules, rule_proto)?;
        tcp_udp::settle_protocol(&mut self.matches, rule_proto)?;
        let target = targets::finish(self.target, &self.target_opts, rule_proto, self.family)?;
        Ok(base::expand(
            span,
            &self.srcs,
            &self.dsts,
            &self.matches,
            target,
        ))
    }

    /// The protocol port matches are for: a non-negated `-p tcp` or `-p udp`.
    fn rule_proto(&self) -> Option<L4Proto> {
        match &self.proto {
            Some((false, Some(p @ (L4Proto::Tcp | L4Proto::Udp)), _)) => Some(*p),
            _ => None,
        }
    }
}
