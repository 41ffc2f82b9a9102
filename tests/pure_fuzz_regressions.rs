//! Every fuzz seed and every committed crash reproducer (`fuzz/seeds/TARGET/`,
//! `fuzz/regressions/TARGET/`) run through the fuzz targets' bodies as ordinary tests, so a fixed
//! crash stays fixed without a fuzzer in CI.

#[allow(dead_code)] // each test uses one of the harness functions
#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            // A panic names the file through the test's output.
            eprintln!("{target}: {}", f.display());
            body(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn iptables_seeds_and_reproducers() {
    assert!(replay("iptables", harness::iptables) >= 27);
}

#[test]
fn config_seeds_and_reproducers() {
    assert!(replay("config", harness::config) >= 1);
}

#[test]
fn istio_lists_seeds_and_reproducers() {
    assert!(replay("istio_lists", harness::istio_lists) >= 1);
}

#[test]
fn netlink_reply_seeds_and_reproducers() {
    assert!(replay("netlink_reply", harness::netlink_reply) >= 1);
}

#[test]
fn encode_seeds_and_reproducers() {
    assert!(replay("encode", harness::encode) >= 4);
}
