//! The `nftmesh-cni` binary: see the crate documentation of [`nftmesh_cni`].
#![forbid(unsafe_code)]

fn main() {
    // A bug must still reach the runtime as an error object, never as a bare crash.
    let code = std::panic::catch_unwind(nftmesh_cni::run_plugin).unwrap_or_else(|_| {
        let e = nftmesh_cni::CniError::Capture("internal error (a bug): see stderr".into());
        println!("{}", e.to_json("1.1.0"));
        1
    });
    std::process::exit(code);
}
