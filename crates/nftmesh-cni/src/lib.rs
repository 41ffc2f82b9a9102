//! `nftmesh-cni`: a CNI plugin, chained after the pod's network plugin, that installs
//! nftmesh's capture (Istio's sidecar or ambient in-pod rules, over netlink) in the pod's
//! network namespace while the runtime sets it up, so no pod starts unmeshed and no pod
//! needs `NET_ADMIN`. It speaks CNI 0.3.0 to 1.1.0 (ADD, CHECK, DEL, VERSION, STATUS, GC),
//! reads its configuration on stdin and the `CNI_*` variables, and prints the spec's result
//! or error objects. The binary is [`run_plugin`] over the process's stdin and environment.
//!
//! ```
//! use nftmesh_cni::{env::Env, plugin};
//!
//! let env = Env { command: Some("VERSION".into()), ..Env::default() };
//! let reply = plugin::run(&env, br#"{"cniVersion":"1.0.0"}"#).unwrap().unwrap();
//! assert_eq!(reply["supportedVersions"][4], "1.1.0");
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod env;
mod error;
pub mod log;
pub mod plugin;

pub use error::CniError;

use std::io::{Read, Write};

/// The whole plugin: read stdin (at most [`config::MAX_STDIN`] bytes and one more, to tell
/// an oversized configuration), run the command the environment names, print the result or
/// the error object on stdout; the process's exit code (0, or 1 with an error object).
pub fn run_plugin() -> i32 {
    let mut stdin = Vec::new();
    let read = std::io::stdin()
        .take(config::MAX_STDIN as u64 + 1)
        .read_to_end(&mut stdin);
    let env = env::Env::from_process();
    let outcome = match read {
        // VERSION needs no configuration; the others report a missing one themselves.
        Ok(_) => plugin::run(&env, &stdin),
        Err(e) => Err((
            CniError::InvalidConfig(format!("reading stdin: {e}")),
            config::SUPPORTED_VERSIONS[config::SUPPORTED_VERSIONS.len() - 1].to_string(),
        )),
    };
    let (text, code) = match outcome {
        Ok(Some(v)) => (format!("{v}\n"), 0),
        Ok(None) => (String::new(), 0),
        Err((e, version)) => (format!("{}\n", e.to_json(&version)), 1),
    };
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return 1;
    }
    code
}
