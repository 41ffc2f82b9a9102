//! The Istio capture compiler: [`CaptureConfig`] → [`Ruleset`].
//!
//! The layout is Istio's native-nftables one: tables `inet istio-proxy-nat`,
//! `inet istio-proxy-mangle` and `inet istio-proxy-raw`, with Istio's chain names, chain
//! priorities and rule order. Rules are produced in the order Istio's generator emits them,
//! including its "insert at index" steps, so the result lists like Istio's goldens. Where Istio
//! writes one rule per list item (ports, CIDRs, DNS servers, owner groups) and the rules differ
//! only in that item, nftmesh writes one rule with an anonymous set: the per-packet cost does
//! not grow with the list. `docs/istio-differences.md` lists every difference.

mod builder;
mod steps;

use crate::config::CaptureConfig;
use crate::ruleset::Ruleset;

pub use builder::{chain_names, MANGLE_TABLE, NAT_TABLE, RAW_TABLE};

/// Compile a validated capture configuration into the ruleset that implements it.
///
/// The configuration is expected to have passed [`CaptureConfig::validate`]; compiling an
/// invalid one does not panic but may produce rules the kernel refuses.
pub fn compile(cfg: &CaptureConfig) -> Ruleset {
    let mut b = builder::Builder::default();
    steps::run(cfg, &mut b);
    b.finish()
}

#[cfg(test)]
mod tests;
