//! `nftmesh istio-iptables` (and a binary named `istio-iptables`) run with the argv Istio's
//! sidecar injector gives istio-init and istio-validation, inside named network namespaces each
//! test creates and deletes (`ip netns exec`, as the init container shares the pod's
//! namespace). Capture is proven with real connections: `nftmesh verify` (an application's
//! outbound connection lands on 15001 with its original destination), Istio's own validation
//! run as uid/gid 1337 with no capabilities, and a DNS query landing on 15053.

mod common;

use common::{netns_or_skip, Netns};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The injector's argv for istio-init (injection-template.yaml).
const INJECTOR: [&str; 18] = [
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
    "--log_output_level=default:info",
    "--log_as_json=false",
];

/// The istio-validation container's argv (istio-cni installs the capture).
const VALIDATION: [&str; 7] = [
    "-p",
    "15001",
    "-z",
    "15006",
    "--run-validation",
    "--skip-rule-apply",
    "--probe-timeout=2s",
];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A pod: lo up and one veth with 10.99.0.1/24, so addresses beyond it are routed out.
fn pod() -> Option<Netns> {
    let ns = netns_or_skip()?;
    for args in [
        &["link", "set", "lo", "up"][..],
        &["link", "add", "d0", "type", "veth", "peer", "name", "d1"],
        &["addr", "add", "10.99.0.1/24", "dev", "d0"],
        &["link", "set", "d0", "up"],
        &["link", "set", "d1", "up"],
    ] {
        ns.exec("ip", args, None);
    }
    Some(ns)
}

/// `nftmesh istio-iptables ARGS` inside `ns` with only `env` set, run as root or, with
/// `as_proxy`, as uid/gid 1337 with every capability dropped (the istio-validation container).
fn istio(ns: &Netns, args: &[&str], env: &[(&str, &str)], as_proxy: bool) -> Output {
    let mut c = Command::new("ip");
    c.env_clear().args(["netns", "exec", &ns.0]);
    if as_proxy {
        c.args([
            "setpriv",
            "--reuid",
            "1337",
            "--regid",
            "1337",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ]);
    }
    c.arg(env!("CARGO_BIN_EXE_nftmesh"))
        .arg("istio-iptables")
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run nftmesh istio-iptables")
}

/// `nftmesh verify` of an app connection to `probe` with the capture flags `flags`.
fn verify(ns: &Netns, probe: &str, flags: &[&str]) -> Output {
    common::nftmesh(
        &[
            &[
                "verify",
                "--network-namespace",
                &ns.path(),
                "--probe",
                probe,
            ][..],
            flags,
        ]
        .concat(),
    )
}

#[test]
fn the_injectors_argv_installs_capture_that_real_connections_prove() {
    let Some(ns) = pod() else { return };
    let o = istio(&ns, &INJECTOR, &[], false);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let log = text(&o.stdout);
    assert!(log.contains("\tinfo\tApplying the capture"), "{log}");
    let o = verify(
        &ns,
        "10.99.0.9:8080",
        &["-p", "15001", "-u", "1337", "-i", "*"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Istio's validation, as the proxy's uid without capabilities, sees the capture.
    let o = istio(&ns, &VALIDATION, &[], true);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        text(&o.stdout).contains("validation passed"),
        "{}",
        text(&o.stdout)
    );
    // Running it again changes nothing and says so; --force-apply applies anyway.
    let before = ns.list();
    let o = istio(&ns, &INJECTOR, &[], false);
    assert!(o.status.success());
    assert!(
        text(&o.stdout).contains("already in place; nothing changed"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(ns.list(), before);
    let o = istio(
        &ns,
        &[&INJECTOR[..], &["--force-apply"]].concat(),
        &[],
        false,
    );
    assert!(o.status.success());
    assert!(
        text(&o.stdout).contains("--force-apply: applied"),
        "{}",
        text(&o.stdout)
    );
    // A different capture in place: logged, replaced in place.
    let mut other = INJECTOR.to_vec();
    other[13] = "8080";
    let o = istio(&ns, &other, &[], false);
    assert!(o.status.success());
    assert!(
        text(&o.stdout).contains("a different capture is in place"),
        "{}",
        text(&o.stdout)
    );
    assert!(ns.list().contains("tcp dport 8080"), "{}", ns.list());
    // --cleanup-only removes it, and validation then fails within its timeout, with 126.
    let o = istio(
        &ns,
        &[&INJECTOR[..], &["--cleanup-only"]].concat(),
        &[],
        false,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!ns.list().contains("istio-proxy"), "{}", ns.list());
    let start = Instant::now();
    let o = istio(&ns, &VALIDATION, &[], true);
    let took = start.elapsed();
    assert_eq!(
        o.status.code(),
        Some(126),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        text(&o.stderr).contains("capture is not in place"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn tproxy_and_the_port_and_interface_flags_install_what_they_say() {
    let Some(ns) = pod() else { return };
    let mut args = INJECTOR.to_vec();
    args[7] = "TPROXY";
    args.extend(["-q", "8443", "-o", "9000", "-k", "veth9", "-c", "eth9"]);
    let o = istio(&ns, &args, &[], false);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let live = ns.list();
    for want in [
        "tproxy",
        "table inet istio-proxy-mangle",
        "8443",
        "9000",
        "\"veth9\"",
        "\"eth9\"",
    ] {
        assert!(live.contains(want), "{want}: {live}");
    }
    let rules = ns.exec("ip", &["rule"], None);
    assert!(rules.contains("fwmark 0x539 lookup 133"), "{rules}");
    // -q 8443 is captured even without -i.
    let o = verify(
        &ns,
        "10.99.0.9:8443",
        &["-p", "15001", "-u", "1337", "-q", "8443", "-m", "TPROXY"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = istio(&ns, &VALIDATION, &[], true);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
}

#[test]
fn dns_capture_from_the_proxy_metadata_env_lands_queries_on_15053() {
    let Some(ns) = pod() else { return };
    // The pod's resolver, as `ip netns exec` shows it to the init container.
    let dir = std::path::PathBuf::from("/etc/netns").join(&ns.0);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("resolv.conf"), "nameserver 10.99.0.53\n").unwrap();
    let o = istio(&ns, &INJECTOR, &[("ISTIO_META_DNS_CAPTURE", "true")], false);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(ns.list().contains("redirect to :15053"), "{}", ns.list());
    // A query from an application uid to the pod's nameserver lands on the agent's port.
    let got = nftmesh_netlink::netns::run_in(std::path::Path::new(&ns.path()), || {
        let agent = std::net::UdpSocket::bind(("0.0.0.0", 15053)).unwrap();
        agent
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let sender = std::thread::spawn(|| {
            nftmesh_netlink::probe::become_user(1000, 1000).unwrap();
            let s = std::net::UdpSocket::bind(("0.0.0.0", 0)).unwrap();
            s.send_to(b"query", ("10.99.0.53", 53)).unwrap();
        });
        let mut buf = [0u8; 16];
        let got = agent.recv_from(&mut buf).map(|(n, _)| buf[..n].to_vec());
        sender.join().unwrap();
        got.ok()
    })
    .unwrap();
    assert_eq!(got.as_deref(), Some(&b"query"[..]));
}

#[test]
fn log_as_json_writes_one_json_object_per_line() {
    let Some(ns) = pod() else { return };
    let args: Vec<&str> = INJECTOR
        .iter()
        .map(|a| {
            if *a == "--log_as_json=false" {
                "--log_as_json"
            } else {
                a
            }
        })
        .collect();
    let o = istio(&ns, &args, &[], false);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 2, "{out}");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(v["level"], "info", "{l}");
        assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{l}");
        assert!(v["msg"].is_string(), "{l}");
    }
    // A higher level hides the info lines.
    let o = istio(
        &ns,
        &[&INJECTOR[..], &["--log_output_level=default:warn"]].concat(),
        &[],
        false,
    );
    assert!(o.status.success());
    assert_eq!(text(&o.stdout), "");
}

#[test]
fn every_istio_flag_is_accepted_and_the_no_op_ones_say_so() {
    let Some(ns) = pod() else { return };
    let o = istio(
        &ns,
        &[
            &INJECTOR[..],
            &[
                "-e",
                "15008",
                "-g",
                "1337",
                "-t",
                "1337",
                "-r",
                "133",
                "--iptables-probe-port",
                "15002",
                "--probe-timeout",
                "1m30s",
                "--redirect-dns",
                "--drop-invalid",
                "--capture-all-dns",
                "--cni-mode",
                "--reconcile",
                "--native-nftables",
                "--force-iptables-binary",
                "iptables-legacy",
                "--iptables-trace-logging",
                "--log_caller",
                "default",
                "--log_stacktrace_level",
                "default:none",
                "--log_target",
                "stdout",
                "--log_rotate",
                "/tmp/x",
                "--log_rotate_max_age",
                "30",
                "--log_rotate_max_backups",
                "1000",
                "--log_rotate_max_size",
                "104857600",
            ],
        ]
        .concat(),
        &[],
        false,
    );
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let log = text(&o.stdout);
    for want in [
        "--native-nftables: nftmesh always programs nf_tables natively",
        "--force-iptables-binary: nftmesh runs no iptables binary",
        "--cni-mode",
        "--log_rotate",
    ] {
        assert!(log.contains(want), "{want}: {log}");
    }
    // The environment as the injector's proxy metadata sets it. IPv6 as Istio decides it:
    // the pod's first address is IPv4, so IPv6 is off unless dual stack and an IPv6 address.
    ns.exec(
        "ip",
        &["-6", "addr", "add", "fd00:99::1/64", "dev", "d0", "nodad"],
        None,
    );
    let plan = |env: &[(&str, &str)]| {
        let o = istio(&ns, &[&INJECTOR[..], &["-n"]].concat(), env, false);
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout)
    };
    let single = plan(&[("INVALID_DROP", "true")]);
    assert!(
        single.contains("ct state invalid counter jump istio-drop"),
        "{single}"
    );
    assert!(
        !single.contains("ip6 saddr ::6/128"),
        "IPv4 first: {single}"
    );
    let dual = plan(&[("INVALID_DROP", "true"), ("ISTIO_DUAL_STACK", "true")]);
    assert!(dual.contains("ip6 saddr ::6/128"), "dual stack: {dual}");
    // An invalid value is exit 1 with the reason on stderr.
    let o = istio(&ns, &["-p", "70000"], &[], false);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("70000"), "{}", text(&o.stderr));
}

#[test]
fn a_binary_named_istio_iptables_behaves_as_istio_iptables() {
    let dir = std::env::temp_dir().join(format!("nftmesh-argv0-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("istio-iptables");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nftmesh"), &link).unwrap();
    let o = Command::new(&link)
        .env_clear()
        .args([&INJECTOR[..], &["-n"]].concat())
        .output()
        .unwrap();
    let help = Command::new(&link)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("dry-run mode"),
        "{}",
        text(&o.stdout)
    );
    assert!(text(&o.stdout).contains("add table inet istio-proxy-nat"));
    assert!(
        text(&help.stdout).starts_with("Set up Istio's sidecar traffic capture"),
        "{}",
        text(&help.stdout)
    );
}
