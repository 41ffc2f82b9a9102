//! Per-pod decisions from Istio's injected annotations (`nftmesh::model::pod::istio_sidecar`),
//! on the annotations Istio's own injector tests expect (`tests/data/istio/annotations/`), and
//! what the decided capture does to packets (the reference evaluator).

use nftmesh_test_support as support;

use nftmesh_model::config::{CidrSelection, PortSelection};
use nftmesh_model::pod::{istio_sidecar, keys, PodDecision, SkipReason};
use nftmesh_model::{compile, eval, CaptureConfig, Hook, InterceptionMode, Packet};
use std::collections::BTreeMap;
use support::annotations::load;

/// The status the injector writes with istio-cni on (a native sidecar and istio-validation).
const CNI_STATUS: &str = r#"{"initContainers":["istio-validation","istio-proxy"],"containers":null,"volumes":[],"imagePullSecrets":null,"revision":"default"}"#;

fn captured(a: &BTreeMap<String, String>) -> CaptureConfig {
    match istio_sidecar(a, &CaptureConfig::default()) {
        Ok(PodDecision::Capture(c)) => *c,
        other => panic!("{other:?}"),
    }
}

/// A case of Istio's injector tests with istio-cni's status in place of istio-init's.
fn as_cni(case: &str) -> BTreeMap<String, String> {
    let mut a = load(case);
    a.insert(keys::STATUS.into(), CNI_STATUS.into());
    a
}

fn outbound(cfg: &CaptureConfig, dst: &str, port: u16) -> Option<u16> {
    let p = Packet::local_tcp(
        1000,
        1000,
        "10.0.0.5".parse().unwrap(),
        dst.parse().unwrap(),
        port,
        "eth0",
    );
    eval(&compile(cfg), &p, Hook::Output).unwrap().redirect
}

fn inbound(cfg: &CaptureConfig, port: u16) -> bool {
    let p = Packet::incoming_tcp(
        "10.1.0.9".parse().unwrap(),
        "10.0.0.5".parse().unwrap(),
        port,
        "eth0",
    );
    let o = eval(&compile(cfg), &p, Hook::Prerouting).unwrap();
    o.redirect.is_some() || o.tproxy.is_some()
}

#[test]
fn an_injected_cni_pod_is_captured_with_istio_cni_defaults() {
    let cfg = captured(&load("hello.yaml.cni.injected"));
    assert_eq!(cfg.mode, InterceptionMode::Redirect);
    assert_eq!(cfg.outbound_cidrs_include, CidrSelection::All);
    assert_eq!(cfg.inbound_ports, PortSelection::All);
    assert_eq!(cfg.inbound_ports_exclude, vec![15020, 15021, 15090]);
    // No excludeOutboundPorts annotation: istio-cni's default, the status port.
    assert_eq!(cfg.outbound_ports_exclude, vec![15020]);
    assert_eq!(outbound(&cfg, "10.96.0.10", 80), Some(15001));
    assert_eq!(outbound(&cfg, "10.96.0.10", 15020), None);
    assert!(inbound(&cfg, 8080));
    for port in [15020, 15021, 15090] {
        assert!(!inbound(&cfg, port), "{port}");
    }
    let tproxy = captured(&load("hello-openshift-tproxy.yaml.injected"));
    assert_eq!(tproxy.mode, InterceptionMode::Tproxy);
    let p = Packet::incoming_tcp(
        "10.1.0.9".parse().unwrap(),
        "10.0.0.5".parse().unwrap(),
        8080,
        "eth0",
    );
    assert!(eval(&compile(&tproxy), &p, Hook::Prerouting)
        .unwrap()
        .tproxy
        .is_some());
}

#[test]
fn pods_istio_cni_leaves_alone_are_left_alone() {
    let d = |a: &BTreeMap<String, String>| istio_sidecar(a, &CaptureConfig::default()).unwrap();
    // istio-init installs the capture itself.
    assert_eq!(
        d(&load("hello.yaml.injected")),
        PodDecision::Skip(SkipReason::IstioInit)
    );
    // No sidecar at all.
    let mut plain = load("hello.yaml.cni.injected");
    plain.remove(keys::STATUS);
    assert_eq!(d(&plain), PodDecision::Skip(SkipReason::NoSidecarStatus));
    // A status without istio-proxy (e.g. a gateway's other injection).
    let mut other = as_cni("hello.yaml.cni.injected");
    other.insert(
        keys::STATUS.into(),
        r#"{"initContainers":null,"containers":["app"]}"#.into(),
    );
    assert_eq!(
        d(&other),
        PodDecision::Skip(SkipReason::NoIstioProxy {
            listed: vec!["app".into()]
        })
    );
    // Injection disabled, in any spelling Go's ParseBool takes; an unparsable value is ignored.
    for off in ["false", "False", "0", "f"] {
        let mut a = as_cni("hello.yaml.cni.injected");
        a.insert(keys::INJECT.into(), off.into());
        assert!(
            matches!(d(&a), PodDecision::Skip(SkipReason::InjectDisabled { .. })),
            "{off}"
        );
    }
    let mut a = as_cni("hello.yaml.cni.injected");
    a.insert(keys::INJECT.into(), "nope".into());
    assert!(matches!(d(&a), PodDecision::Capture(_)));
}

#[test]
fn the_traffic_annotations_of_istios_tests_decide_what_packets_do() {
    let cfg = captured(&as_cni("traffic-annotations.yaml.injected"));
    // includeInboundPorts 1,2,3: only those; excludeInboundPorts is then not read (Istio's rules).
    assert_eq!(cfg.inbound_ports, PortSelection::Ports(vec![1, 2, 3]));
    assert!(inbound(&cfg, 2) && !inbound(&cfg, 8080) && !inbound(&cfg, 4));
    assert_eq!(cfg.outbound_ports_exclude, vec![7, 8, 9]);
    // A listed port is captured even when it is one istio-cni always excludes (Istio reads the
    // exclusions only with "*").
    let mut listed = as_cni("traffic-annotations.yaml.injected");
    listed.insert(keys::INCLUDE_INBOUND_PORTS.into(), "15020,8080".into());
    let listed = captured(&listed);
    assert!(inbound(&listed, 15020) && inbound(&listed, 8080) && !inbound(&listed, 15021));
    // includeOutboundIPRanges 127.0.0.1/24,10.96.0.1/24, minus 10.96.0.2/24,10.96.0.3/24.
    assert_eq!(outbound(&cfg, "10.97.0.1", 80), None);
    assert_eq!(outbound(&cfg, "10.96.0.1", 80), None, "excluded wins");
    let empty = captured(&as_cni("traffic-annotations-empty-includes.yaml.injected"));
    assert_eq!(empty.inbound_ports, PortSelection::Ports(vec![]));
    assert_eq!(empty.outbound_cidrs_include, CidrSelection::Cidrs(vec![]));
    assert_eq!(outbound(&empty, "10.97.0.1", 80), None);
    assert!(!inbound(&empty, 8080));
    let wild = captured(&as_cni("traffic-annotations-wildcards.yaml.injected"));
    assert_eq!(outbound(&wild, "10.97.0.1", 80), Some(15001));
    assert_eq!(outbound(&wild, "10.96.0.77", 80), None);
    assert!(inbound(&wild, 8080) && !inbound(&wild, 5) && !inbound(&wild, 15090));
    // The new annotation wins over the deprecated one; the deprecated one alone is read.
    let reroute = captured(&as_cni("reroute-virtual-interfaces.yaml.injected"));
    assert_eq!(
        reroute.reroute_virtual_interfaces,
        vec!["net0ps2".to_string()]
    );
    let kubevirt = captured(&as_cni("kubevirtInterfaces_list.yaml.injected"));
    assert_eq!(
        kubevirt.reroute_virtual_interfaces,
        vec!["net1".to_string(), "net2".to_string()]
    );
}

#[test]
fn settings_not_in_annotations_come_from_the_defaults() {
    let defaults = CaptureConfig {
        proxy_uids: vec![1500],
        proxy_gids: vec![1500],
        ipv6: true,
        ..CaptureConfig::default()
    };
    let mut a = as_cni("hello.yaml.cni.injected");
    a.insert(
        keys::EXCLUDE_OUTBOUND_IP_RANGES.into(),
        "10.0.0.0/8,fd00::/8".into(),
    );
    let PodDecision::Capture(cfg) = istio_sidecar(&a, &defaults).unwrap() else {
        panic!()
    };
    assert_eq!((cfg.proxy_uids.clone(), cfg.ipv6), (vec![1500], true));
    assert_eq!(cfg.outbound_cidrs_exclude.len(), 2);
    // With IPv6 off, IPv6 prefixes are dropped as Istio's IPv4 rules drop them.
    let cfg = captured(&a);
    assert_eq!(
        cfg.outbound_cidrs_exclude,
        vec!["10.0.0.0/8".parse().unwrap()]
    );
}

#[test]
fn a_malformed_annotation_is_an_error_naming_it_and_its_value() {
    for (key, value) in [
        (keys::INTERCEPTION_MODE, "NONE"),
        (keys::INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.1"),
        (keys::EXCLUDE_OUTBOUND_IP_RANGES, "*"),
        (keys::INCLUDE_INBOUND_PORTS, "80,http"),
        (keys::EXCLUDE_INBOUND_PORTS, "80,,81"),
        (keys::EXCLUDE_OUTBOUND_PORTS, "70000"),
        (keys::INCLUDE_OUTBOUND_PORTS, "0"),
        (keys::EXCLUDE_INTERFACES, "eth0 eth1"),
        (keys::REROUTE_VIRTUAL_INTERFACES, "a-name-longer-than-15"),
        (keys::STATUS, "{not json"),
    ] {
        let mut a = as_cni("hello.yaml.cni.injected");
        a.insert(key.into(), value.into());
        let e = istio_sidecar(&a, &CaptureConfig::default()).unwrap_err();
        assert_eq!(
            (e.annotation.as_str(), e.value.as_str()),
            (key, value),
            "{e}"
        );
        let msg = e.to_string();
        assert!(msg.contains(key) && msg.contains(value), "{msg}");
    }
    // Both annotations of a contradiction are named.
    let mut a = as_cni("hello.yaml.cni.injected");
    a.insert(keys::INCLUDE_OUTBOUND_PORTS.into(), "8080".into());
    a.insert(keys::EXCLUDE_OUTBOUND_PORTS.into(), "8080".into());
    let e = istio_sidecar(&a, &CaptureConfig::default()).unwrap_err();
    assert!(e.annotation.contains(keys::INCLUDE_OUTBOUND_PORTS), "{e}");
    assert!(e.annotation.contains(keys::EXCLUDE_OUTBOUND_PORTS), "{e}");
}
