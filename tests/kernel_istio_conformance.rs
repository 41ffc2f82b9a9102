//! Conformance with Istio: for every case of CASES.md, our compiled ruleset and Istio's
//! nftables golden, each loaded with the real `nft -f` into a fresh network namespace, list the
//! same `nft list ruleset`, except for the differences `docs/istio-differences.md` lists, and
//! exactly those.

use nftmesh_test_support as support;

use nftmesh_model::{compile, render};
use support::{cases::cases, cases::TEST_GROUPS, diff_lines, golden, listing_lines, netns};

#[test]
fn every_istio_case_lists_like_istios_golden_except_documented_differences() {
    if let Some(why) = netns::oracle_unavailable() {
        support::skip(&format!("the nft oracle is unavailable: {why}"));
        return;
    }
    let groups = netns::group_file(&TEST_GROUPS);
    // Sidecar cases are the headings without the `ambient/` prefix.
    let docs =
        support::documented_differences(|h| (!h.starts_with("ambient/")).then(|| h.to_string()));
    let all = cases();
    assert_eq!(all.len(), 28, "CASES.md has 28 cases");
    let mut failures = Vec::new();
    for case in &all {
        let g = case.uses_group_names().then(|| groups.path());
        let ours = render(&compile(&case.config()));
        let ours = netns::load_and_list(&ours, g)
            .unwrap_or_else(|e| panic!("{}: nft refused our render: {e}\n{ours}", case.name));
        let theirs = netns::load_and_list(&golden("nftables", case.name), g)
            .unwrap_or_else(|e| panic!("{}: nft refused the golden: {e}", case.name));
        let diff = diff_lines(&listing_lines(&theirs), &listing_lines(&ours));
        let expected = docs.get(case.name).cloned().unwrap_or_default();
        let mut got_sorted = diff.clone();
        got_sorted.sort();
        let mut want_sorted = expected.clone();
        want_sorted.sort();
        if got_sorted != want_sorted {
            failures.push(format!(
                "## `{}`\n```diff\n{}\n```\n(documented:\n{})",
                case.name,
                diff.join("\n"),
                expected.join("\n")
            ));
        }
    }
    for name in docs.keys() {
        assert!(
            all.iter().any(|c| c.name == name),
            "docs/istio-differences.md names unknown case {name}"
        );
    }
    assert!(
        failures.is_empty(),
        "undocumented or missing differences:\n{}",
        failures.join("\n\n")
    );
}
