//! The example binaries in `examples/`, run in fresh network namespaces: each one's `run` is
//! called as its `main` would call it, and what it leaves is checked with `nft`.

use nftmesh_test_support as support;

#[path = "../examples/cleanup.rs"]
mod cleanup;
#[path = "../examples/inspect.rs"]
mod inspect;
#[path = "../examples/sidecar_redirect.rs"]
mod sidecar_redirect;
#[path = "../examples/tproxy.rs"]
mod tproxy;
#[path = "../examples/translate_file.rs"]
mod translate_file;

use nftmesh::netlink::netns::run_in_new;
use nftmesh::Namespace;

#[test]
fn sidecar_inspect_and_cleanup_examples() {
    if let Some(why) = support::kernel_unavailable() {
        support::skip(&why);
        return;
    }
    let (installed, before, inspected, removed, after) = run_in_new(|| {
        let ns = Namespace::current().unwrap();
        let before = inspect::run(&ns).unwrap();
        let installed = sidecar_redirect::run(&ns).unwrap();
        let inspected = inspect::run(&ns).unwrap();
        let removed = cleanup::run(&ns).unwrap();
        let after = support::run_here("nft", &["list", "tables"], "");
        (installed, before, inspected, removed, after)
    })
    .unwrap();
    assert!(installed.contains("redirect to :15001"), "{installed}");
    assert!(installed.contains("one transaction"));
    assert!(
        !before.1.is_empty(),
        "before the install, inspect reports drift"
    );
    assert!(inspected.1.is_empty(), "after it, none: {:?}", inspected.1);
    assert_eq!(removed, 1);
    assert!(!after.contains("istio-proxy"), "{after}");
}

#[test]
fn tproxy_example_installs_rules_and_routing_and_cleanup_removes_both() {
    if let Some(why) = support::kernel_unavailable() {
        support::skip(&why);
        return;
    }
    let (text, rules, removed, rules_after) = run_in_new(|| {
        let ns = Namespace::current().unwrap();
        let text = tproxy::run(&ns).unwrap();
        let rules = support::run_here("ip", &["rule"], "");
        let removed = cleanup::run(&ns).unwrap();
        let rules_after = support::run_here("ip", &["rule"], "");
        (text, rules, removed, rules_after)
    })
    .unwrap();
    assert!(text.contains("tproxy"), "{text}");
    assert!(rules.contains("fwmark 0x539 lookup 133"), "{rules}");
    assert_eq!(removed, 2);
    assert!(!rules_after.contains("lookup 133"), "{rules_after}");
}

#[test]
fn translate_file_example_translates_an_istio_trace_and_names_bad_input() {
    let text = support::golden("iptables", "tproxy");
    let nft = translate_file::run(&text, false, true).unwrap();
    assert!(nft.contains("add table ip6 mangle"), "{nft}");
    assert!(nft.contains("tproxy to :15006"), "{nft}");
    let err =
        translate_file::run("*nat\n-A OUTPUT -j NOWHERE\nCOMMIT\n", false, false).unwrap_err();
    assert!(err.contains("line 2, column 14"), "{err}");
}
