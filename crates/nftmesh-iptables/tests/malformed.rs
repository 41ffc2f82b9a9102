//! The malformed-input corpus (`tests/data/malformed.txt`): each input gives its expected
//! typed error with line, column and the offending token.

use nftmesh_iptables::parse;
use nftmesh_model::expr::IpVersion;

#[test]
fn every_malformed_input_gives_its_typed_error_with_line_and_column() {
    let data = include_str!("data/malformed.txt");
    let mut cases: Vec<(String, String)> = Vec::new();
    for line in data.lines() {
        if let Some(h) = line.strip_prefix("=== ") {
            cases.push((h.to_string(), String::new()));
        } else if let Some((_, body)) = cases.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (header, input) in &cases {
        // KIND may hold blanks (`BadTarget("...")`): the position is the first `N:M` word.
        let words: Vec<&str> = header.split(' ').collect();
        let at = words
            .iter()
            .position(|w| {
                w.split_once(':').is_some_and(|(a, b)| {
                    !a.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
                })
            })
            .unwrap_or_else(|| panic!("no LINE:COL in header {header}"));
        let kind = words[..at].join(" ");
        let token = words[at + 1..].join(" ");
        let (line, col) = words[at].split_once(':').unwrap();
        let (kind, token) = (kind.as_str(), token.as_str());
        match parse(input, IpVersion::V4) {
            Ok(_) => failures.push(format!("{header}: parsed\n{input}")),
            Err(e) => {
                let got_kind = format!("{:?}", e.kind);
                let got = (
                    got_kind.as_str(),
                    e.span.line.to_string(),
                    e.span.col.to_string(),
                    e.token.as_str(),
                );
                if got != (kind, line.to_string(), col.to_string(), token) {
                    failures.push(format!("{header}: got {got:?} ({e})"));
                }
                // The message names where and what.
                let msg = e.to_string();
                if !msg.contains(&format!("line {line}, column {col}")) || !msg.contains(token) {
                    failures.push(format!("{header}: message {msg}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_rule_at_the_match_limit_parses_and_comments_do_not_count() {
    let marks = |n: usize| {
        (0..n)
            .map(|i| format!("-m mark --mark {i}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let text = format!(
        "*mangle\n-A PREROUTING -m comment --comment a -m comment --comment b {} -j ACCEPT\nCOMMIT\n",
        marks(nftmesh_iptables::rule::MAX_MATCHES)
    );
    let rs = nftmesh_iptables::parse(&text, nftmesh_model::expr::IpVersion::V4)
        .expect("64 matches parse");
    assert_eq!(rs.tables[0].chains[0].rules[0].matches.len(), 66);
}
