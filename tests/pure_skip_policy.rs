//! A kernel test that cannot run prints why and, under CI (`CI=true`) or with
//! `NFTMESH_REQUIRE_KERNEL=1`, fails instead of passing (`nftmesh_test_support::skip`).
//!
//! Each case runs this test binary again with one test selected and a chosen environment.

use nftmesh_test_support as support;

use std::process::Command;

const CHILD: &str = "NFTMESH_SKIP_POLICY_CHILD";

/// Does nothing unless run as the child of the test below; there it skips.
#[test]
fn child_that_cannot_run() {
    if std::env::var_os(CHILD).is_some() {
        support::skip("planned: this child test cannot run");
    }
}

fn run_child(env: &[(&str, &str)]) -> (bool, String) {
    let exe = std::env::current_exe().expect("test binary");
    let mut c = Command::new(exe);
    c.args([
        "--exact",
        "child_that_cannot_run",
        "--nocapture",
        "--test-threads=1",
    ])
    .env_remove("CI")
    .env_remove("NFTMESH_REQUIRE_KERNEL")
    .env(CHILD, "1");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("run the test binary");
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text)
}

#[test]
fn a_skip_passes_with_its_reason_outside_ci() {
    let (ok, text) = run_child(&[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("SKIP: planned: this child test cannot run"),
        "{text}"
    );
    let (ok, text) = run_child(&[("CI", "false"), ("NFTMESH_REQUIRE_KERNEL", "0")]);
    assert!(ok, "{text}");
}

#[test]
fn a_skip_fails_under_ci_or_when_the_kernel_is_required() {
    for env in [("CI", "true"), ("CI", "1"), ("NFTMESH_REQUIRE_KERNEL", "1")] {
        let (ok, text) = run_child(&[env]);
        assert!(!ok, "{env:?}: the skip passed:\n{text}");
        assert!(
            text.contains("planned: this child test cannot run"),
            "{env:?}:\n{text}"
        );
    }
}
