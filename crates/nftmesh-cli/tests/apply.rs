//! `nftmesh apply` against the kernel, in a named network namespace each test creates and
//! deletes (`ip netns add nftmesh-cli-PID-N`).

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A named network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Result<Self, String> {
        let name = format!(
            "nftmesh-cli-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let o = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        Ok(Netns(name))
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    fn list(&self) -> String {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "list", "ruleset"])
            .output()
            .expect("nft list");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn nftmesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nftmesh"))
        .args(args)
        .env_clear()
        .output()
        .expect("run nftmesh")
}

fn netns_or_skip() -> Option<Netns> {
    match Netns::new() {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!("SKIP: cannot create a network namespace: {e}");
            None
        }
    }
}

#[test]
fn apply_installs_the_capture_in_the_given_namespace_and_cleanup_only_removes_it() {
    let Some(ns) = netns_or_skip() else { return };
    let path = ns.path();
    let before = ns.list();
    let o = nftmesh(&[
        "apply",
        "--network-namespace",
        &path,
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-b",
        "*",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("one transaction"));
    let live = ns.list();
    assert!(live.contains("redirect to :15001"), "{live}");
    assert!(live.contains("redirect to :15006"), "{live}");
    let o = nftmesh(&["apply", "--network-namespace", &path, "--cleanup-only"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(ns.list(), before);
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let Some(ns) = netns_or_skip() else { return };
    let before = ns.list();
    let o = nftmesh(&[
        "apply",
        "--network-namespace",
        &ns.path(),
        "--dry-run",
        "-p",
        "15001",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan = nftmesh(&["plan", "-p", "15001"]);
    assert_eq!(o.stdout, plan.stdout);
    assert_eq!(ns.list(), before);
}

#[test]
fn a_missing_namespace_is_a_clear_error() {
    let o = nftmesh(&[
        "apply",
        "--network-namespace",
        "/var/run/netns/nftmesh-does-not-exist",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot enter network namespace /var/run/netns/nftmesh-does-not-exist"),
        "{err}"
    );
}
