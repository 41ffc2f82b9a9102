//! nftmesh's pure rule model: the Istio capture configuration, a typed nf_tables ruleset, the
//! compiler from one to the other, an `nft`-syntax renderer and a reference evaluator.
//!
//! This crate does no I/O and has no unsafe code; the kernel is `nftmesh-netlink`'s business.
//!
//! ```
//! use nftmesh_model::{compile, eval, render, CaptureConfig, Hook, Packet};
//!
//! let cfg = CaptureConfig::sidecar();
//! cfg.validate().unwrap();
//! let ruleset = compile(&cfg);
//! assert!(render(&ruleset).contains("redirect to :15001"));
//!
//! // An application's outbound connection lands on the proxy's outbound port.
//! let pkt = Packet::local_tcp(1000, 1000, "10.0.0.5".parse().unwrap(),
//!                             "10.1.2.3".parse().unwrap(), 8080, "eth0");
//! assert_eq!(eval(&ruleset, &pkt, Hook::Output).unwrap().redirect, Some(15001));
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod ambient;
pub mod canonical;
pub mod compile;
pub mod config;
pub mod diff;
pub mod eval;
pub mod expr;
pub mod limits;
pub mod linkerd;
pub mod pod;
pub mod render;
pub mod ruleset;
pub mod samples;
pub mod stats;

pub use compile::compile;
pub use config::{CaptureConfig, ConfigError, InterceptionMode};
pub use eval::{eval, eval_traced, EvalError, FinalVerdict, Outcome, Packet, Step, Traced};
pub use expr::{Match, Statement, Verdict};
pub use render::render;
pub use ruleset::{Chain, Family, Hook, Rule, Ruleset, Table};
