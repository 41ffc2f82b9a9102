//! `nftmesh ambient`: plan, apply, diff and cleanup of ztunnel's in-pod capture in a named
//! namespace, and the node's probe SNAT with `host apply|cleanup` and `host probe add|remove` in
//! a private node namespace.

mod common;

use common::{netns_or_skip, nftmesh};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn ambient_plan_matches_the_library_and_changes_nothing() {
    let o = nftmesh(&["ambient", "plan", "--dns-capture", "on", "--ipv6", "off"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let want = nftmesh::ambient::compile_inpod(&nftmesh::ambient::AmbientConfig {
        dns_capture: true,
        ..Default::default()
    });
    assert_eq!(text(&o.stdout), nftmesh::model::render(&want));
    let o = nftmesh(&[
        "ambient",
        "plan",
        "--reroute-virtual-interfaces",
        "x".repeat(16).as_str(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("reroute_virtual_interfaces"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn probe_snat_addresses_default_to_istios() {
    // Istio's node agent defaults: HOST_PROBE_SNAT_IP and HOST_PROBE_SNAT_IPV6.
    let o = nftmesh(&["ambient", "plan", "--ipv6", "on"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let plan = text(&o.stdout);
    assert!(plan.contains("ip saddr 169.254.7.127/32 "), "{plan}");
    assert!(
        plan.contains("ip6 saddr fd16:9254:7127:1337:ffff:ffff:ffff:ffff/128 "),
        "{plan}"
    );
    let o = nftmesh(&[
        "ambient",
        "host",
        "plan",
        "--kubelet-uid",
        "1000",
        "--ipv6",
        "on",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let plan = text(&o.stdout);
    assert!(plan.contains("snat ip to 169.254.7.127"), "{plan}");
    assert!(
        plan.contains("snat ip6 to fd16:9254:7127:1337:ffff:ffff:ffff:ffff"),
        "{plan}"
    );
}

#[test]
fn ambient_apply_diff_and_cleanup_in_a_pod() {
    let Some(ns) = netns_or_skip() else { return };
    ns.exec("ip", &["link", "set", "lo", "up"], None);
    let path = ns.path();
    let flags = [
        "--network-namespace",
        path.as_str(),
        "--dns-capture",
        "on",
        "--bypass-inbound-capture",
        "--reroute-virtual-interfaces",
        "veth9,veth8",
        "--ipv6",
        "off",
    ];
    let run = |cmd: &str| nftmesh(&[&["ambient", cmd][..], &flags[..]].concat());
    let o = run("diff");
    assert_eq!(o.status.code(), Some(1), "drift before the install");
    let out = text(&o.stdout);
    assert_eq!(
        out.lines().next(),
        Some("drift (- wanted by the capture settings, + live in the namespace):"),
        "{out}"
    );
    assert!(out.contains("missing table"), "{out}");
    let o = run("apply");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let live = ns.list();
    for want in [
        "table inet istio-ambient-nat",
        "table inet istio-ambient-raw",
        "\"veth9\"",
        "redirect to :15053",
    ] {
        assert!(live.contains(want), "{want}: {live}");
    }
    assert!(
        !live.contains("redirect to :15006"),
        "bypassed inbound: {live}"
    );
    assert!(ns
        .exec("ip", &["rule"], None)
        .contains("fwmark 0x111/0xfff lookup 100"));
    let o = run("diff");
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let o = run("cleanup");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!ns.list().contains("istio-ambient"), "{}", ns.list());
    assert!(!ns.exec("ip", &["rule"], None).contains("lookup 100"));
}

#[test]
fn ambient_host_apply_probe_add_remove_and_cleanup_on_a_node() {
    // The node is a private one (unshare -n -m), entered by path like any other namespace.
    if common::node::in_private_node("ambient_host_apply_probe_add_remove_and_cleanup_on_a_node")
        != Some(true)
    {
        return;
    }
    let node = common::node::Node;
    let path = node.path();
    let host = |args: &[&str]| {
        nftmesh(
            &[
                &["ambient", "host"][..],
                args,
                &["--network-namespace", path.as_str()],
            ]
            .concat(),
        )
    };
    let o = host(&["apply", "--kubelet-uid", "1000", "--ipv6", "on"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = host(&["probe", "add", "10.1.2.3", "fd00::3"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let live = node.list();
    assert!(live.contains("elements = { 10.1.2.3 }"), "{live}");
    assert!(live.contains("elements = { fd00::3 }"), "{live}");
    assert!(live.contains("snat ip to 169.254.7.127"), "{live}");
    // Re-applying keeps the elements; cleanup removes the rule and keeps the sets.
    let o = host(&["apply", "--kubelet-uid", "1000", "--ipv6", "on"]);
    assert!(o.status.success());
    assert!(
        node.list().contains("elements = { 10.1.2.3 }"),
        "{}",
        node.list()
    );
    let o = host(&["probe", "remove", "10.1.2.3"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!node.list().contains("10.1.2.3"), "{}", node.list());
    // Cleanup as the README writes it, with no setting: the node has no global IPv6 address,
    // and still both families' sets keep their addresses (Istio's `flush table`).
    let o = host(&["cleanup"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let live = node.list();
    assert!(!live.contains("snat"), "{live}");
    assert!(live.contains("elements = { fd00::3 }"), "{live}");
    assert!(live.contains("istio-inpod-probes-v4"), "{live}");
    assert!(
        text(&o.stderr).contains(
            "flushed 2 rule(s) of table inet istio-ambient-nat (the probe SNAT); its chains stay \
             and so do its sets, with their addresses: istio-inpod-probes-v4 (0 addresses), \
             istio-inpod-probes-v6 (1 address)"
        ),
        "{}",
        text(&o.stderr)
    );
    let o = host(&["probe", "add", "not-an-address"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "clap refuses it: {}",
        text(&o.stderr)
    );
}

#[test]
fn ambient_host_probe_remove_of_an_absent_address_is_a_no_op_that_says_so() {
    if common::node::in_private_node(
        "ambient_host_probe_remove_of_an_absent_address_is_a_no_op_that_says_so",
    ) != Some(true)
    {
        return;
    }
    let node = common::node::Node;
    let path = node.path();
    let host = |args: &[&str]| {
        nftmesh(
            &[
                &["ambient", "host"][..],
                args,
                &["--network-namespace", path.as_str()],
            ]
            .concat(),
        )
    };
    // Before any host rules: the sets do not exist, which the message says; nothing created.
    let o = host(&["probe", "remove", "10.1.2.3"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(
            "10.1.2.3 was not removed: table inet istio-ambient-nat has no set \
             istio-inpod-probes-v4 here (the host rules are not installed in this namespace)"
        ),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(node.list(), "");
    let o = host(&["cleanup"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("no table inet istio-ambient-nat in this namespace"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(node.list(), "");
    let o = host(&["apply", "--kubelet-uid", "1000", "--ipv6", "on"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = host(&["probe", "add", "10.1.2.3"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // One address present, one absent: exit 0, each named with what happened to it.
    let o = host(&["probe", "remove", "10.9.9.9", "10.1.2.3"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let said = text(&o.stderr);
    assert!(
        said.contains("10.9.9.9 was not in set istio-inpod-probes-v4: nothing to remove"),
        "{said}"
    );
    assert!(
        said.contains("removed 10.1.2.3 from set istio-inpod-probes-v4"),
        "{said}"
    );
    assert!(!node.list().contains("10.1.2.3"), "{}", node.list());
}
