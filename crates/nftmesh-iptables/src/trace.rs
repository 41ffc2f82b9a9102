//! Istio's iptables goldens: the command trace of `istio-iptables` (see
//! `tests/data/istio/sidecar/CASES.md`), read as an IPv4 and an optional IPv6 iptables-restore input.
//!
//! How the trace is read: lines that are exactly `iptables-save` or `ip6tables-save` are the
//! commands the generator ran to read the state back; they are skipped. Everything else is
//! restore input. The IPv4 tables come first; a table name that appears a second time starts
//! the IPv6 part (Istio writes the same table names again for ip6tables-restore). Line numbers
//! in errors are those of the whole trace.

use crate::ast::IptRuleset;
use crate::error::ParseError;
use crate::parse::parse_lines;
use nftmesh_model::expr::IpVersion;

/// Whether a line is one of the trace's `iptables-save` / `ip6tables-save` marker lines.
pub fn is_marker(line: &str) -> bool {
    matches!(line.trim(), "iptables-save" | "ip6tables-save")
}

/// The IPv4 and (if present) IPv6 parts of a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The IPv4 ruleset.
    pub v4: IptRuleset,
    /// The IPv6 ruleset, when the trace has one.
    pub v6: Option<IptRuleset>,
}

impl Trace {
    /// Both parts, IPv4 first.
    pub fn parts(&self) -> Vec<IptRuleset> {
        std::iter::once(self.v4.clone())
            .chain(self.v6.clone())
            .collect()
    }
}

/// The restore input of a trace, split into its IPv4 and (if present) IPv6 parts, as numbered
/// lines (numbers as in the whole trace), marker lines removed.
pub fn split_trace(text: &str) -> Vec<(IpVersion, Vec<(usize, &str)>)> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !is_marker(l))
        .collect();
    let mut seen: Vec<String> = Vec::new();
    let mut split = lines.len();
    for (k, (_, l)) in lines.iter().enumerate() {
        if let Some(rest) = l.trim_start().strip_prefix('*') {
            let name = rest.trim().to_string();
            if seen.contains(&name) {
                split = k;
                break;
            }
            seen.push(name);
        }
    }
    let mut out = vec![(IpVersion::V4, lines[..split].to_vec())];
    if split < lines.len() {
        out.push((IpVersion::V6, lines[split..].to_vec()));
    }
    out
}

/// [`split_trace`] as restore input text: each part's lines joined, for feeding a part to
/// `iptables-restore` / `ip6tables-restore` (line numbers are not kept).
pub fn split_trace_text(text: &str) -> Vec<(IpVersion, String)> {
    split_trace(text)
        .into_iter()
        .map(|(v, lines)| (v, lines.iter().map(|(_, l)| format!("{l}\n")).collect()))
        .collect()
}

/// Split and parse an Istio iptables trace.
pub fn parse_trace(text: &str) -> Result<Trace, ParseError> {
    let mut parts = split_trace(text).into_iter();
    let v4 = match parts.next() {
        Some((family, lines)) => parse_lines(lines, family)?,
        None => parse_lines(Vec::new(), IpVersion::V4)?,
    };
    let v6 = match parts.next() {
        Some((family, lines)) => Some(parse_lines(lines, family)?),
        None => None,
    };
    Ok(Trace { v4, v6 })
}
