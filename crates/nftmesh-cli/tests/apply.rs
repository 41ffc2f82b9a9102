//! `nftmesh apply` against the kernel, in a named network namespace each test creates and
//! deletes (`ip netns add nftmesh-cli-PID-N`).

mod common;

use common::{netns_or_skip, nftmesh};
use std::process::Command;

/// Istio's sidecar flags for a REDIRECT capture of every inbound port.
const SIDECAR: [&str; 8] = ["-p", "15001", "-z", "15006", "-u", "1337", "-b", "*"];

#[test]
fn apply_installs_the_capture_in_the_given_namespace_and_cleanup_only_removes_it() {
    let Some(ns) = netns_or_skip() else { return };
    let path = ns.path();
    let before = ns.list();
    let o = nftmesh(&[&["apply", "--network-namespace", &path][..], &SIDECAR[..]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("one transaction"));
    let live = ns.list();
    assert!(live.contains("redirect to :15001"), "{live}");
    assert!(live.contains("redirect to :15006"), "{live}");
    let o = nftmesh(&["apply", "--network-namespace", &path, "--cleanup-only"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(ns.list(), before);
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let Some(ns) = netns_or_skip() else { return };
    let before = ns.list();
    let o = nftmesh(&[
        "apply",
        "--network-namespace",
        &ns.path(),
        "--dry-run",
        "-p",
        "15001",
        "--ipv6",
        "off",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // `--ipv6 off` on both: `plan` detects IPv6 in our namespace, `apply` in the target one.
    let plan = nftmesh(&["plan", "-p", "15001", "--ipv6", "off"]);
    assert_eq!(o.stdout, plan.stdout);
    assert_eq!(ns.list(), before);
}

#[test]
fn a_missing_namespace_is_a_clear_error() {
    let o = nftmesh(&[
        "apply",
        "--network-namespace",
        "/var/run/netns/nftmesh-does-not-exist",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot enter network namespace /var/run/netns/nftmesh-does-not-exist"),
        "{err}"
    );
}

#[test]
fn dump_prints_what_apply_installed_and_diff_detects_drift() {
    let Some(ns) = netns_or_skip() else { return };
    let path = ns.path();
    let flags = SIDECAR;
    // Nothing there yet: dump says so on stderr, its stdout stays an (empty) nft script.
    let o = nftmesh(&["dump", "--network-namespace", &path]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "nftmesh: no nftmesh table in this namespace\n"
    );
    let o = nftmesh(&[&["diff", "--network-namespace", &path][..], &flags[..]].concat());
    assert_eq!(o.status.code(), Some(1), "nothing applied yet is drift");
    assert!(String::from_utf8_lossy(&o.stdout).contains("missing table"));
    let o = nftmesh(&[&["apply", "--network-namespace", &path][..], &flags[..]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = nftmesh(&[&["diff", "--network-namespace", &path][..], &flags[..]].concat());
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let dumped = nftmesh(&["dump", "--network-namespace", &path]);
    assert!(
        dumped.status.success(),
        "{}",
        String::from_utf8_lossy(&dumped.stderr)
    );
    // The namespace has no global IPv6 address: the plan for it is the one without IPv6.
    let plan = nftmesh(&[&["plan", "--ipv6", "off"][..], &flags[..]].concat());
    // The dump is in canonical form: an explicit `meta l4proto tcp` right before the `tcp dport`
    // it is the dependency of is implied.
    let canonical_plan =
        String::from_utf8_lossy(&plan.stdout).replace("meta l4proto tcp tcp ", "tcp ");
    assert_eq!(String::from_utf8_lossy(&dumped.stdout), canonical_plan);
    // Drift: another inbound port.
    let o = nftmesh(&[
        "diff",
        "--network-namespace",
        &path,
        "-p",
        "15001",
        "-z",
        "15007",
        "-u",
        "1337",
        "-b",
        "*",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("15007") && out.contains("15006"), "{out}");
    // One legend line first says what `-` and `+` are; then `-` is the wanted rule, `+` the
    // live one.
    assert_eq!(
        out.lines().next(),
        Some("drift (- wanted by the capture settings, + live in the namespace):"),
        "{out}"
    );
    let wanted = out
        .lines()
        .find(|l| l.starts_with("- "))
        .unwrap_or_default();
    let live = out
        .lines()
        .find(|l| l.starts_with("+ "))
        .unwrap_or_default();
    assert!(wanted.contains("15007") && live.contains("15006"), "{out}");
    // Once applied, dump prints the tables and no note.
    let o = nftmesh(&["dump", "--network-namespace", &path]);
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn tproxy_apply_installs_policy_routing_and_cleanup_removes_it() {
    let Some(ns) = netns_or_skip() else { return };
    let path = ns.path();
    let ip = |args: &[&str]| {
        let o = Command::new("ip")
            .args(["netns", "exec", &ns.0, "ip"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(Command::new("ip")
        .args(["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"])
        .status()
        .unwrap()
        .success());
    let o = nftmesh(&[
        "apply",
        "--network-namespace",
        &path,
        "-m",
        "TPROXY",
        "-b",
        "*",
        "--ipv6",
        "on",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        ip(&["rule"]).contains("fwmark 0x539 lookup 133"),
        "{}",
        ip(&["rule"])
    );
    assert!(ip(&["-6", "rule"]).contains("fwmark 0x539 lookup 133"));
    assert!(ip(&["route", "show", "table", "133"]).contains("local default dev lo"));
    assert!(ip(&["-6", "route", "show", "table", "133"]).contains("local default dev lo"));
    assert!(ip(&["-6", "addr", "show", "dev", "lo"]).contains("::6/128"));
    assert!(ns.list().contains("tproxy"), "{}", ns.list());
    let o = nftmesh(&["apply", "--network-namespace", &path, "--cleanup-only"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!ip(&["rule"]).contains("lookup 133"));
    assert!(!ip(&["-6", "rule"]).contains("lookup 133"));
    assert!(ip(&["route", "show", "table", "133"]).is_empty());
    assert!(!ip(&["-6", "addr", "show", "dev", "lo"]).contains("::6/128"));
    assert_eq!(ns.list(), "");
}

#[test]
fn a_bare_nftmesh_changes_nothing_in_its_own_namespace() {
    let Some(ns) = netns_or_skip() else { return };
    ns.exec("ip", &["link", "set", "lo", "up"], None);
    let lo_before = ns.exec("ip", &["-6", "addr", "show", "dev", "lo"], None);
    let bin = env!("CARGO_BIN_EXE_nftmesh");
    // Run inside the namespace, as a person on a node would: no subcommand, with and without
    // istio-iptables' capture flags (the old default applied both).
    for args in [&[][..], &["-i", "*", "-b", "*"][..], &SIDECAR[..]] {
        let o = Command::new("ip")
            .args(["netns", "exec", &ns.0, bin])
            .args(args)
            .env_clear()
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "nftmesh {args:?}: {err}");
        assert!(err.contains("Usage: nftmesh <COMMAND>"), "{err}");
        assert!(err.contains("nftmesh apply FLAGS"), "{err}");
        assert_eq!(ns.list(), "", "nftmesh {args:?} left rules behind");
        let lo = ns.exec("ip", &["-6", "addr", "show", "dev", "lo"], None);
        assert_eq!(lo, lo_before, "nftmesh {args:?} changed lo");
    }
    // The flags still work with the subcommand and a namespace, as documented.
    let o = nftmesh(
        &[
            &["apply", "--network-namespace", &ns.path()][..],
            &SIDECAR[..],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(ns.list().contains("redirect to :15006"), "{}", ns.list());
}

#[test]
fn verify_passes_with_the_capture_and_fails_without_it() {
    let Some(ns) = netns_or_skip() else { return };
    let path = ns.path();
    for args in [
        &["link", "set", "lo", "up"][..],
        &["link", "add", "d0", "type", "veth", "peer", "name", "d1"],
        &["addr", "add", "10.99.0.1/24", "dev", "d0"],
        &["link", "set", "d0", "up"],
        &["link", "set", "d1", "up"],
    ] {
        let ok = Command::new("ip")
            .args(["netns", "exec", &ns.0, "ip"])
            .args(args)
            .status()
            .unwrap();
        assert!(ok.success(), "ip {args:?}");
    }
    let flags = [
        "-p", "15001", "-z", "15006", "-u", "1337", "-b", "*", "-i", "*",
    ];
    let verify = || {
        nftmesh(
            &[
                &[
                    "verify",
                    "--network-namespace",
                    &path,
                    "--probe",
                    "10.99.0.9:15002",
                ][..],
                &flags[..],
            ]
            .concat(),
        )
    };
    let o = nftmesh(&[&["apply", "--network-namespace", &path][..], &flags[..]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = verify();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("verified"));
    let o = nftmesh(&["apply", "--network-namespace", &path, "--cleanup-only"]);
    assert!(o.status.success());
    let o = verify();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("verification failed") && err.contains("was not captured to :15001"),
        "{err}"
    );
}

#[test]
fn verify_without_a_route_to_the_probe_says_unreachable_not_uncaptured() {
    let Some(ns) = netns_or_skip() else { return };
    let path = ns.path();
    ns.exec("ip", &["link", "set", "lo", "up"], None);
    let flags = ["-i", "*", "-b", "*", "--ipv6", "off"];
    let o = nftmesh(&[&["apply", "--network-namespace", &path][..], &flags[..]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = nftmesh(
        &[
            &[
                "verify",
                "--network-namespace",
                &path,
                "--probe",
                "10.98.0.9:15002",
            ][..],
            &flags[..],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("10.98.0.9:15002 is unreachable"), "{err}");
    assert!(err.contains("add a route"), "{err}");
    assert!(!err.contains("not captured"), "{err}");
}

#[test]
fn ipv6_auto_detection_looks_at_the_target_namespace() {
    // One namespace with a global IPv6 address and one without: `--ipv6 auto` (the default)
    // must see each one's own addresses, not the caller's. IPv6 on puts ::6 on lo.
    let Some(v6) = netns_or_skip() else { return };
    let Some(v4) = netns_or_skip() else { return };
    v6.exec(
        "ip",
        &["link", "add", "e0", "type", "veth", "peer", "name", "e1"],
        None,
    );
    v6.exec("ip", &["link", "set", "e0", "up"], None);
    v6.exec("ip", &["link", "set", "e1", "up"], None);
    v6.exec(
        "ip",
        &["-6", "addr", "add", "2001:db8::1/64", "dev", "e0", "nodad"],
        None,
    );
    for (ns, want) in [(&v6, true), (&v4, false)] {
        let o = nftmesh(
            &[
                &["apply", "--network-namespace", &ns.path()][..],
                &SIDECAR[..],
            ]
            .concat(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let lo = ns.exec("ip", &["-6", "addr", "show", "dev", "lo"], None);
        assert_eq!(lo.contains("::6/128"), want, "{}: {lo}", ns.0);
    }
}

#[test]
fn dns_servers_come_from_the_target_namespaces_resolv_conf() {
    // `ip netns` gives a named namespace its own resolv.conf in /etc/netns/NAME/; DNS capture
    // without --dns-servers must use that one, not ours.
    let Some(ns) = netns_or_skip() else { return };
    let dir = format!("/etc/netns/{}", ns.0);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(format!("{dir}/resolv.conf"), "nameserver 10.53.0.1\n").unwrap();
    let o = nftmesh(
        &[
            &["apply", "--network-namespace", &ns.path(), "--redirect-dns"][..],
            &SIDECAR[..],
        ]
        .concat(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let live = ns.list();
    assert!(live.contains("10.53.0.1"), "{live}");
}

#[test]
fn owner_group_names_resolve_in_the_pods_own_group_file() {
    // A "pod": a process in its own network and mount namespaces whose /etc/group has a group
    // the machine does not know. `--network-namespace /proc/PID/ns/net` resolves it there.
    let dir = std::env::temp_dir().join(format!("nftmesh-group-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let group = dir.join("group");
    std::fs::write(&group, "root:x:0:\nnftmesh-pod-only:x:43210:\n").unwrap();
    let script = format!("mount --bind {} /etc/group && sleep 20", group.display());
    let mut pod = Command::new("unshare")
        .args(["--net", "--mount", "sh", "-c", &script])
        .spawn()
        .expect("start the pod process");
    // Bounded wait until its mount is in place.
    let mounted = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::read_to_string(format!("/proc/{}/root/etc/group", pod.id()))
            .is_ok_and(|t| t.contains("nftmesh-pod-only"))
    });
    let ns = format!("/proc/{}/ns/net", pod.id());
    let o = nftmesh(&[
        "apply",
        "--network-namespace",
        &ns,
        "--dry-run",
        "--outbound-owner-groups-exclude",
        "nftmesh-pod-only",
    ]);
    // Ours, by PID.
    let _ = pod.kill();
    let _ = pod.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(mounted, "the pod's /etc/group was not in place in time");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("43210"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// A process in a network and mount namespace of its own whose root has no `/etc/group` (an
/// empty tmpfs over `/etc`, as in a pause container's image); killed (by PID) on drop.
struct Pause(std::process::Child);

impl Pause {
    fn start() -> Option<Pause> {
        use std::io::BufRead;
        let spawned = Command::new("unshare")
            .args(["--net", "--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs nftmesh-no-etc /etc && echo ready && exec sleep 60")
            .stdout(std::process::Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                common::skip(&format!("cannot run unshare: {e}"));
                return None;
            }
        };
        let mut line = String::new();
        let out = child.stdout.take().expect("piped stdout");
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        let pause = Pause(child);
        if line.trim() != "ready" {
            common::skip("cannot make a process with an empty /etc (unshare + tmpfs)");
            return None;
        }
        Some(pause)
    }

    fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.0.id())
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_process_without_etc_group_is_captured_unless_a_group_name_needs_it() {
    let Some(pause) = Pause::start() else { return };
    let path = pause.netns();
    let group = format!("/proc/{}/root/etc/group", pause.0.id());
    assert!(!std::path::Path::new(&group).exists(), "{group} exists");
    let flags = ["-i", "*", "-b", "*"];
    for cmd in ["apply", "diff"] {
        let o = nftmesh(&[&[cmd, "--network-namespace", &path][..], &flags[..]].concat());
        assert_eq!(
            o.status.code(),
            Some(0),
            "{cmd}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = nftmesh(&["dump", "--network-namespace", &path]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("redirect to :15001"));
    // A group name does need the database: the error names the name and the way out.
    let o = nftmesh(
        &[
            &["diff", "--network-namespace", &path][..],
            &flags[..],
            &["--outbound-owner-groups", "wheel"][..],
        ]
        .concat(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("owner group \"wheel\" cannot be resolved"),
        "{err}"
    );
    assert!(err.contains("--pass-through-group-names"), "{err}");
    // Numeric gids need no database.
    let o = nftmesh(
        &[
            &["plan"][..],
            &flags[..],
            &["--outbound-owner-groups", "1000"][..],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn entering_a_namespace_without_privilege_or_a_non_namespace_says_what_to_do() {
    let Some(ns) = netns_or_skip() else { return };
    // As an unprivileged user (setpriv from util-linux drops every capability).
    let o = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_nftmesh"))
        .args(["dump", "--network-namespace", &ns.path()])
        .env_clear()
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot enter network namespace") && err.contains("needs root: CAP_SYS_ADMIN"),
        "{err}"
    );
    // A regular file given as the namespace.
    let file = std::env::temp_dir().join(format!("nftmesh-not-a-netns-{}", std::process::id()));
    std::fs::write(&file, "").unwrap();
    let o = nftmesh(&["dump", "--network-namespace", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot enter network namespace")
            && err.contains("it is not a network namespace but a regular file"),
        "{err}"
    );
}
