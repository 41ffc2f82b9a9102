//! A private "node" for tests that need one: the calling test runs again as a child process in
//! a network and mount namespace of its own (`unshare -n -m`, private propagation, a tmpfs over
//! `/run/netns`), so the node is that namespace and the pod namespaces it creates with
//! `ip netns add` exist only inside it. Nothing is left on the machine when the child exits,
//! however it exits.

use std::process::Command;

const CHILD: &str = "NFTMESH_TEST_IN_NODE";

/// In the child: `true` (run the test's body here, in the node). In the parent: run the test
/// `test` (its full name, e.g. `my_test`) in a fresh private node, assert that it passed, and
/// return `false`. `None` from the parent when it cannot make a node (the reason was reported
/// with [`crate::skip()`]).
pub fn in_private_node(test: &str) -> Option<bool> {
    if std::env::var_os(CHILD).is_some() {
        // The child: make /run/netns our own before any `ip netns add`.
        std::fs::create_dir_all("/run/netns").expect("create /run/netns");
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "nftmesh-node", "/run/netns"])
            .output()
            .expect("run mount");
        assert!(
            o.status.success(),
            "mount a tmpfs on /run/netns: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return Some(true);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let o = match Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private"])
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            crate::skip(&format!("cannot run unshare for a private node: {e}"));
            return None;
        }
    };
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && out.contains("1 passed"),
        "{test} in its private node (unshare -n -m) failed: {}\nstdout:\n{out}\nstderr:\n{err}",
        o.status
    );
    print!("{out}");
    eprint!("{err}");
    Some(false)
}

/// The node itself: the calling process's network namespace (in the child of
/// [`in_private_node`]); commands run directly in it.
pub struct Node;

impl Node {
    /// The node namespace's path (opened by handles and `run_in`).
    pub fn path(&self) -> String {
        format!("/proc/{}/ns/net", std::process::id())
    }

    /// Run `cmd args...` in the node; panics on failure, returns stdout.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> String {
        let o = Command::new(cmd).args(args).output().expect("run");
        assert!(
            o.status.success(),
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `nft list ruleset` of the node.
    pub fn list(&self) -> String {
        self.exec("nft", &["list", "ruleset"])
    }
}
