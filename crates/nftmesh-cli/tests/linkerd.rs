//! The Linkerd drop-ins: `nftmesh linkerd-proxy-init` (and the binary named `proxy-init`) with
//! Linkerd's injector argv, run as Linkerd's image runs it (uid 65534 holding only NET_ADMIN,
//! as its file capabilities give it; `setpriv` here), in named network namespaces the tests
//! create; and `nftmesh linkerd-network-validator` as Linkerd runs it (uid 65534, no
//! capability) in a pod namespace joined to a peer by a veth pair, with a default route as a
//! pod has.

mod common;

use common::*;
use std::process::{Command, Output};

/// Linkerd's injector argv (`charts/partials/templates/_proxy-init.tpl`, default values).
const INJECTOR: [&str; 10] = [
    "--incoming-proxy-port",
    "4143",
    "--outgoing-proxy-port",
    "4140",
    "--proxy-uid",
    "2102",
    "--inbound-ports-to-ignore",
    "4190,4191,4567,4568",
    "--outbound-ports-to-ignore",
    "4567,4568",
];

/// `setpriv` arguments for uid 65534 with `caps` only (ambient, as file capabilities give
/// them to a non-root binary), and no others in any set.
fn as_nobody(caps: &str) -> Vec<String> {
    let mut v = vec![
        "setpriv".to_string(),
        "--reuid=65534".into(),
        "--regid=65534".into(),
        "--clear-groups".into(),
    ];
    if caps.is_empty() {
        v.extend(["--inh-caps=-all".into(), "--bounding-set=-all".into()]);
    } else {
        v.extend([
            format!("--inh-caps=-all,+{caps}"),
            format!("--ambient-caps=+{caps}"),
            format!("--bounding-set=-all,+{caps}"),
        ]);
    }
    v
}

/// Run `program args` inside `ns` as `who` (setpriv arguments, or none: root).
fn run_in(ns: &Netns, who: &[String], program: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .args(who)
        .arg(program)
        .args(args)
        .output()
        .expect("run")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const NFTMESH: &str = env!("CARGO_BIN_EXE_nftmesh");

#[test]
fn proxy_init_with_the_injector_argv_as_uid_65534_with_only_net_admin() {
    let Some(ns) = netns_or_skip() else { return };
    let nobody = as_nobody("net_admin");
    // --simulate prints the capture and changes nothing.
    let mut sim: Vec<&str> = vec!["linkerd-proxy-init"];
    sim.extend(INJECTOR);
    sim.push("--simulate");
    let o = run_in(&ns, &nobody, NFTMESH, &sim);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("redirect to :4143"),
        "{}",
        text(&o)
    );
    assert_eq!(ns.list(), "", "--simulate changed nothing");
    // The capture, with only NET_ADMIN as uid 65534.
    let mut argv: Vec<&str> = vec!["linkerd-proxy-init"];
    argv.extend(INJECTOR);
    let o = run_in(&ns, &nobody, NFTMESH, &argv);
    assert!(o.status.success(), "{}", text(&o));
    let first = ns.list();
    for line in [
        "table inet linkerd-proxy-init",
        "tcp dport { 4190, 4191, 4567, 4568 }",
        "redirect to :4143",
        "meta skuid 2102",
        "oifname \"lo\"",
        "tcp dport { 4567, 4568 }",
        "redirect to :4140",
    ] {
        assert!(first.contains(line), "{line} missing:\n{first}");
    }
    // Again, the same: nothing changes (no commit: the generation stays).
    let gen = || ns.exec("nft", &["-a", "list", "ruleset"], None);
    let before = gen();
    let o = run_in(&ns, &nobody, NFTMESH, &argv);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already in place"),
        "{}",
        text(&o)
    );
    assert_eq!(gen(), before, "handles unchanged: nothing was recommitted");
    // Different flags: replaced in place.
    let o = run_in(
        &ns,
        &nobody,
        NFTMESH,
        &[
            "linkerd-proxy-init",
            "-p",
            "4143",
            "-o",
            "4140",
            "-u",
            "2102",
            "--ports-to-redirect",
            "8080",
            "--ipv6=false",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let replaced = ns.list();
    assert!(
        replaced.contains("table ip linkerd-proxy-init"),
        "{replaced}"
    );
    assert!(
        !replaced.contains("table inet linkerd-proxy-init"),
        "{replaced}"
    );
    assert!(replaced.contains("tcp dport 8080"), "{replaced}");
    // Without NET_ADMIN: refused, and nothing changes.
    let o = run_in(&ns, &as_nobody(""), NFTMESH, &argv);
    assert!(!o.status.success(), "{}", text(&o));
    assert_eq!(ns.list(), replaced);
}

#[test]
fn the_binary_named_proxy_init_is_the_drop_in() {
    let Some(ns) = netns_or_skip() else { return };
    let dir = std::env::temp_dir().join(format!("nftmesh-proxy-init-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("proxy-init");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(NFTMESH, &link).unwrap();
    let link = link.to_string_lossy().into_owned();
    let o = run_in(&ns, &[], &link, &INJECTOR);
    assert!(o.status.success(), "{}", text(&o));
    assert!(ns.list().contains("redirect to :4140"), "{}", ns.list());
    // proxy-init's own refusals, in its words.
    let o = run_in(&ns, &[], &link, &["--outgoing-proxy-port", "4140"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("--incoming-proxy-port must be a valid TCP port number"),
        "{}",
        text(&o)
    );
    // --timeout-close-wait-secs sets the namespace's conntrack sysctl, not the machine's.
    let host =
        std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait");
    let mut args: Vec<&str> = INJECTOR.to_vec();
    args.extend(["--timeout-close-wait-secs", "7"]);
    let o = run_in(&ns, &[], &link, &args);
    assert!(o.status.success(), "{}", text(&o));
    let inside = ns.exec(
        "cat",
        &["/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait"],
        None,
    );
    assert_eq!(inside.trim(), "7");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait").ok(),
        host.ok()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pod namespace joined by a veth pair to a peer namespace, with a default route to it.
fn pod_with_peer() -> Option<(Netns, Netns)> {
    let pod = netns_or_skip()?;
    let peer = netns_or_skip()?;
    let sh = |args: &[&str]| {
        let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    };
    sh(&["ip", "-n", &pod.0, "link", "set", "lo", "up"]);
    sh(&["ip", "-n", &peer.0, "link", "set", "lo", "up"]);
    sh(&[
        "ip", "-n", &pod.0, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        "netns", &peer.0,
    ]);
    sh(&[
        "ip",
        "-n",
        &pod.0,
        "addr",
        "add",
        "10.78.0.1/24",
        "dev",
        "eth0",
    ]);
    sh(&[
        "ip",
        "-n",
        &peer.0,
        "addr",
        "add",
        "10.78.0.2/24",
        "dev",
        "eth0p",
    ]);
    sh(&["ip", "-n", &pod.0, "link", "set", "eth0", "up"]);
    sh(&["ip", "-n", &peer.0, "link", "set", "eth0p", "up"]);
    sh(&[
        "ip",
        "-n",
        &pod.0,
        "route",
        "add",
        "default",
        "via",
        "10.78.0.2",
    ]);
    Some((pod, peer))
}

#[test]
fn the_validator_passes_with_the_capture_and_exits_95_without() {
    let Some((pod, _peer)) = pod_with_peer() else {
        return;
    };
    let nobody = as_nobody("");
    let validate = |who: &[String]| {
        run_in(
            &pod,
            who,
            NFTMESH,
            &["linkerd-network-validator", "--timeout", "2s"],
        )
    };
    // No capture: the connection to 192.0.2.2:1404 goes to the peer, which does not answer.
    let o = validate(&nobody);
    assert_eq!(o.status.code(), Some(95), "{}", text(&o));
    // The injector's capture: it lands on the validator's own listener on 4140.
    let mut argv: Vec<&str> = vec!["linkerd-proxy-init"];
    argv.extend(INJECTOR);
    let o = run_in(&pod, &[], NFTMESH, &argv);
    assert!(o.status.success(), "{}", text(&o));
    let o = validate(&nobody);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Validated"),
        "{}",
        text(&o)
    );
    // As the proxy's uid the connection is not redirected (that is the bypass), so the
    // validator fails there: Linkerd runs it as 65534.
    let proxy = vec![
        "setpriv".to_string(),
        "--reuid=2102".into(),
        "--regid=2102".into(),
        "--clear-groups".into(),
        "--inh-caps=-all".into(),
        "--bounding-set=-all".into(),
    ];
    let o = validate(&proxy);
    assert_eq!(o.status.code(), Some(95), "{}", text(&o));
}
