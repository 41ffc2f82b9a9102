//! `nftmesh plan`: istio-iptables flags, environment variables and config files.

use nftmesh_model::config::{CaptureConfig, IstioSettings};
use nftmesh_model::{compile, render};
use std::process::{Command, Output};

fn nftmesh(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nftmesh"));
    cmd.args(args).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run nftmesh")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn flags_map_onto_istio_settings() {
    let o = nftmesh(
        &[
            "plan",
            "-p",
            "15101",
            "-z",
            "15106",
            "-u",
            "3,4",
            "-g",
            "1,2",
            "-m",
            "TPROXY",
            "-b",
            "*",
            "-d",
            "15090,15021",
            "-i",
            "10.0.0.0/8",
            "-x",
            "10.1.0.0/16",
            "-q",
            "9000",
            "-o",
            "9001",
            "-c",
            "eth9",
            "-k",
            "veth1",
            "--ipv6",
            "off",
            "--drop-invalid",
        ],
        &[],
    );
    let want = IstioSettings {
        proxy_port: "15101".into(),
        inbound_capture_port: "15106".into(),
        proxy_uid: "3,4".into(),
        proxy_gid: "1,2".into(),
        inbound_interception_mode: "TPROXY".into(),
        inbound_ports: "*".into(),
        inbound_ports_exclude: "15090,15021".into(),
        outbound_ip_ranges_include: "10.0.0.0/8".into(),
        outbound_ip_ranges_exclude: "10.1.0.0/16".into(),
        outbound_ports_include: "9000".into(),
        outbound_ports_exclude: "9001".into(),
        exclude_interfaces: "eth9".into(),
        kube_virt_interfaces: "veth1".into(),
        drop_invalid: true,
        ..IstioSettings::default()
    };
    assert_eq!(stdout(&o), render(&compile(&want.to_config().unwrap())));
}

#[test]
fn environment_variables_are_read_like_istio() {
    let o = nftmesh(
        &["plan", "--ipv6", "off"],
        &[
            ("ISTIO_INBOUND_PORTS", "8080"),
            ("ISTIO_SERVICE_CIDR", "*"),
            ("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "888"),
            ("INVALID_DROP", "true"),
        ],
    );
    let text = stdout(&o);
    assert!(
        text.contains("tcp dport 8080 counter jump istio-in-redirect"),
        "{text}"
    );
    assert!(text.contains("meta skgid 888 counter return"), "{text}");
    assert!(text.contains("istio-drop counter drop"), "{text}");
}

#[test]
fn dns_servers_are_explicit_or_from_resolv_conf() {
    let o = nftmesh(
        &[
            "plan",
            "--ipv6",
            "off",
            "--redirect-dns",
            "--dns-servers",
            "10.96.0.10",
        ],
        &[],
    );
    assert!(stdout(&o).contains("ip daddr 10.96.0.10/32 tcp dport 53 counter redirect to :15053"));
    let o = nftmesh(
        &[
            "plan",
            "--ipv6",
            "off",
            "--redirect-dns",
            "--capture-all-dns",
        ],
        &[],
    );
    assert!(stdout(&o).contains("meta l4proto tcp tcp dport 53 counter redirect to :15053"));
}

#[test]
fn config_file_replaces_the_flags() {
    let cfg = CaptureConfig {
        proxy_port: 16001,
        ..CaptureConfig::sidecar()
    };
    let path = std::env::temp_dir().join(format!("nftmesh-plan-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
    let o = nftmesh(&["plan", "--config", path.to_str().unwrap()], &[]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(stdout(&o), render(&compile(&cfg)));
}

#[test]
fn bad_input_is_a_typed_error_and_a_failure_exit() {
    let o = nftmesh(&["plan", "-b", "80,0"], &[]);
    assert!(!o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "nftmesh: inbound_ports: invalid port \"0\": expected an integer from 1 to 65535"
    );
    let o = nftmesh(
        &[
            "plan",
            "--ipv6",
            "off",
            "--outbound-owner-groups",
            "no-such-group-here",
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("group \"no-such-group-here\" does not resolve"));
    let o = nftmesh(
        &[
            "plan",
            "--ipv6",
            "off",
            "--outbound-owner-groups",
            "no-such-group-here",
            "--pass-through-group-names",
        ],
        &[],
    );
    assert!(stdout(&o).contains("meta skgid != no-such-group-here counter return"));
}

#[test]
fn help_names_each_flags_istio_equivalent() {
    let help = stdout(&nftmesh(&["plan", "--help"], &[]));
    for flag in [
        "-p", "-z", "-e", "-u", "-g", "-m", "-t", "-r", "-b", "-d", "-q", "-o", "-i", "-x", "-c",
        "-k",
    ] {
        assert!(
            help.contains(&format!("[istio-iptables {flag}/")),
            "{flag} missing:\n{help}"
        );
    }
    for env in [
        "ISTIO_OUTBOUND_OWNER_GROUPS",
        "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
        "INVALID_DROP",
        "ISTIO_META_DNS_CAPTURE",
    ] {
        assert!(help.contains(env), "{env} missing");
    }
}
