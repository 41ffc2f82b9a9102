//! Fuzz target `cni_stdin`: see `fuzz/harness_cni.rs`.
#![no_main]

#[path = "../harness_cni.rs"]
mod harness_cni;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness_cni::cni_stdin(data));
