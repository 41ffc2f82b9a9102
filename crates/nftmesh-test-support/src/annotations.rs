//! Istio's injected pod annotations (`tests/data/istio/annotations/*.annotations`, cut out of
//! Istio's injector testdata unchanged): read into a map. The files are YAML mapping lines at
//! one indentation; values are plain, single-quoted, double-quoted, or a `|-` block.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The folder of the annotation files.
pub fn dir() -> PathBuf {
    crate::workspace_root().join("tests/data/istio/annotations")
}

/// The annotations of Istio's injector test case `case` (e.g. `hello.yaml.cni.injected`).
pub fn load(case: &str) -> BTreeMap<String, String> {
    let path = dir().join(format!("{case}.annotations"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse(&text)
}

/// Parse the annotation lines (see the module doc).
pub fn parse(text: &str) -> BTreeMap<String, String> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let base = text.lines().next().map(indent).unwrap_or(0);
    let mut out = BTreeMap::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let (key, raw) = line
            .trim()
            .split_once(": ")
            .or_else(|| line.trim().strip_suffix(':').map(|k| (k, "")))
            .unwrap_or_else(|| panic!("not a mapping line: {line:?}"));
        let value = if raw == "|-" {
            let mut block = Vec::new();
            while let Some(next) = lines.next_if(|l| indent(l) > base) {
                block.push(next.trim().to_string());
            }
            block.join("\n")
        } else if let Some(q) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            q.replace("''", "'")
        } else if raw.starts_with('"') {
            serde_json::from_str(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
        } else {
            raw.to_string()
        };
        out.insert(key.to_string(), value);
    }
    out
}
