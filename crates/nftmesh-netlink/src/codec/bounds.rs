//! What one netlink message and the kernel accept, checked before libnftnl writes a byte.
//!
//! libnftnl (1.2.x) trusts its caller: `mnl_attr_put` writes an attribute into the message
//! buffer without looking at the buffer's size, attribute lengths are 16-bit fields that
//! silently wrap, and expression data and set keys are copied into fixed 64-byte fields
//! without a length check. So `codec::nftnl` checks every object here first, against the
//! kernel's own limits (names, values, expressions per rule, user data) and against the size of
//! the message it is about to write, which `rule_message_len` computes from the size of each
//! expression, counted by `nftnl`'s expression builder from exactly the attributes it sets. Anything over a limit is a [`BuildError::TooLarge`] naming the limit;
//! nothing has been written then.
//!
//! Every message fits the writer's scratch buffer ([`SCRATCH_LEN`]) once these checks pass:
//! - table, chain and set messages hold at most three names of at most [`NAME_MAX`] bytes and a
//!   fixed number of 4- and 8-byte attributes (under 1 KiB);
//! - a rule message is checked whole by `rule_message_len`, its expression list at most
//!   [`ATTR_PAYLOAD_MAX`] bytes ([`RULE_MESSAGE_MAX`] in all);
//! - a set element message is filled by libnftnl's iterator, which stops before the element
//!   list passes [`ATTR_PAYLOAD_MAX`] bytes, after writing one element of at most
//!   [`ELEMENT_MAX`] bytes (keys are at most [`KEY_MAX`] bytes): [`ELEMENTS_MESSAGE_MAX`].

use crate::codec::ir::Expr;
use std::fmt;

pub use nftmesh_model::limits::{COMMENT_MAX, LOG_PREFIX_MAX, NAME_MAX, RULE_EXPRS_MAX};

/// The longest value an expression compares, loads or masks (`struct nft_data`, one
/// 16-byte register).
pub const VALUE_MAX: usize = 16;
/// The longest set key (`NFT_DATA_VALUE_MAXLEN`).
pub const KEY_MAX: usize = 64;
/// The largest payload of one netlink attribute (its length is a 16-bit field that counts its
/// own 4-byte header).
pub const ATTR_PAYLOAD_MAX: usize = u16::MAX as usize - 4;
/// The message writer's scratch buffer: any one message this crate writes fits in it.
pub const SCRATCH_LEN: usize = u16::MAX as usize + 4096;

/// The netlink header plus nfgenmsg in front of every nf_tables message.
const MSG_HEADER: usize = 16 + 4;
/// A set element as `nftnl` builds it: list element nest, key nest, value, flags.
pub const ELEMENT_MAX: usize = 4 + 4 + attr(KEY_MAX) + attr(4);
/// The largest rule message `rule_message_len` lets through.
pub const RULE_MESSAGE_MAX: usize =
    MSG_HEADER + 2 * strz(NAME_MAX) + attr(COMMENT_MAX + 3) + 4 + ATTR_PAYLOAD_MAX;
/// The largest set element message libnftnl's iterator writes (see the module doc).
pub const ELEMENTS_MESSAGE_MAX: usize =
    MSG_HEADER + 2 * strz(NAME_MAX) + attr(4) + 4 + ATTR_PAYLOAD_MAX + ELEMENT_MAX;

const _: () = assert!(RULE_MESSAGE_MAX <= SCRATCH_LEN);
const _: () = assert!(ELEMENTS_MESSAGE_MAX <= SCRATCH_LEN);

/// Which limit an object exceeds (in [`crate::NetlinkError::TooLarge`]).
///
/// ```
/// use nftmesh_model::expr::{Match, Statement};
/// use nftmesh_model::ruleset::{Chain, ChainType, Family, Hook, Rule, Ruleset, Table};
/// use nftmesh_netlink::bounds::Limit;
/// use nftmesh_netlink::{LiveState, NetlinkError, Transaction};
///
/// // 65 two-expression matches: 130 expressions, over the kernel's 128 per rule.
/// let marks = (0..65).map(|v| Match::Mark { negate: false, mask: u32::MAX, value: v }).collect();
/// let mut chain = Chain::base("out", ChainType::Filter, Hook::Output, 0);
/// chain.rules.push(Rule::new(marks, vec![Statement::Counter]));
/// let mut table = Table::new(Family::Inet, "t");
/// table.chains.push(chain);
/// let err = Transaction::plan(&Ruleset { tables: vec![table] }, &LiveState::default(), None, 1)
///     .unwrap_err();
/// assert!(matches!(err, NetlinkError::TooLarge { limit: Limit::Expressions, size: 131, max: 128, .. }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// A name, in bytes ([`NAME_MAX`]); `what` says whose (`table`, `chain`, `set`, ...).
    Name {
        /// Whose name.
        what: &'static str,
    },
    /// Expressions in one rule ([`RULE_EXPRS_MAX`]).
    Expressions,
    /// Bytes of one expression's value ([`VALUE_MAX`]); `expr` names the expression.
    Value {
        /// The expression's kernel name.
        expr: &'static str,
    },
    /// Bytes of a set key ([`KEY_MAX`]).
    SetKey,
    /// Bytes of a rule comment ([`COMMENT_MAX`]).
    Comment,
    /// Bytes of a log prefix ([`LOG_PREFIX_MAX`]).
    LogPrefix,
    /// Bytes of a rule's expression list, one netlink attribute ([`ATTR_PAYLOAD_MAX`]).
    ExpressionBytes,
}

impl Limit {
    /// The largest size this limit allows.
    pub fn max(self) -> usize {
        match self {
            Limit::Name { .. } => NAME_MAX,
            Limit::Expressions => RULE_EXPRS_MAX,
            Limit::Value { .. } => VALUE_MAX,
            Limit::SetKey => KEY_MAX,
            Limit::Comment => COMMENT_MAX,
            Limit::LogPrefix => LOG_PREFIX_MAX,
            Limit::ExpressionBytes => ATTR_PAYLOAD_MAX,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Name { what } => write!(f, "bytes in a {what} name"),
            Limit::Expressions => write!(f, "expressions in one rule"),
            Limit::Value { expr } => write!(f, "bytes in the value of a {expr} expression"),
            Limit::SetKey => write!(f, "bytes in a set key"),
            Limit::Comment => write!(f, "bytes in a rule comment"),
            Limit::LogPrefix => write!(f, "bytes in a log prefix"),
            Limit::ExpressionBytes => {
                write!(
                    f,
                    "bytes of expressions in one rule (one netlink attribute)"
                )
            }
        }
    }
}

/// An error building a message; nothing of the message was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An object exceeds a kernel or netlink limit.
    #[error("{size} {limit}, the limit is {max}")]
    TooLarge {
        /// Which limit.
        limit: Limit,
        /// The object's size.
        size: usize,
        /// The limit's value.
        max: usize,
    },
    /// A name or string holds a NUL byte.
    #[error("{what} {value:?} contains a NUL byte")]
    Nul {
        /// Whose string.
        what: &'static str,
        /// The string (cut to 64 bytes).
        value: String,
    },
    /// An empty name (of a table, chain, set or jump target).
    #[error("{what} name is empty")]
    Empty {
        /// Whose name.
        what: &'static str,
    },
    /// Two objects of one kind with the same name where the kernel holds one (two chains or
    /// sets of a table, two tables of a family): the second would merge into the first.
    #[error("a second {what} named {name:?}")]
    Duplicate {
        /// What kind of object.
        what: &'static str,
        /// The name (cut to 64 bytes).
        name: String,
    },
    /// A set element's key does not have the set's key length.
    #[error("a set element key of {len} bytes in a set of {key_len}-byte keys")]
    KeyLength {
        /// The element key's length.
        len: usize,
        /// The set's key length.
        key_len: u32,
    },
    /// An expression the encoder does not write (decoded from the kernel, unknown to the model).
    #[error("expression {0:?} is not supported by the encoder")]
    Unsupported(String),
    /// libnftnl could not allocate an object.
    #[error("libnftnl could not allocate {0}")]
    Alloc(&'static str),
}

fn too_large(limit: Limit, size: usize) -> BuildError {
    BuildError::TooLarge {
        limit,
        size,
        max: limit.max(),
    }
}

/// `Ok` when `size` is within `limit`.
pub(crate) fn within(limit: Limit, size: usize) -> Result<(), BuildError> {
    if size > limit.max() {
        return Err(too_large(limit, size));
    }
    Ok(())
}

fn cut(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A string as libnftnl takes it: no NUL inside, at most `max` bytes.
pub(crate) fn string(what: &'static str, s: &str, limit: Limit) -> Result<(), BuildError> {
    if s.contains('\0') {
        return Err(BuildError::Nul {
            what,
            value: cut(s),
        });
    }
    within(limit, s.len())
}

/// A table, chain or set name (or a jump target, a lookup's set) the kernel takes: not
/// empty, no NUL, at most [`NAME_MAX`] bytes.
pub(crate) fn name(what: &'static str, s: &str) -> Result<(), BuildError> {
    if s.is_empty() {
        return Err(BuildError::Empty { what });
    }
    string(what, s, Limit::Name { what })
}

/// [`BuildError::Duplicate`] for the first name of `names` that an earlier one repeats.
pub(crate) fn unique<'a>(
    what: &'static str,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), BuildError> {
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(BuildError::Duplicate { what, name: cut(n) });
        }
    }
    Ok(())
}

/// An attribute of `payload` bytes, padded to 4.
pub(crate) const fn attr(payload: usize) -> usize {
    4 + ((payload + 3) & !3)
}

/// A NUL-terminated string attribute.
pub(crate) const fn strz(len: usize) -> usize {
    attr(len + 1)
}

/// Check one expression's own limits (names, values) without sizing it.
pub(crate) fn check_expr(e: &Expr) -> Result<(), BuildError> {
    let val = |expr: &'static str, d: &[u8]| within(Limit::Value { expr }, d.len());
    match e {
        Expr::Cmp { data, .. } => val("cmp", data),
        Expr::Range { from, to, .. } => val("range", from).and(val("range", to)),
        Expr::Bitwise { mask, xor, .. } => val("bitwise", mask).and(val("bitwise", xor)),
        Expr::Immediate { data, .. } => val("immediate", data),
        Expr::Lookup { set, .. } => name("set", set),
        Expr::Verdict { chain: Some(c), .. } => name("jump target chain", c),
        Expr::Log { prefix: Some(p) } => string("log prefix", p, Limit::LogPrefix),
        Expr::Unknown { name, .. } => Err(BuildError::Unsupported(cut(name))),
        _ => Ok(()),
    }
}

/// Check a rule before it is written and return the length of its message: table and chain
/// names, the comment, the number of expressions and the bytes of the expression list, from
/// the size of each expression (`exprs`: as its builder counted it).
pub(crate) fn rule_message_len(
    table: &str,
    chain: &str,
    exprs: &[usize],
    comment: Option<&str>,
) -> Result<usize, BuildError> {
    name("table", table)?;
    name("chain", chain)?;
    if let Some(c) = comment {
        string("comment", c, Limit::Comment)?;
    }
    within(Limit::Expressions, exprs.len())?;
    let list = exprs.iter().fold(0usize, |a, n| a.saturating_add(*n));
    within(Limit::ExpressionBytes, list)?;
    let udata = comment.map_or(0, |c| attr(c.len() + 3));
    let list_attr = if exprs.is_empty() { 0 } else { 4 + list };
    Ok(MSG_HEADER + strz(table.len()) + strz(chain.len()) + udata + list_attr)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of a `counter` expression in a rule message (any size serves where only the
    /// number of expressions is checked).
    const COUNTER: usize = 36;

    #[test]
    fn names_are_taken_up_to_255_bytes_and_refused_beyond() {
        assert_eq!(name("table", &"t".repeat(NAME_MAX)), Ok(()));
        assert_eq!(
            name("table", &"t".repeat(NAME_MAX + 1)),
            Err(BuildError::TooLarge {
                limit: Limit::Name { what: "table" },
                size: 256,
                max: 255
            })
        );
        assert!(matches!(name("chain", "a\0b"), Err(BuildError::Nul { .. })));
    }

    #[test]
    fn an_error_says_what_exceeds_which_limit() {
        let e = rule_message_len("t", "c", &[COUNTER; 129], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "129 expressions in one rule, the limit is 128"
        );
    }

    #[test]
    fn the_expression_count_is_taken_at_the_limit_and_refused_one_over() {
        assert!(rule_message_len("t", "c", &[COUNTER; 128], None).is_ok());
        assert!(matches!(
            rule_message_len("t", "c", &[COUNTER; 129], None),
            Err(BuildError::TooLarge {
                limit: Limit::Expressions,
                size: 129,
                ..
            })
        ));
    }

    #[test]
    fn values_over_one_register_are_refused_in_every_expression_that_carries_one() {
        let v = |n: usize| vec![0u8; n];
        let with = |n: usize| {
            [
                Expr::Cmp {
                    sreg: 1,
                    op: 0,
                    data: v(n),
                },
                Expr::Range {
                    sreg: 1,
                    op: 0,
                    from: v(n),
                    to: v(1),
                },
                Expr::Range {
                    sreg: 1,
                    op: 0,
                    from: v(1),
                    to: v(n),
                },
                Expr::Bitwise {
                    sreg: 1,
                    dreg: 1,
                    len: 4,
                    mask: v(n),
                    xor: v(4),
                },
                Expr::Bitwise {
                    sreg: 1,
                    dreg: 1,
                    len: 4,
                    mask: v(4),
                    xor: v(n),
                },
                Expr::Immediate {
                    dreg: 1,
                    data: v(n),
                },
            ]
        };
        for e in with(VALUE_MAX) {
            assert_eq!(check_expr(&e), Ok(()), "{e:?}");
        }
        for e in with(VALUE_MAX + 1) {
            assert!(
                matches!(
                    check_expr(&e),
                    Err(BuildError::TooLarge {
                        limit: Limit::Value { .. },
                        size: 17,
                        max: 16
                    })
                ),
                "{e:?}"
            );
        }
    }

    #[test]
    fn strings_inside_expressions_are_bounded() {
        let lookup = |n: usize| Expr::Lookup {
            sreg: 1,
            set: "s".repeat(n),
            set_id: None,
            invert: false,
        };
        let verdict = |n: usize| Expr::Verdict {
            code: -3,
            chain: Some("c".repeat(n)),
        };
        let log = |n: usize| Expr::Log {
            prefix: Some("p".repeat(n)),
        };
        for (at, over) in [
            (lookup(NAME_MAX), lookup(NAME_MAX + 1)),
            (verdict(NAME_MAX), verdict(NAME_MAX + 1)),
            (log(LOG_PREFIX_MAX), log(LOG_PREFIX_MAX + 1)),
        ] {
            assert_eq!(check_expr(&at), Ok(()));
            assert!(matches!(
                check_expr(&over),
                Err(BuildError::TooLarge { .. })
            ));
        }
    }

    #[test]
    fn comments_are_bounded() {
        let c = "c".repeat(COMMENT_MAX);
        assert!(rule_message_len("t", "c", &[], Some(&c)).is_ok());
        let c = "c".repeat(COMMENT_MAX + 1);
        assert!(matches!(
            rule_message_len("t", "c", &[], Some(&c)),
            Err(BuildError::TooLarge {
                limit: Limit::Comment,
                ..
            })
        ));
    }

    #[test]
    fn the_largest_rule_the_limits_let_through_fits_one_attribute_and_the_buffer() {
        // 128 jumps to 255-byte chain names, the largest expressions allowed: the expression
        // list stays within one attribute, so that check is a backstop.
        let jump = Expr::Verdict {
            code: -3,
            chain: Some("c".repeat(NAME_MAX)),
        };
        let built = crate::codec::expr::encode(&jump).unwrap();
        let sizes = vec![built.encoded_len(); RULE_EXPRS_MAX];
        let len = rule_message_len("t", "c", &sizes, None).unwrap();
        assert!(len <= RULE_MESSAGE_MAX, "{len}");
        let list: usize = sizes.iter().sum();
        assert!(list <= ATTR_PAYLOAD_MAX, "{list}");
    }
}
