//! The node agent's protocol: any bytes are a request the agent reads or refuses.

/// The node agent's request lines: parsed into a command or refused with a reason; never a
/// panic. Shared by the fuzz target `agent_request` and
/// `crates/nftmesh-agent/tests/fuzz_regressions.rs`.
pub fn agent_request(data: &[u8]) {
    match nftmesh_agent::protocol::parse(data) {
        Ok(nftmesh_agent::protocol::Command::Add { desired, netns, .. }) => {
            assert!(netns.is_absolute());
            let _ = desired.capture();
        }
        Ok(_) => {}
        Err(e) => assert!(!e.is_empty()),
    }
}
