//! iptables-compat against the kernel and against the reference translator, in fresh network
//! namespaces the tests create:
//! - every Istio golden's translation (sidecar and ambient) loads with the real `nft -f`, and
//!   applied through the netlink backend (what `nftmesh restore` does) dumps back equal to
//!   itself;
//! - for every golden, Debian's `iptables-restore-translate` output and ours, each loaded into its
//!   own namespace and read back with `dump`, give the same outcome on the packet corpus, except
//!   where that tool comments out a rule it cannot translate (CT --zone, TPROXY).

use nftmesh_test_support as support;

use nftmesh::iptables::trace::split_trace_text;
use nftmesh::iptables::translate::{base_of, hook_of};
use nftmesh::iptables::{interpret, parse_trace, translate, translate_all, IptRuleset};
use nftmesh::model::canonical::canonical_ruleset;
use nftmesh::model::expr::IpVersion;
use nftmesh::model::ruleset::{Family, Ruleset};
use nftmesh::model::{eval, render, Hook};
use nftmesh::netlink::netns::run_in_new;
use nftmesh::netlink::Connection;

use std::process::Command;
use support::cases::TEST_GROUPS;
use support::corpus::{dims, random, systematic};
use support::netns::{group_file, tempfile_path::TempPath};

fn unavailable() -> Option<String> {
    support::kernel_unavailable()
}

fn goldens() -> Vec<(String, String)> {
    goldens_in(&support::conformance_dir().join("iptables"))
}

/// Istio's ambient iptables goldens (in-pod and host), named `ambient/CASE`.
fn ambient_goldens() -> Vec<(String, String)> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/istio/ambient/iptables");
    goldens_in(&dir)
        .into_iter()
        .map(|(n, t)| (format!("ambient/{n}"), t))
        .collect()
}

fn goldens_in(dir: &std::path::Path) -> Vec<(String, String)> {
    let dir = dir.to_path_buf();
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "golden"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn resolved_parts(text: &str) -> Vec<IptRuleset> {
    let groups = |n: &str| TEST_GROUPS.iter().find(|(g, _)| *g == n).map(|(_, id)| *id);
    let mut parts = parse_trace(text).unwrap().parts();
    for p in &mut parts {
        assert!(p.resolve_owners(&|_| None, &groups).is_empty());
    }
    parts
}

fn ids(rs: &Ruleset) -> Vec<(Family, String)> {
    rs.tables
        .iter()
        .map(|t| (t.family, t.name.clone()))
        .collect()
}

/// Apply `rs` through the netlink backend in a fresh namespace and dump it back.
fn apply_and_dump(rs: &Ruleset) -> Ruleset {
    let (rs, ids) = (rs.clone(), ids(rs));
    run_in_new(move || {
        let mut conn = Connection::open().unwrap();
        conn.apply(&rs)
            .unwrap_or_else(|e| panic!("apply: {e}\n{}", render(&rs)));
        conn.dump_ruleset(&ids).unwrap()
    })
    .unwrap()
}

#[test]
fn every_golden_translation_loads_with_nft_and_round_trips_through_netlink() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    let all = goldens()
        .into_iter()
        .chain(ambient_goldens())
        .collect::<Vec<_>>();
    assert_eq!(
        all.len(),
        27 + 14,
        "27 sidecar and 14 ambient iptables goldens"
    );
    for (name, text) in all {
        let nft = translate_all(&resolved_parts(&text)).unwrap();
        let script = render(&nft);
        let listing = support::netns::load_and_list(&script, None)
            .unwrap_or_else(|e| panic!("{name}: nft -f refused our translation: {e}\n{script}"));
        for t in &nft.tables {
            let header = format!("table {} {} {{", t.family.keyword(), t.name);
            assert!(listing.contains(&header), "{name}: {header} listed");
        }
        assert_eq!(
            apply_and_dump(&nft),
            canonical_ruleset(&nft),
            "{name}: applied over netlink and dumped back"
        );
    }
}

/// Run the shell command `shell`, in which `{file}` names a file holding `input`, in a private
/// mount namespace where the test group names resolve (a temporary /etc/group bound over the
/// real one), and in a fresh network namespace too when `net`. Its standard output.
fn with_test_groups(net: bool, shell: &str, input: &str) -> String {
    let file = TempPath::with_contents("input", input);
    let groups = group_file(&TEST_GROUPS);
    let inner = format!(
        "mount --bind {} /etc/group && {}",
        groups.path().display(),
        shell.replace("{file}", &file.path().display().to_string())
    );
    let mut args = vec!["--mount"];
    if net {
        args.push("--net");
    }
    let out = Command::new("unshare")
        .args(&args)
        .args(["sh", "-c", &inner])
        .output()
        .expect("run unshare");
    assert!(
        out.status.success(),
        "{shell}: {}\n{input}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `iptables-restore-translate` (or the ip6 one) of one part.
fn theirs(version: IpVersion, part: &str) -> String {
    let tool = match version {
        IpVersion::V4 => "iptables-restore-translate",
        IpVersion::V6 => "ip6tables-restore-translate",
    };
    with_test_groups(false, &format!("{tool} -f {{file}}"), part)
}

/// The tool assumes iptables-nft's base chains exist; declare them (as iptables-nft does) right
/// after each `add table`.
fn with_base_chains(script: &str, rs: &IptRuleset) -> String {
    let fam = if rs.family == IpVersion::V4 {
        "ip"
    } else {
        "ip6"
    };
    let mut out = String::new();
    for line in script.lines() {
        out.push_str(line);
        out.push('\n');
        let Some(t) = line.strip_prefix(&format!("add table {fam} ")) else {
            continue;
        };
        let table = rs
            .tables
            .iter()
            .find(|x| x.name.keyword() == t.trim())
            .unwrap();
        for c in table.chains.iter().filter(|c| c.policy.is_some()) {
            let hook = hook_of(&c.name).unwrap();
            let b = base_of(table.name, hook, c.policy.unwrap());
            out.push_str(&format!(
                "add chain {fam} {t} {} {{ type {} hook {} priority {}; }}\n",
                c.name,
                b.kind.keyword(),
                hook.keyword(),
                b.priority
            ));
        }
    }
    out
}

#[test]
fn iptables_restore_translate_and_ours_agree_on_the_corpus_after_a_kernel_round_trip() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    if let Some(why) = support::tool_missing("iptables-restore-translate", "--help") {
        support::skip(&why);
        return;
    }
    let mut compared = 0usize;
    let mut explained_n = 0usize;
    let mut untranslated_cases = Vec::new();
    for (name, text) in goldens() {
        let parts = resolved_parts(&text);
        for ((version, part_text), part) in split_trace_text(&text).into_iter().zip(&parts) {
            let script = theirs(version, &part_text);
            let commented = script.lines().filter(|l| l.starts_with("# -t")).count();
            let script = with_base_chains(&script, part);
            let ours = translate(part).unwrap();
            let table_ids = ids(&ours);
            let dumped_theirs = run_in_new(move || {
                support::run_here("nft", &["-f", "-"], &script);
                let mut conn = Connection::open().unwrap();
                conn.dump_ruleset(&table_ids)
            })
            .unwrap()
            .unwrap_or_else(|e| panic!("{name}: dump of iptables-restore-translate's rules: {e}"));
            let dumped_ours = apply_and_dump(&ours);
            if commented > 0 {
                untranslated_cases.push(format!("{name} ({commented} rules)"));
            }
            let d = dims(std::slice::from_ref(part), &[50001, 50002, 1, 2, 3, 4, 888]);
            for hook in Hook::ALL {
                let mut pkts = systematic(&d, version, hook);
                pkts.extend(random(&d, version, hook, 300, 0xc0ffee));
                for p in &pkts {
                    compared += 1;
                    let a = eval(&dumped_ours, p, hook).unwrap();
                    let want = interpret(std::slice::from_ref(part), p, hook).unwrap();
                    assert_eq!(
                        a, want,
                        "{name}: our kernel round trip vs interpreter, {hook:?} {p:?}"
                    );
                    let b = eval(&dumped_theirs, p, hook).unwrap();
                    if a == b {
                        continue;
                    }
                    // The tool leaves CT --zone and TPROXY rules as comments.
                    let explained = commented > 0
                        && ((a.ct_zone.is_some() && b.ct_zone.is_none())
                            || (a.tproxy.is_some() && b.tproxy.is_none()));
                    explained_n += 1;
                    assert!(
                        explained,
                        "{name}: iptables-restore-translate vs ours at {hook:?} for {p:?}\n theirs {b:?}\n ours   {a:?}"
                    );
                }
            }
        }
    }
    eprintln!(
        "{compared} packets compared, {explained_n} differ where iptables-restore-translate left \
         rules untranslated: {}",
        untranslated_cases.join(", ")
    );
    assert!(compared > 100_000);
    // The classes of the exception are real (the test would hide nothing if they vanished).
    assert!(explained_n > 0, "no packet shows the untranslated rules");
}

/// `iptables-restore` then `iptables-save` (iptables-nft, the real tools) of `text`, in a fresh
/// network namespace.
fn through_real_iptables(version: IpVersion, text: &str) -> String {
    let (restore, save) = match version {
        IpVersion::V4 => ("iptables-restore", "iptables-save"),
        IpVersion::V6 => ("ip6tables-restore", "ip6tables-save"),
    };
    with_test_groups(true, &format!("{restore} < {{file}} && {save}"), text)
}

/// Each rule as its sorted match texts plus its target text: the order of pure matches does not
/// change what a rule means, and iptables-save writes them in its own order.
type RuleForm = (Vec<String>, String);

fn rule_forms(rs: &IptRuleset) -> Vec<(String, String, Vec<RuleForm>)> {
    let mut out = Vec::new();
    for t in &rs.tables {
        for c in &t.chains {
            let rules = c
                .rules
                .iter()
                .map(|r| {
                    let mut ms: Vec<String> =
                        r.matches.iter().map(|m| m.node.to_string()).collect();
                    ms.sort();
                    (
                        ms,
                        r.target
                            .as_ref()
                            .map(|t| t.node.to_string())
                            .unwrap_or_default(),
                    )
                })
                .collect();
            out.push((t.name.keyword().to_string(), c.name.clone(), rules));
        }
    }
    out.sort();
    out
}

#[test]
fn what_real_iptables_saves_back_parses_to_the_same_rules() {
    if let Some(why) = unavailable() {
        support::skip(&why);
        return;
    }
    if let Some(why) = support::tool_missing("iptables-restore", "--version") {
        support::skip(&why);
        return;
    }
    let mut inputs: Vec<(String, IpVersion, String)> = Vec::new();
    for (name, text) in goldens() {
        for (version, part) in split_trace_text(&text) {
            inputs.push((name.clone(), version, part));
        }
    }
    let extra = include_str!("data/iptables-extra.rules").to_string();
    inputs.push(("iptables-extra.rules".into(), IpVersion::V4, extra));
    let groups = |n: &str| TEST_GROUPS.iter().find(|(g, _)| *g == n).map(|(_, id)| *id);
    for (name, version, text) in &inputs {
        let mut ours = nftmesh::iptables::parse(text, *version).unwrap();
        assert!(ours.resolve_owners(&|_| None, &groups).is_empty());
        let saved = through_real_iptables(*version, text);
        let theirs = nftmesh::iptables::parse(&saved, *version)
            .unwrap_or_else(|e| panic!("{name}: iptables-save output: {e}\n{saved}"));
        assert_eq!(
            rule_forms(&theirs),
            rule_forms(&ours),
            "{name} ({version:?}): parsed input vs parsed iptables-save\n{saved}"
        );
    }
}
