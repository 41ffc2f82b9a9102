//! The parts of `tests/decision.rs`: the mirror of `bpf/capture.c`'s decision, the generated
//! world (pods, routing, the packet nf_tables sees), the generated configurations and pods, and
//! the connections drawn for them.

pub mod connection;
pub mod generate;
pub mod mirror;
pub mod world;
