//! `nftmesh-cni`: a CNI plugin, chained after the pod's network plugin, that installs
//! nftmesh's capture (Istio's sidecar or ambient in-pod rules, or Linkerd's proxy-init rules,
//! over netlink) in the pod's network namespace while the runtime sets it up, so no pod starts
//! unmeshed and no pod needs `NET_ADMIN`. With `mesh` (`istio`, `linkerd`) it decides per pod
//! from the pod's annotations ([`pod::decide`]). It speaks CNI 0.3.0 to 1.1.0 (ADD, CHECK, DEL, VERSION, STATUS, GC),
//! reads its configuration on stdin and the `CNI_*` variables, and prints the spec's result
//! or error objects. The binary is [`run_plugin`] over the process's stdin and environment.
//! Run by a person (no `CNI_COMMAND`) it says what it is, as the reference plugins do
//! ([`about`]); `--help` and `--version` likewise.
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
pub mod cgroup;
pub mod config;
pub mod ebpf;
pub mod env;
mod error;
pub mod log;
pub mod plugin;
pub mod pod;

pub use error::CniError;

use std::io::{Read, Write};

/// What the plugin is, its version and the spec versions it speaks, in the reference
/// plugins' words (`CNI bridge plugin v1.1.1` / `CNI protocol versions supported: ...`).
pub fn about() -> String {
    format!(
        "CNI nftmesh-cni plugin v{}\nCNI protocol versions supported: {}\n",
        env!("CARGO_PKG_VERSION"),
        config::SUPPORTED_VERSIONS.join(", ")
    )
}

/// `--help`: [`about`], what the plugin does and how it is run.
pub fn help() -> String {
    format!(
        "{}\n\
         nftmesh-cni installs nftmesh's traffic capture (Istio's sidecar or ambient in-pod rules,\n\
         or Linkerd's proxy-init rules, over nf_tables netlink) in a pod's network namespace.\n\
         It is a chained CNI plugin, put last in a conflist and run by the container runtime,\n\
         not by hand: the runtime sets CNI_COMMAND (ADD, CHECK, DEL, VERSION, STATUS, GC),\n\
         CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS and CNI_PATH, writes the network\n\
         configuration on stdin and reads the result or error object on stdout.\n\
         \n\
         Usage: nftmesh-cni [--help | --version]   (without CNI_COMMAND)\n\
         \n\
         Configuration keys: capture, ambient or linkerd, mesh (istio, linkerd),\n\
         without_annotations, exclude_namespaces, validate, validation_timeout, agent_socket,\n\
         log_file, log_level, log_format (see the \"CNI plugin\" section of nftmesh's README).\n",
        about()
    )
}

/// A person running the plugin (`CNI_COMMAND` unset or empty), with the process's
/// arguments `args`: nothing, [`about`] on stderr, as the reference plugins' `skel` does;
/// `--version` / `-V`, [`about`] on stdout; `--help` / `-h`, [`help`] on stdout; all exit 0.
/// Anything else is a usage error: [`help`] on stderr, exit 2. Stdin is not read.
pub fn run_by_hand(args: &[String]) -> i32 {
    let (text, to_stdout, code) = match args.first().map(String::as_str) {
        None => (about(), false, 0),
        Some("--version" | "-V") => (about(), true, 0),
        Some("--help" | "-h") => (help(), true, 0),
        Some(other) => (
            format!("nftmesh-cni: unknown argument {other:?}\n\n{}", help()),
            false,
            2,
        ),
    };
    let written = if to_stdout {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|()| out.flush())
    } else {
        std::io::stderr().lock().write_all(text.as_bytes())
    };
    if written.is_err() {
        return 1;
    }
    code
}

/// The whole plugin: without `CNI_COMMAND`, [`run_by_hand`] with the process's arguments.
/// Else read stdin (at most [`config::MAX_STDIN`] bytes and one more, to tell an oversized
/// configuration), run the command the environment names, print the result or the error
/// object on stdout; the process's exit code (0, or 1 with an error object).
pub fn run_plugin() -> i32 {
    let env = env::Env::from_process();
    if env.command.as_deref().is_none_or(str::is_empty) {
        let args: Vec<String> = std::env::args_os()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return run_by_hand(&args);
    }
    let mut stdin = Vec::new();
    let read = std::io::stdin()
        .take(config::MAX_STDIN as u64 + 1)
        .read_to_end(&mut stdin);
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
