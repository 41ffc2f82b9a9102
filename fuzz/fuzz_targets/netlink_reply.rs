//! Fuzz target `netlink_reply`: see `fuzz/harness.rs`.
#![no_main]

#[allow(dead_code)] // each target uses one of the harness functions
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::netlink_reply(data));
