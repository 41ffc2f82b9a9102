//! `nftmesh apply --migrate`: Istio's iptables rules already present (loaded from Istio's
//! golden with the real iptables-restore) are removed in the same transaction that installs
//! nftmesh's tables; with iptables-legacy tables present it refuses unless told otherwise.

mod common;

use common::{netns_or_skip, nftmesh, Netns};

const SIDECAR: [&str; 8] = ["-p", "15001", "-z", "15006", "-u", "1337", "-b", "*"];

/// The IPv4 and IPv6 parts of an Istio golden, split as `nftmesh_iptables::trace` reads them.
fn golden_parts(case: &str) -> Vec<String> {
    let path = format!(
        "{}/../../tests/data/istio/sidecar/iptables/{case}.golden",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    nftmesh_iptables::trace::split_trace_text(&text)
        .into_iter()
        .map(|(_, part)| part)
        .collect()
}

fn load_istio_iptables(ns: &Netns, case: &str, restore4: &str, restore6: &str) {
    let parts = golden_parts(case);
    ns.exec(restore4, &[], Some(&parts[0]));
    if let Some(v6) = parts.get(1) {
        ns.exec(restore6, &[], Some(v6));
    }
}

fn apply(ns: &Netns, extra: &[&str]) -> std::process::Output {
    let path = ns.path();
    let args = [
        &["apply", "--network-namespace", &path][..],
        extra,
        &SIDECAR[..],
    ]
    .concat();
    nftmesh(&args)
}

#[test]
fn migrate_removes_istios_iptables_chains_and_jumps_in_the_same_transaction() {
    let Some(ns) = netns_or_skip() else { return };
    load_istio_iptables(&ns, "tproxy", "iptables-restore", "ip6tables-restore");
    let before4 = ns.save("iptables-save");
    assert!(before4.contains(":ISTIO_OUTPUT"), "{before4}");
    assert!(ns.save("ip6tables-save").contains(":ISTIO_OUTPUT"));

    // Without --migrate both captures are installed side by side.
    let o = apply(&ns, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(ns.save("iptables-save"), before4);

    let o = apply(&ns, &["--migrate"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("migrated from iptables in the same transaction"),
        "{err}"
    );
    assert!(err.contains("one transaction"), "{err}");
    for save in ["iptables-save", "ip6tables-save"] {
        let after = ns.save(save);
        assert!(
            !after.contains("ISTIO_"),
            "{save} still has Istio's chains:\n{after}"
        );
    }
    let live = ns.list();
    assert!(live.contains("table inet istio-proxy-nat"), "{live}");
    // TPROXY mode's mark rules in built-in chains are not Istio-named: they stay, and are counted.
    assert!(!err.contains(" 0 other rule(s) left"), "{err}");
    assert!(ns.save("iptables-save").contains("CONNMARK --save-mark"));
}

#[test]
fn migrate_refuses_while_iptables_legacy_tables_exist_unless_allowed() {
    let Some(ns) = netns_or_skip() else { return };
    if std::process::Command::new("iptables-legacy-restore")
        .arg("--version")
        .output()
        .is_err()
    {
        common::skip("iptables-legacy-restore is not installed");
        return;
    }
    load_istio_iptables(
        &ns,
        "empty",
        "iptables-legacy-restore",
        "ip6tables-legacy-restore",
    );
    let before = ns.save("iptables-legacy-save");
    let o = apply(&ns, &["--migrate"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("iptables-legacy tables exist in this namespace (ip nat)"),
        "{err}"
    );
    assert!(
        !ns.list().contains("istio-proxy"),
        "nothing installed after the refusal"
    );

    let o = apply(&ns, &["--migrate", "--migrate-allow-legacy"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(ns.list().contains("table inet istio-proxy-nat"));
    assert_eq!(
        ns.save("iptables-legacy-save"),
        before,
        "legacy rules are left as they were"
    );
}
