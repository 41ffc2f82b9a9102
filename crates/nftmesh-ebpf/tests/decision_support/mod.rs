//! The parts of `tests/decision.rs`: the mirror of `bpf/capture.c`'s decision, the generated
//! world (pods, routing, the packet nf_tables sees) and the generators.

pub mod generate;
pub mod mirror;
pub mod world;
