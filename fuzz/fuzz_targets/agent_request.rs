//! Fuzz target `agent_request`: see `fuzz/harness_cni.rs`.
#![no_main]

#[path = "../harness_agent.rs"]
mod harness_agent;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness_agent::agent_request(data));
