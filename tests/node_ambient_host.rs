//! Istio ambient's node rules with real traffic: each test runs in a private node namespace
//! (`unshare -n -m`, see `support::node`) holding the pod namespace it creates, joined to the
//! node by a veth pair. A connection from the kubelet uid to a pod address in
//! the probe set leaves with source 169.254.7.127; from another uid, or once the address is
//! removed from the set, it keeps the node's address. Set updates touch no rule, and
//! re-installing or removing the host rules keeps the set's elements. The same over IPv6,
//! from Istio's IPv6 probe address. Removing the host rules leaves what Istio's own cleanup
//! (`flush table`) leaves, and removing an address a probe set does not hold changes nothing.

use nftmesh_test_support as support;

use nftmesh::ambient::{AmbientHostConfig, HostCapture, HostCleanup, PROBE_SET_V4, PROBE_SET_V6};
use nftmesh::netlink::netns::run_in;
use nftmesh::netlink::probe::connect_as;
use nftmesh::netlink::Connection;
use nftmesh::Namespace;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::named_netns::Netns;
use support::node::{in_private_node, Node};

const NODE: &str = "10.50.0.1";
const POD: &str = "10.50.0.2";
const NODE6: &str = "fd00:50::1";
const POD6: &str = "fd00:50::2";

/// In the private node: the node and a pod namespace joined by a veth pair.
fn setup() -> Option<(Node, Netns)> {
    if let Some(why) = support::kernel_unavailable() {
        support::skip(&why);
        return None;
    }
    let pod = match Netns::new() {
        Ok(p) => p,
        Err(e) => {
            support::skip(&format!("cannot create a pod network namespace: {e}"));
            return None;
        }
    };
    let node = Node;
    node.exec("ip", &["link", "set", "lo", "up"]);
    pod.exec("ip", &["link", "set", "lo", "up"], None);
    node.exec(
        "ip",
        &[
            "link", "add", "vn", "type", "veth", "peer", "name", "vp", "netns", &pod.0,
        ],
    );
    node.exec("ip", &["addr", "add", &format!("{NODE}/24"), "dev", "vn"]);
    node.exec("ip", &["link", "set", "vn", "up"]);
    pod.exec(
        "ip",
        &["addr", "add", &format!("{POD}/24"), "dev", "vp"],
        None,
    );
    node.exec(
        "ip",
        &["addr", "add", &format!("{NODE6}/64"), "dev", "vn", "nodad"],
    );
    pod.exec(
        "ip",
        &["addr", "add", &format!("{POD6}/64"), "dev", "vp", "nodad"],
        None,
    );
    pod.exec("ip", &["link", "set", "vp", "up"], None);
    // The pod answers the probe address through the node, as a pod's default route would.
    pod.exec(
        "ip",
        &["route", "add", "169.254.7.127/32", "via", NODE, "dev", "vp"],
        None,
    );
    let probe6 = format!("{}/128", nftmesh::ambient::PROBE_SNAT_IPV6);
    pod.exec(
        "ip",
        &["-6", "route", "add", &probe6, "via", NODE6, "dev", "vp"],
        None,
    );
    Some((node, pod))
}

/// The source address the pod sees for a connection from `uid` on the node to the pod's
/// port 8080 over IPv4 (None: no connection within 2 s).
fn source_seen(node: &Node, pod: &Netns, uid: u32) -> Option<IpAddr> {
    source_seen_at(node, pod, uid, POD.parse().unwrap())
}

/// The same to the pod's address `pod_ip`.
fn source_seen_at(node: &Node, pod: &Netns, uid: u32, pod_ip: IpAddr) -> Option<IpAddr> {
    let pod_path = PathBuf::from(pod.path());
    let listener = run_in(&pod_path, move || {
        TcpListener::bind((pod_ip, 8080)).unwrap()
    })
    .unwrap();
    listener.set_nonblocking(true).unwrap();
    let to = SocketAddr::new(pod_ip, 8080);
    let node_path = PathBuf::from(node.path());
    let client = std::thread::spawn(move || {
        run_in(&node_path, move || {
            connect_as(uid, uid, to, Duration::from_secs(2)).is_ok()
        })
        .unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut seen = None;
    while Instant::now() < deadline {
        if let Ok((_, peer)) = listener.accept() {
            seen = Some(peer.ip());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = client.join();
    seen
}

#[test]
fn kubelets_probes_to_pods_in_the_set_are_snated_and_the_set_is_kept() {
    if in_private_node("kubelets_probes_to_pods_in_the_set_are_snated_and_the_set_is_kept")
        != Some(true)
    {
        return;
    }
    let Some((node, pod)) = setup() else { return };
    let ns = Namespace::open(node.path()).unwrap();
    let host = HostCapture::new(&AmbientHostConfig::new(1000));
    ns.install_host(&host).unwrap();
    let probe: IpAddr = "169.254.7.127".parse().unwrap();
    let node_ip: IpAddr = NODE.parse().unwrap();
    let pod_ip: IpAddr = POD.parse().unwrap();
    // Not in the set yet: the node's own address.
    assert_eq!(source_seen(&node, &pod, 1000), Some(node_ip));
    // The chain with rule handles: an element update must leave it exactly as it was.
    let chain = || {
        node.exec(
            "nft",
            &[
                "-a",
                "list",
                "chain",
                "inet",
                "istio-ambient-nat",
                "postrouting",
            ],
        )
    };
    let rules_before = chain();
    ns.add_probes(&[pod_ip]).unwrap();
    assert_eq!(ns.probes().unwrap(), vec![pod_ip]);
    assert_eq!(
        chain(),
        rules_before,
        "the element update touched the rules"
    );
    assert_eq!(
        source_seen(&node, &pod, 1000),
        Some(probe),
        "kubelet uid, pod in the set"
    );
    assert_eq!(source_seen(&node, &pod, 2000), Some(node_ip), "another uid");
    // Re-installing keeps the element; removing the host rules keeps the set.
    ns.install_host(&host).unwrap();
    assert_eq!(ns.probes().unwrap(), vec![pod_ip]);
    assert_eq!(source_seen(&node, &pod, 1000), Some(probe));
    ns.remove_probes(&[pod_ip]).unwrap();
    assert!(ns.probes().unwrap().is_empty());
    assert_eq!(
        source_seen(&node, &pod, 1000),
        Some(node_ip),
        "removed from the set"
    );
    ns.add_probes(&[pod_ip]).unwrap();
    ns.remove_host().unwrap();
    assert_eq!(
        ns.probes().unwrap(),
        vec![pod_ip],
        "the set survives the cleanup"
    );
    assert!(!node.list().contains("snat"), "{}", node.list());
    assert_eq!(source_seen(&node, &pod, 1000), Some(node_ip));
}

#[test]
fn over_ipv6_kubelets_probes_leave_from_istios_ipv6_probe_address() {
    if in_private_node("over_ipv6_kubelets_probes_leave_from_istios_ipv6_probe_address")
        != Some(true)
    {
        return;
    }
    let Some((node, pod)) = setup() else { return };
    let ns = Namespace::open(node.path()).unwrap();
    let host = HostCapture::new(&AmbientHostConfig {
        ipv6: true,
        ..AmbientHostConfig::new(1000)
    });
    ns.install_host(&host).unwrap();
    let probe = IpAddr::from(nftmesh::ambient::PROBE_SNAT_IPV6);
    let node_ip: IpAddr = NODE6.parse().unwrap();
    let pod_ip: IpAddr = POD6.parse().unwrap();
    assert_eq!(
        source_seen_at(&node, &pod, 1000, pod_ip),
        Some(node_ip),
        "not in the set"
    );
    ns.add_probes(&[pod_ip]).unwrap();
    assert_eq!(
        source_seen_at(&node, &pod, 1000, pod_ip),
        Some(probe),
        "kubelet uid, pod in the set"
    );
    assert_eq!(
        source_seen_at(&node, &pod, 2000, pod_ip),
        Some(node_ip),
        "another uid"
    );
    // The IPv4 set is another set: the IPv4 address of the same pod is not in it.
    let pod4: IpAddr = POD.parse().unwrap();
    assert_eq!(source_seen(&node, &pod, 1000), Some(NODE.parse().unwrap()));
    assert!(!ns.probes().unwrap().contains(&pod4));
    ns.remove_probes(&[pod_ip]).unwrap();
    assert_eq!(
        source_seen_at(&node, &pod, 1000, pod_ip),
        Some(node_ip),
        "removed"
    );
    ns.remove_host().unwrap();
}

/// Istio's node table as its node agent leaves it (an `nft -f` script): the probe sets as
/// `initializeSets` creates them and an address in each as `AddIP` adds it
/// (`cni/pkg/nftables/host_sets.go`), then the host rules of Istio's `hostprobe_ipv6` golden
/// (`tests/data/istio/ambient/nftables/`, written by `CreateHostRulesForHealthChecks`).
fn istios_host_table() -> String {
    let golden = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/istio/ambient/nftables/hostprobe_ipv6.golden"
    ))
    .unwrap();
    let comment = "comment \"UUID of the pods that are part of ambient mesh\"";
    format!(
        "add table inet istio-ambient-nat\n\
         add set inet istio-ambient-nat {PROBE_SET_V4} {{ type ipv4_addr; {comment}; }}\n\
         add set inet istio-ambient-nat {PROBE_SET_V6} {{ type ipv6_addr; {comment}; }}\n\
         add element inet istio-ambient-nat {PROBE_SET_V4} {{ {POD} comment \"pod-a\" }}\n\
         add element inet istio-ambient-nat {PROBE_SET_V6} {{ {POD6} comment \"pod-a\" }}\n\
         {golden}"
    )
}

/// The ruleset generation of the namespace at `path` (changes with every commit).
fn generation(path: &str) -> u32 {
    run_in(&PathBuf::from(path), || Connection::open()?.generation())
        .unwrap()
        .unwrap()
}

#[test]
fn the_host_cleanup_leaves_what_istios_flush_table_leaves_both_probe_sets_included() {
    if in_private_node(
        "the_host_cleanup_leaves_what_istios_flush_table_leaves_both_probe_sets_included",
    ) != Some(true)
    {
        return;
    }
    if let Some(why) = support::kernel_unavailable() {
        support::skip(&why);
        return;
    }
    let node = Node;
    let script = istios_host_table();
    support::run_here("nft", &["-f", "-"], &script);
    // The oracle: Istio's DeleteHostRules, `flush table inet istio-ambient-nat`, in another
    // namespace holding the same table.
    let oracle = Netns::new().unwrap();
    oracle.exec("nft", &["-f", "-"], Some(&script));
    oracle.exec(
        "nft",
        &["flush", "table", "inet", "istio-ambient-nat"],
        None,
    );
    // No setting is given: neither kubelet's uid nor whether the node has IPv6 (it has no
    // global IPv6 address, which is what deleted the IPv6 set before).
    let ns = Namespace::open(node.path()).unwrap();
    let done = ns.remove_host().unwrap();
    assert_eq!(node.list(), oracle.list());
    assert!(node
        .list()
        .contains(&format!("elements = {{ {POD6} comment")));
    assert_eq!(
        done,
        HostCleanup {
            table_found: true,
            rules_flushed: 2,
            sets_kept: vec![(PROBE_SET_V4.into(), 1), (PROBE_SET_V6.into(), 1)],
        }
    );
    let pod: IpAddr = POD.parse().unwrap();
    let pod6: IpAddr = POD6.parse().unwrap();
    assert_eq!(ns.probes().unwrap(), vec![pod, pod6]);
    // Again: nothing left to flush, the same listing.
    assert_eq!(ns.remove_host().unwrap().rules_flushed, 0);
    assert_eq!(node.list(), oracle.list());
    // Without the table: nothing is done and no table is created.
    node.exec("nft", &["delete", "table", "inet", "istio-ambient-nat"]);
    let before = generation(&node.path());
    assert_eq!(ns.remove_host().unwrap(), HostCleanup::default());
    assert_eq!(generation(&node.path()), before, "nothing committed");
    assert_eq!(node.list(), "");
}

#[test]
fn removing_probe_addresses_not_in_their_set_commits_nothing_and_names_them() {
    if in_private_node("removing_probe_addresses_not_in_their_set_commits_nothing_and_names_them")
        != Some(true)
    {
        return;
    }
    if let Some(why) = support::kernel_unavailable() {
        support::skip(&why);
        return;
    }
    let node = Node;
    let path = node.path();
    let ns = Namespace::open(&path).unwrap();
    let pod: IpAddr = POD.parse().unwrap();
    let other: IpAddr = "10.50.0.9".parse().unwrap();
    let pod6: IpAddr = POD6.parse().unwrap();
    // No host rules at all: no set holds them, nothing is committed or created.
    let before = generation(&path);
    let r = ns.remove_probes(&[pod, pod6]).unwrap();
    assert_eq!(r.no_set, vec![pod, pod6]);
    assert!(r.removed.is_empty() && r.not_in_set.is_empty());
    assert_eq!(generation(&path), before);
    assert_eq!(node.list(), "");
    // Installed without IPv6, with one address: an address the set lacks and an IPv6
    // address (no IPv6 set) commit nothing.
    ns.install_host(&HostCapture::new(&AmbientHostConfig::new(1000)))
        .unwrap();
    ns.add_probes(&[pod]).unwrap();
    let (before, listed) = (generation(&path), node.list());
    let r = ns.remove_probes(&[other, pod6]).unwrap();
    assert_eq!(r.not_in_set, vec![other]);
    assert_eq!(r.no_set, vec![pod6]);
    assert!(r.removed.is_empty());
    assert_eq!(generation(&path), before, "nothing committed");
    assert_eq!(node.list(), listed);
    // With one present among them: it goes, the other is named, no error.
    let r = ns.remove_probes(&[other, pod]).unwrap();
    assert_eq!((r.removed, r.not_in_set), (vec![pod], vec![other]));
    assert!(ns.probes().unwrap().is_empty());
}
