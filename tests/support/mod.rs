//! Shared test support: Istio's cases, the conformance data, and the `nft` oracle in netns.
#![allow(dead_code)]

pub mod cases;
pub mod corpus;
pub mod netns;

use std::path::PathBuf;

/// `../shared/conformance/istio` relative to the workspace.
pub fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/istio")
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
