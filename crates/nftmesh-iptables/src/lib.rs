//! iptables compatibility for nftmesh: read iptables-save / iptables-restore text, run it with
//! xtables semantics, and translate it to the nf_tables model, so existing rules and tooling
//! carry over.
//!
//! The pipeline is text → [`IptRuleset`] (a faithful syntax tree with spans, printing back to
//! canonical iptables-save text) → [`translate()`] → [`nftmesh_model::Ruleset`]. The
//! [`interpret()`] function evaluates the syntax tree directly, independently of the translator,
//! so property tests can check that both agree packet by packet. Everything unsupported is a
//! [`ParseError`] with line, column and token, or an [`Untranslatable`] with its span: nothing is
//! dropped silently.
//!
//! This crate does no I/O: applying a translation to the kernel is `nftmesh-netlink`'s job.
//!
//! ```
//! use nftmesh_iptables::{interpret, parse, translate};
//! use nftmesh_model::{eval, expr::IpVersion, Hook, Packet};
//!
//! let text = "*nat\n\
//!             -N ISTIO_REDIRECT\n\
//!             -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n\
//!             -A OUTPUT -p tcp -m owner ! --uid-owner 1337 -j ISTIO_REDIRECT\n\
//!             COMMIT\n";
//! let rules = parse(text, IpVersion::V4).unwrap();
//! let nft = translate(&rules).unwrap();
//!
//! let app = Packet::local_tcp(1000, 1000, "10.0.0.5".parse().unwrap(),
//!                             "10.1.2.3".parse().unwrap(), 8080, "eth0");
//! let by_iptables = interpret(&[rules], &app, Hook::Output).unwrap();
//! let by_nftables = eval(&nft, &app, Hook::Output).unwrap();
//! assert_eq!(by_iptables.redirect, Some(15001));
//! assert_eq!(by_iptables, by_nftables);
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod ast;
pub mod error;
pub mod interp;
pub mod lex;
pub mod parse;
pub mod rule;
pub mod trace;
pub mod translate;
pub mod validate;

pub use ast::{IptChain, IptMatch, IptRule, IptRuleset, IptTable, Span, TableName, Target};
pub use error::{InterpError, ParseError, ParseErrorKind, Untranslatable};
pub use interp::{interpret, interpret_with_sets, IpSets};
pub use parse::parse;
pub use trace::{parse_trace, Trace};
pub use translate::{translate, translate_all};
