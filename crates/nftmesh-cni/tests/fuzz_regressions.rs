//! Every seed and kept reproducer of the fuzz target `cni_stdin` (`fuzz/seeds/cni_stdin/`),
//! replayed through the same harness.

#[path = "../../../fuzz/harness_cni.rs"]
mod harness_cni;

#[test]
fn cni_stdin_seeds_and_reproducers() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds/cni_stdin");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("seeds") {
        let data = std::fs::read(entry.expect("entry").path()).expect("seed");
        harness_cni::cni_stdin(&data);
        n += 1;
    }
    assert!(n >= 2, "{n} seeds");
}
