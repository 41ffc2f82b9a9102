//! What a test does when it cannot run here (no root, no network namespace, no oracle tool).
//!
//! Outside CI it prints `SKIP: why` and the test returns early. Under CI (`CI` set, as the CI
//! runner sets `CI=true`) or with `NFTMESH_REQUIRE_KERNEL=1`, a skip is a failure: a kernel
//! test that did not run must not count as passed. Shared by the workspace tests, the CLI's
//! tests and the benches' test mode (each includes this file).

/// Whether a test that cannot run must fail instead of skipping.
pub fn skips_fail() -> bool {
    let set = |name: &str| {
        std::env::var(name)
            .is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
    };
    set("CI") || set("NFTMESH_REQUIRE_KERNEL")
}

/// Report that the calling test cannot run because of `why`: prints `SKIP: why` and returns
/// (the caller then returns), or panics with the reason when [`skips_fail`].
pub fn skip(why: &str) {
    if skips_fail() {
        panic!(
            "cannot run here, and skipping is a failure under CI / NFTMESH_REQUIRE_KERNEL=1: {why}"
        );
    }
    eprintln!("SKIP: {why}");
}
