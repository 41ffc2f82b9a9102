//! Oversized input of every kind through `nftmesh restore` and `nftmesh apply --config`, in a
//! namespace that already holds a capture: each exits 1 (never by a signal) with a typed
//! message naming what and where, and the live ruleset stays exactly as it was. Very large
//! input the kernel takes (60 000-element sets, 60 000 rules) applies.

mod common;

use common::{netns_or_skip, nftmesh, nftmesh_with_stdin as with_stdin};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn repeat(n: usize, f: impl Fn(usize) -> String) -> String {
    (0..n).map(f).collect::<Vec<_>>().join(" ")
}

/// iptables-restore inputs over a limit, and what the error must say.
fn restore_cases() -> Vec<(&'static str, String, &'static str)> {
    let mangle = |rule: String| format!("*mangle\n:PREROUTING ACCEPT [0:0]\n{rule}\nCOMMIT\n");
    vec![
        (
            "1 000 matches in one rule",
            mangle(format!(
                "-A PREROUTING {} -j ACCEPT",
                repeat(1000, |i| format!("-m mark --mark {i}"))
            )),
            "line 3, column 1165: more than 64 matches in one rule",
        ),
        (
            "1 000 owner matches in one rule",
            format!(
                "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT {} -j RETURN\nCOMMIT\n",
                repeat(1000, |i| format!("-m owner --uid-owner {i}"))
            ),
            "more than 64 matches in one rule",
        ),
        (
            "43 masked marks: 130 kernel expressions",
            mangle(format!(
                "-A PREROUTING {} -j ACCEPT",
                repeat(43, |i| format!("-m mark --mark {i}/0xff"))
            )),
            "rule #0 of chain PREROUTING in table ip mangle (`meta mark and 0xff == 0x0",
        ),
        (
            "43 connmarks: the same through ct mark",
            mangle(format!(
                "-A PREROUTING {} -j ACCEPT",
                repeat(43, |i| format!("-m connmark --mark {i}/0xff"))
            )),
            "130 expressions in one rule, the limit is 128; nothing was applied",
        ),
        (
            "a 200-byte comment",
            mangle(format!(
                "-A PREROUTING -m comment --comment {} -j ACCEPT",
                "c".repeat(200)
            )),
            "cannot translate: comment longer than 128 bytes",
        ),
        (
            "a 300-byte comment",
            mangle(format!(
                "-A PREROUTING -m comment --comment {} -j ACCEPT",
                "c".repeat(300)
            )),
            "comment too long",
        ),
        (
            "a 100-byte chain name",
            mangle(format!(":{} - [0:0]", "C".repeat(100))),
            "bad chain name",
        ),
        (
            "a 40-byte interface name",
            mangle(format!("-A PREROUTING -i {} -j ACCEPT", "e".repeat(40))),
            "bad interface name",
        ),
        (
            "a 200-byte log prefix",
            format!(
                "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j LOG --log-prefix {}\nCOMMIT\n",
                "p".repeat(200)
            ),
            "LOG prefix longer than 29 characters",
        ),
        (
            "a 10 000-port multiport list",
            format!(
                "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p tcp -m multiport --dports {} -j RETURN\nCOMMIT\n",
                (1..=10_000).map(|p| p.to_string()).collect::<Vec<_>>().join(",")
            ),
            "line 3",
        ),
    ]
}

/// `nftmesh apply --network-namespace NS --config FILE`.
fn apply_config(ns: &str, file: &std::path::Path) -> std::process::Output {
    nftmesh(&[
        "apply",
        "--network-namespace",
        ns,
        "--config",
        file.to_str().unwrap(),
    ])
}

fn sidecar_json() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/seeds/config/sidecar.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("config seed")).expect("json")
}

/// Capture configs over a limit, and what the error must say.
fn config_cases() -> Vec<(&'static str, serde_json::Value, &'static str)> {
    let with = |field: &str, v: serde_json::Value| {
        let mut c = sidecar_json();
        c[field] = v;
        c
    };
    vec![
        (
            "a 300-byte excluded interface",
            with("exclude_interfaces", serde_json::json!(["x".repeat(300)])),
            "exclude_interfaces: invalid interface name",
        ),
        (
            "a 16-byte virtual interface among valid ones",
            with(
                "reroute_virtual_interfaces",
                serde_json::json!(["eth0", "v".repeat(16)]),
            ),
            "reroute_virtual_interfaces: invalid interface name",
        ),
        (
            "a port over 65535 in a 10 000-port list",
            with(
                "outbound_ports_exclude",
                serde_json::json!((60_000..70_000).collect::<Vec<u32>>()),
            ),
            "invalid value: integer `65536`, expected u16",
        ),
        (
            "a 1 MB field name",
            {
                let mut c = sidecar_json();
                c["x".repeat(1 << 20)] = serde_json::json!(1);
                c
            },
            "unknown field",
        ),
    ]
}

#[test]
fn oversized_input_exits_1_with_a_typed_error_and_changes_nothing() {
    let Some(ns) = netns_or_skip() else { return };
    let path = ns.path();
    let o = nftmesh(&["apply", "--network-namespace", &path]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = with_stdin(
        &["restore", "--network-namespace", &path],
        "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let before = ns.list();
    let mut failures = Vec::new();
    for (what, input, want) in restore_cases() {
        let o = with_stdin(&["restore", "--network-namespace", &path], &input);
        let err = text(&o.stderr);
        if o.status.code() != Some(1) || !err.contains(want) {
            failures.push(format!("restore, {what}: {:?}: {err}", o.status));
        }
    }
    let dir = std::env::temp_dir().join(format!("nftmesh-oversized-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, (what, cfg, want)) in config_cases().into_iter().enumerate() {
        let file = dir.join(format!("{i}.json"));
        std::fs::write(&file, cfg.to_string()).unwrap();
        let o = apply_config(&path, &file);
        let err = text(&o.stderr);
        if o.status.code() != Some(1) || !err.contains(want) {
            failures.push(format!("apply --config, {what}: {:?}: {err}", o.status));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(ns.list(), before, "a refused input changed the ruleset");
}

#[test]
fn very_large_input_the_kernel_takes_applies() {
    let Some(ns) = netns_or_skip() else { return };
    let path = ns.path();
    let mut c = sidecar_json();
    // Every other /28, so that no two merge into one interval in the listing.
    c["outbound_cidrs_exclude"] = serde_json::json!((0..60_000)
        .map(|i| format!("10.{}.{}.{}/28", i / 8 / 256, i / 8 % 256, i % 8 * 32))
        .collect::<Vec<_>>());
    c["outbound_ports_exclude"] = serde_json::json!((1..=60_000).collect::<Vec<u32>>());
    c["proxy_uids"] = serde_json::json!((1337..1337 + 20_000).collect::<Vec<u32>>());
    let file = std::env::temp_dir().join(format!("nftmesh-large-{}.json", std::process::id()));
    std::fs::write(&file, c.to_string()).unwrap();
    let o = apply_config(&path, &file);
    let _ = std::fs::remove_file(&file);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let live = ns.list();
    assert!(
        live.contains("10.29.75.224/28"),
        "the last excluded CIDR is live"
    );
    assert!(
        live.contains("meta skuid 21336"),
        "the last proxy uid is live"
    );
}
