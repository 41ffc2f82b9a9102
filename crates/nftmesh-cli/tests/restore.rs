//! `nftmesh translate` and `nftmesh restore`: iptables-save text to nft text, and applied
//! natively in one transaction into a named network namespace each test creates and deletes.

mod common;

use common::{netns_or_skip, nftmesh, nftmesh_with_stdin as with_stdin};
use std::process::Command;

fn golden(case: &str) -> String {
    format!(
        "{}/../../tests/data/istio/sidecar/iptables/{case}.golden",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const NAT_A: &str =
    "*nat\n:OUTPUT ACCEPT [0:0]\n-N MESH\n-A MESH -p tcp -j REDIRECT --to-ports 15001\n\
                     -A OUTPUT -p tcp -m owner ! --uid-owner 1337 -j MESH\nCOMMIT\n";
const NAT_B: &str = "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p udp --dport 53 -j REDIRECT --to-ports 15053\nCOMMIT\n";

#[test]
fn translate_prints_nft_text_for_an_istio_trace_and_for_stdin() {
    let o = nftmesh(&["translate", "--istio-trace", &golden("tproxy")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for want in [
        "add table ip mangle",
        "add table ip6 mangle",
        "add chain ip nat OUTPUT { type nat hook output priority -100 ; policy accept ; }",
        "tproxy to :15006 meta mark set 0x539 accept",
        "add rule ip nat ISTIO_REDIRECT meta l4proto tcp redirect to :15001",
        "ip6 daddr != ::1/128",
    ] {
        assert!(out.contains(want), "missing `{want}` in\n{out}");
    }
    let o = with_stdin(
        &["translate", "-6", "-"],
        "*raw\n-A OUTPUT -d ::1 -j CT --zone 3\nCOMMIT\n",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("add rule ip6 raw OUTPUT ip6 daddr ::1/128 ct zone set 3"));
}

#[test]
fn bad_input_names_file_line_column_and_token() {
    let o = with_stdin(
        &["translate"],
        "*nat\n-A OUTPUT -p tcp --dport 99999 -j ACCEPT\nCOMMIT\n",
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("<stdin>: line 2, column 26: bad port at `99999`"),
        "{err}"
    );
    // An IPv6 address in IPv4 input, as a real iptables-restore refuses it too.
    let o = with_stdin(&["translate"], "*nat\n-A OUTPUT -d ::1 -j ACCEPT\nCOMMIT\n");
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("line 2, column 14: bad address for -d at `::1`"));
    // A rule the model cannot express exactly is refused, not approximated.
    let o = with_stdin(
        &["translate"],
        "*filter\n-A INPUT -i eth+ -j ACCEPT\nCOMMIT\n",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("cannot translate: interface wildcards"));
}

#[test]
fn restore_replaces_the_tables_it_writes_in_one_transaction_and_leaves_others() {
    let Some(ns) = netns_or_skip() else { return };
    let path = ns.path();
    let foreign = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", "add table inet other"])
        .output()
        .unwrap();
    assert!(foreign.status.success());
    let o = with_stdin(&["restore", "--network-namespace", &path], NAT_A);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("one transaction"),
        "{}",
        text(&o.stderr)
    );
    let live = ns.list();
    assert!(live.contains("table ip nat"), "{live}");
    assert!(
        live.contains("meta l4proto tcp redirect to :15001"),
        "{live}"
    );
    assert!(live.contains("meta skuid != 1337"), "{live}");

    // Restoring again replaces the table: the first file's chain and rules are gone.
    let o = with_stdin(&["restore", "--network-namespace", &path], NAT_B);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let live = ns.list();
    assert!(live.contains("udp dport 53 redirect to :15053"), "{live}");
    assert!(!live.contains("MESH"), "{live}");
    assert!(live.contains("table inet other"), "{live}");

    // --test and bad input change nothing.
    let before = ns.list();
    let o = with_stdin(&["restore", "--test", "--network-namespace", &path], NAT_A);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = with_stdin(
        &["restore", "--network-namespace", &path],
        "*nat\n-A OUTPUT -j NOWHERE\nCOMMIT\n",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("line 2, column 14: unknown or unsupported target at `NOWHERE`")
    );
    assert_eq!(ns.list(), before);
}

#[test]
fn restore_of_an_istio_trace_installs_both_families() {
    let Some(ns) = netns_or_skip() else { return };
    let o = nftmesh(&[
        "restore",
        "--istio-trace",
        "--network-namespace",
        &ns.path(),
        &golden("ipv6-uid-gid"),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let live = ns.list();
    assert!(live.contains("table ip nat"), "{live}");
    assert!(live.contains("table ip6 nat"), "{live}");
    assert!(live.contains("redirect to :15006"), "{live}");
}

#[test]
fn restore_writes_nftables_native_tables_that_iptables_nft_calls_incompatible() {
    // What the README says of `restore`: the table carries iptables-nft's name, but its rules
    // are native expressions, which iptables-nft-save does not read back.
    let Some(ns) = netns_or_skip() else { return };
    let o = with_stdin(
        &["restore", "--network-namespace", &ns.path()],
        "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p tcp --dport 80 -j REDIRECT --to-ports 15001\nCOMMIT\n",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(ns.list().contains("tcp dport 80 redirect to :15001"));
    let save = Command::new("ip")
        .args(["netns", "exec", &ns.0, "iptables-nft-save", "-t", "nat"])
        .output()
        .expect("iptables-nft-save");
    let said = format!("{}{}", text(&save.stdout), text(&save.stderr));
    assert!(said.contains("incompatible"), "{said}");
}
