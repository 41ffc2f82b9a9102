//! `nftmesh completions SHELL` and `nftmesh man`: generated from the clap definitions, checked
//! with the real shells' and groff's parsers where the machine has them (bash and groff are set
//! up by scripts/setup.sh).

mod common;

use common::{nftmesh, nftmesh_ok};
use std::process::Command;

/// Every subcommand, as `nftmesh --help` lists them.
fn subcommands() -> Vec<String> {
    let help = nftmesh_ok(&["--help"]);
    let list = help
        .split("Commands:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap_or_default();
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(String::from)
        .collect()
}

#[test]
fn completions_name_every_subcommand_and_parse_in_their_shell() {
    let subs = subcommands();
    assert!(
        subs.iter().any(|s| s == "apply") && subs.iter().any(|s| s == "man"),
        "{subs:?}"
    );
    let bash = nftmesh_ok(&["completions", "bash"]);
    for sub in &subs {
        assert!(bash.contains(sub.as_str()), "bash completion lacks {sub}");
    }
    assert!(bash.contains("--network-namespace"), "{bash}");
    // Parsed (not run) by bash: a syntax error fails here.
    let mut check = Command::new("bash");
    check.arg("-n");
    let o = common::with_input(check, &bash);
    assert!(
        o.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(nftmesh_ok(&["completions", "zsh"]).starts_with("#compdef nftmesh"));
    assert!(nftmesh_ok(&["completions", "fish"]).contains("complete -c nftmesh"));
    let o = nftmesh(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid value 'tcsh'"));
}

#[test]
fn man_prints_nftmesh_1_and_writes_a_page_per_subcommand_that_groff_accepts() {
    let page = nftmesh_ok(&["man"]);
    assert!(page.contains(".TH nftmesh 1"), "{page}");
    let dir = std::env::temp_dir().join(format!("nftmesh-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let o = nftmesh(&["man", "--out-dir", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for sub in subcommands() {
        assert!(
            pages.contains(&format!("nftmesh-{sub}.1")),
            "no page for {sub}: {pages:?}"
        );
    }
    for nested in ["nftmesh-agent-run.1", "nftmesh-ambient-host-cleanup.1"] {
        assert!(pages.iter().any(|p| p == nested), "{pages:?}");
    }
    assert!(!pages.iter().any(|p| p.contains("help")), "{pages:?}");
    let apply = std::fs::read_to_string(dir.join("nftmesh-apply.1")).unwrap();
    let version = format!("\"nftmesh-apply {}\"", env!("CARGO_PKG_VERSION"));
    assert!(
        apply.contains(&format!(".TH nftmesh-apply 1  {version}")),
        "{apply}"
    );
    assert!(apply.contains("network\\-namespace"), "{apply}");
    // groff parses every page with all warnings on and prints nothing.
    for p in &pages {
        let o = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(dir.join(p))
            .output()
            .expect("run groff (scripts/setup.sh installs groff-base)");
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "groff {p}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // A directory that is not there is an error naming it; nothing is written.
    let o = nftmesh(&["man", "--out-dir", "/nonexistent/nftmesh-man"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/nonexistent/nftmesh-man/"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
