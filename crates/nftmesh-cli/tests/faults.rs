//! Fault tolerance of `nftmesh apply`, each test in a network namespace it creates: a process
//! killed while applying leaves the old or the new ruleset, never a mix; stale objects in our
//! tables are removed by the next apply; foreign and iptables-nft tables are untouched; a bad
//! namespace path is a typed error that changes nothing.

mod common;

use common::{netns_or_skip, nftmesh, Netns};
use std::process::Command;
use std::time::{Duration, Instant};

const SIDECAR: [&str; 8] = ["-p", "15001", "-z", "15006", "-u", "1337", "-b", "*"];

fn apply_ok(ns: &Netns, extra: &[&str]) {
    let path = ns.path();
    let args = [
        &["apply", "--network-namespace", &path][..],
        &SIDECAR[..],
        extra,
    ]
    .concat();
    let o = nftmesh(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// 6 000 excluded CIDRs (10.0.0.0/25, 10.0.1.0/25, ...; none merge): a large batch, in one argument that
/// stays under the kernel's 128 KiB limit for one.
fn many_cidrs() -> String {
    (0..6_000u32)
        .map(|i| format!("10.{}.{}.0/25", i / 256, i % 256))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn a_process_killed_while_applying_leaves_the_old_or_the_new_ruleset() {
    let Some(ns) = netns_or_skip() else { return };
    let Some(scratch) = netns_or_skip() else {
        return;
    };
    let cidrs = many_cidrs();
    let new_args = ["-x", cidrs.as_str()];
    // The two listings every attempt must end in, and how long a whole apply of the new one
    // takes (the kills are spread over that time).
    let t0 = Instant::now();
    apply_ok(&scratch, &new_args);
    let whole = t0.elapsed();
    let new = scratch.list();
    apply_ok(&ns, &[]);
    let old = ns.list();
    assert_ne!(old, new);
    let path = ns.path();
    let args = [
        &["apply", "--network-namespace", &path][..],
        &SIDECAR[..],
        &new_args[..],
    ]
    .concat();
    let (mut saw_old, mut saw_new) = (0, 0);
    let started = Instant::now();
    // Bounded: 40 attempts, killed from 0 to 1.5 times the whole apply's duration, and 60 s in
    // all at most.
    const ATTEMPTS: u32 = 40;
    for attempt in 0..ATTEMPTS {
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
        apply_ok(&ns, &[]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_nftmesh"))
            .args(&args)
            .env_clear()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run nftmesh");
        std::thread::sleep(whole.mul_f64(1.5 * f64::from(attempt) / f64::from(ATTEMPTS)));
        // SIGKILL our own child, by its PID (a no-op if it has already exited).
        let _ = child.kill();
        let _ = child.wait();
        let now = ns.list();
        if now == old {
            saw_old += 1;
        } else if now == new {
            saw_new += 1;
        } else {
            panic!("attempt {attempt}: a ruleset that is neither the old nor the new one:\n{now}");
        }
    }
    eprintln!(
        "killed applies (a whole apply took {whole:?}): {saw_old} left the old ruleset, \
         {saw_new} the new one"
    );
    assert!(saw_old + saw_new >= 10);
}

#[test]
fn stale_chains_and_sets_in_our_tables_are_removed_by_the_next_apply() {
    let Some(ns) = netns_or_skip() else { return };
    apply_ok(&ns, &[]);
    // What an older version could have left: an extra chain, a jump to it, an extra set.
    ns.exec(
        "nft",
        &["-f", "-"],
        Some(
            "add chain inet istio-proxy-nat istio-old-chain\n\
             add rule inet istio-proxy-nat istio-old-chain counter\n\
             add rule inet istio-proxy-nat output jump istio-old-chain\n\
             add set inet istio-proxy-nat istio-old-set { type ipv4_addr; elements = { 10.9.9.9 } }\n",
        ),
    );
    let stale = ns.list();
    assert!(stale.contains("istio-old-chain") && stale.contains("istio-old-set"));
    apply_ok(&ns, &[]);
    let live = ns.list();
    assert!(!live.contains("istio-old-chain"), "{live}");
    assert!(!live.contains("istio-old-set"), "{live}");
    assert!(live.contains("redirect to :15001"), "{live}");
}

#[test]
fn foreign_and_iptables_nft_tables_are_untouched() {
    let Some(ns) = netns_or_skip() else { return };
    ns.exec(
        "nft",
        &["-f", "-"],
        Some("table inet other {\n chain c {\n  type filter hook output priority 0;\n  tcp dport 9 drop\n }\n}\n"),
    );
    ns.exec(
        "iptables-restore",
        &[],
        Some("*filter\n-A OUTPUT -p tcp --dport 7 -j DROP\nCOMMIT\n*nat\n-A OUTPUT -p tcp --dport 8 -j RETURN\nCOMMIT\n"),
    );
    let other = ns.exec("nft", &["list", "table", "inet", "other"], None);
    let saved = ns.save("iptables-save");
    apply_ok(&ns, &[]);
    apply_ok(&ns, &["-x", "10.0.0.0/8"]);
    assert_eq!(
        ns.exec("nft", &["list", "table", "inet", "other"], None),
        other
    );
    assert_eq!(ns.save("iptables-save"), saved);
    let o = nftmesh(&["apply", "--cleanup-only", "--network-namespace", &ns.path()]);
    assert!(o.status.success());
    assert_eq!(
        ns.exec("nft", &["list", "table", "inet", "other"], None),
        other
    );
    assert_eq!(ns.save("iptables-save"), saved);
}

#[test]
fn a_path_that_is_not_a_namespace_is_a_typed_error_and_changes_nothing() {
    let Some(ns) = netns_or_skip() else { return };
    apply_ok(&ns, &[]);
    let before = ns.list();
    for bad in [
        "/etc/hostname",
        "/proc/self/ns/nothing",
        "/var/run/netns/nftmesh-no-such",
    ] {
        let o = nftmesh(
            &[
                &["apply", "--network-namespace", bad][..],
                &SIDECAR[..],
                &["-x", "10.0.0.0/8"],
            ]
            .concat(),
        );
        assert_eq!(o.status.code(), Some(1), "{bad}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("cannot enter network namespace {bad}")),
            "{err}"
        );
    }
    assert_eq!(ns.list(), before);
}
