//! Typed errors: what went wrong in the text, and where.

use crate::ast::Span;
use thiserror::Error;

/// Why a piece of iptables text was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// A quote (`"` or `'`) that is never closed.
    #[error("unterminated quote")]
    UnterminatedQuote,
    /// A line that is not a table header, chain declaration, command or `COMMIT`.
    #[error("unknown command")]
    UnknownCommand,
    /// A command (`-A`, `:CHAIN`, `COMMIT`) before any `*table` line.
    #[error("command outside a table (no `*table` line before it)")]
    OutsideTable,
    /// A `*table` line while the previous table is not committed.
    #[error("new table while the previous one is not committed")]
    TableNotCommitted,
    /// The input ends inside a table.
    #[error("input ends without COMMIT")]
    MissingCommit,
    /// A table name other than raw, mangle, nat, filter.
    #[error("unknown table")]
    UnknownTable,
    /// An option iptables has but nftmesh does not read.
    #[error("unsupported option")]
    UnsupportedOption,
    /// A `-m` module nftmesh does not read.
    #[error("unknown or unsupported match module")]
    UnknownMatch,
    /// A `-j` target that is neither built in, supported, nor a user chain.
    #[error("unknown or unsupported target")]
    UnknownTarget,
    /// An option that needs a value is the last token.
    #[error("missing value")]
    MissingValue,
    /// A port that is not a number in 0..=65535 (or a range of them, first ≤ last).
    #[error("bad port")]
    BadPort,
    /// An address or prefix that does not parse, or is of the other IP version.
    #[error("bad address for {0}")]
    BadAddress(&'static str),
    /// A number (mark, mask, zone, id, rule position) that does not parse.
    #[error("bad number")]
    BadNumber,
    /// A protocol name or number iptables would not accept.
    #[error("unknown protocol")]
    BadProtocol,
    /// A conntrack state name that is not INVALID, NEW, ESTABLISHED, RELATED or UNTRACKED.
    #[error("unknown conntrack state")]
    BadState,
    /// A chain policy that is not ACCEPT or DROP (or `-` on a user chain).
    #[error("bad chain policy")]
    BadPolicy,
    /// A chain name that is too long (over 28 characters) or malformed.
    #[error("bad chain name")]
    BadChainName,
    /// An interface name longer than 15 characters, or with `+` anywhere but at its end.
    #[error("bad interface name")]
    BadInterface,
    /// A comment longer than 256 characters.
    #[error("comment too long")]
    BadComment,
    /// An ipset name that is empty, longer than 31 bytes, or has characters other than ASCII
    /// letters, digits, `_`, `-` and `.`.
    #[error("bad ipset name (1 to 31 of A-Z a-z 0-9 _ - .)")]
    BadSetName,
    /// A chain that does not exist in this table.
    #[error("unknown chain")]
    UnknownChain,
    /// A user chain created twice.
    #[error("chain already exists")]
    ChainExists,
    /// A built-in chain that cannot be deleted, renamed or jumped to.
    #[error("built-in chain not allowed here")]
    BuiltinChain,
    /// A chain deleted while rules still jump to it, or while it still has rules.
    #[error("chain is in use (referenced or not empty)")]
    ChainInUse,
    /// A rule position (`-I CHAIN N`) past the end of the chain.
    #[error("rule position out of range")]
    BadPosition,
    /// An option given twice in one rule, or two targets.
    #[error("option given twice")]
    Duplicate,
    /// A `!` not followed by an option that can be negated.
    #[error("`!` not allowed here")]
    BadNegation,
    /// A port option without `-p tcp` or `-p udp`, or with the wrong protocol for its module.
    #[error("port match needs `-p tcp` or `-p udp`")]
    NeedsProtocol,
    /// A target option without its target, or a target missing a required option.
    #[error("{0}")]
    BadTarget(&'static str),
    /// A match or target used in a table or chain where iptables refuses it.
    #[error("{0}")]
    NotAllowedHere(&'static str),
    /// Jumps that form a loop.
    #[error("chain loop")]
    Loop,
    /// More matches in one rule than the kernel can hold ([`crate::rule::MAX_MATCHES`]: each
    /// takes at least two of its 128 expressions per rule); the span is the first one over.
    #[error("more than 64 matches in one rule (each takes at least two of the kernel's 128 expressions per rule)")]
    TooManyMatches,
}

/// An error in iptables text: what, where, and the offending token.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{span}: {kind} at `{token}`")]
pub struct ParseError {
    /// Where.
    pub span: Span,
    /// The token (or line) at fault.
    pub token: String,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

impl ParseError {
    /// An error at `span` on `token`.
    pub fn new(span: Span, token: impl Into<String>, kind: ParseErrorKind) -> Self {
        ParseError {
            span,
            token: token.into(),
            kind,
        }
    }
}

/// A rule the translator cannot express exactly in the nf_tables model; it refuses rather than
/// approximating.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{span}: cannot translate: {reason}")]
pub struct Untranslatable {
    /// Why.
    pub reason: String,
    /// The rule (or match, or target) at fault.
    pub span: Span,
}

/// Why the interpreter could not run a ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InterpError {
    /// A jump to a chain the table does not have.
    #[error("{table}: jump to unknown chain {chain}")]
    UnknownChain {
        /// The table.
        table: &'static str,
        /// The missing chain.
        chain: String,
    },
    /// Jumps nested deeper than the number of chains (a loop).
    #[error("{table}: chain loop at {chain}")]
    Loop {
        /// The table.
        table: &'static str,
        /// The chain at which the loop was found.
        chain: String,
    },
    /// A `-m set --match-set` of an ipset the interpreter was not given (iptables refuses a
    /// rule naming a set that does not exist).
    #[error("{table}: ipset {set} does not exist")]
    UnknownSet {
        /// The table.
        table: &'static str,
        /// The set.
        set: String,
    },
}
