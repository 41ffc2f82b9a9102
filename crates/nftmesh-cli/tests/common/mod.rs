//! Helpers shared by the CLI's kernel tests: a named network namespace each test creates and
//! deletes, and running the built `nftmesh` binary.
#![allow(dead_code)]

use std::process::{Command, Output};

#[allow(unused_imports)]
pub use nftmesh_test_support::skip;

pub use nftmesh_test_support::named_netns::{with_input, Netns};

pub use nftmesh_test_support::node;

pub mod agent;

pub fn nftmesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nftmesh"))
        .args(args)
        .env_clear()
        .output()
        .expect("run nftmesh")
}

/// The stdout of the built `nftmesh` run with `args`, which must succeed.
pub fn nftmesh_ok(args: &[&str]) -> String {
    let o = nftmesh(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Run the built `nftmesh` with `args` and `input` on its standard input.
pub fn nftmesh_with_stdin(args: &[&str], input: &str) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nftmesh"));
    c.args(args).env_clear();
    with_input(c, input)
}

pub fn netns_or_skip() -> Option<Netns> {
    match Netns::new() {
        Ok(n) => Some(n),
        Err(e) => {
            skip::skip(&format!("cannot create a network namespace: {e}"));
            None
        }
    }
}
