//! What the workspace's tests, benches' test modes and the binaries' tests share (a
//! `publish = false` crate, a dev-dependency only): Istio's cases and conformance data, the
//! `nft` oracle in a network namespace, pods and peers with real listeners, private nodes
//! (`unshare -n -m`), named namespaces, proptest strategies, and the skip policy (a kernel
//! test that cannot run fails under CI).

pub mod ambient_cases;
pub mod annotations;
pub mod bpffs;
pub mod cases;
pub mod cgroup;
pub mod child;
pub mod corpus;
pub mod ebpf_column;
pub mod named_netns;
pub mod netns;
pub mod node;
pub mod pods;
pub mod runtime;
pub mod skip;
pub mod strategies;

pub use skip::{skip, skips_fail};

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Why kernel tests cannot run here, if they cannot: no `nft` oracle, no network namespace, or
/// no netfilter netlink socket.
pub fn kernel_unavailable() -> Option<String> {
    use nftmesh::netlink::{netns::run_in_new, Connection};
    if let Some(why) = netns::oracle_unavailable() {
        return Some(why);
    }
    match run_in_new(|| Connection::open().map(|_| ())) {
        Err(e) => Some(format!("cannot create a network namespace: {e}")),
        Ok(Err(e)) => Some(format!("cannot open a netfilter netlink socket: {e}")),
        Ok(Ok(())) => None,
    }
}

/// Why a test oracle tool cannot run here, if it cannot (`cmd arg` does not start).
pub fn tool_missing(cmd: &str, arg: &str) -> Option<String> {
    Command::new(cmd)
        .arg(arg)
        .output()
        .is_err()
        .then(|| format!("{cmd} is not installed"))
}

/// Run `cmd args` in the calling thread's network namespace with `stdin` as its input; its
/// standard output, or a panic naming the command and its error output.
pub fn run_here(cmd: &str, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let o = child.wait_with_output().expect("wait");
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}\n{stdin}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The workspace's root directory (this crate is `crates/nftmesh-test-support` in it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Istio's sidecar goldens, the in-repository copy `tests/data/istio/sidecar` (see its README).
pub fn conformance_dir() -> PathBuf {
    workspace_root().join("tests/data/istio/sidecar")
}

/// A golden file's text.
pub fn golden(kind: &str, case: &str) -> String {
    let p = conformance_dir().join(kind).join(format!("{case}.golden"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Lines of an `nft list ruleset` output, trimmed, blank lines dropped.
pub fn listing_lines(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A line diff (longest common subsequence): `- line` only in `a`, `+ line` only in `b`.
pub fn diff_lines(a: &[String], b: &[String]) -> Vec<String> {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+ {}", b[j]));
            j += 1;
        } else {
            out.push(format!("- {}", a[i]));
            i += 1;
        }
    }
    out
}

/// The differences `docs/istio-differences.md` documents: for each `## CASE` heading that
/// `select` maps to a case name, the lines of its `diff` blocks (`- golden`, `+ ours`).
pub fn documented_differences(
    select: impl Fn(&str) -> Option<String>,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let path = workspace_root().join("docs/istio-differences.md");
    let text = std::fs::read_to_string(path).expect("docs/istio-differences.md");
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let (mut case, mut in_diff) = (None::<String>, false);
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            case = select(h.trim().trim_matches('`'));
            in_diff = false;
        } else if line.starts_with("```diff") {
            in_diff = true;
        } else if line.starts_with("```") {
            in_diff = false;
        } else if in_diff {
            if let Some(c) = &case {
                out.entry(c.clone())
                    .or_default()
                    .push(line.trim_end().to_string());
            }
        }
    }
    out
}
