//! Every seed and kept reproducer of the fuzz target `agent_request`
//! (`fuzz/seeds/agent_request/`), replayed through the same harness.

#[path = "../../../fuzz/harness_agent.rs"]
mod harness_agent;

#[test]
fn agent_request_seeds_and_reproducers() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/seeds/agent_request"
    );
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("seeds") {
        let data = std::fs::read(entry.expect("entry").path()).expect("seed");
        harness_agent::agent_request(&data);
        n += 1;
    }
    assert!(n >= 3, "{n} seeds");
}
