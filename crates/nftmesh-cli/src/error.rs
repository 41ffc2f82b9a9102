//! [`CliError`]: every way a subcommand fails, by what failed, with its exit code. `main`
//! prints it after the name of who speaks (`nftmesh`, `nftmesh: agent`, `istio-iptables`, ...)
//! and exits with [`CliError::exit_code`]; found drift goes to stdout instead, as `diff`'s
//! output does.

use crate::cni_install::CniInstallError;
use nix::sys::signal::Signal;
use std::fmt::Display;
use std::io::Write as _;
use std::process::ExitCode;

/// Why a subcommand did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Flags or settings the command cannot use; the text names the flag or setting. Exit 1.
    #[error("{0}")]
    Config(String),
    /// A flag's value refused before anything started, as clap refuses the values it checks
    /// itself (`trace --timeout`). Exit 2.
    #[error("{0}")]
    Usage(String),
    /// An input (iptables-save text, a JSON configuration) that does not parse, translate or
    /// resolve: `NAME: WHY`, NAME a path or `<stdin>`. Exit 1.
    #[error("{name}: {why}")]
    Input {
        /// The file's path, or `<stdin>`.
        name: String,
        /// What is wrong with it, and where.
        why: String,
    },
    /// Reading or writing failed: `WHAT: ERROR`, WHAT the file's path or the stream
    /// (`<stdin>`, `stdout`). Exit 1.
    #[error("{what}: {source}")]
    Io {
        /// The file's path, or the stream.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A system call outside the capture API (signals, inotify) failed. Exit 1.
    #[error("{what}: {source}")]
    System {
        /// What it was for.
        what: String,
        /// The error.
        source: nix::Error,
    },
    /// The capture API failed: the kernel (netlink), the network namespace, invalid capture
    /// settings, a verification. Exit 1.
    #[error(transparent)]
    Capture(Box<nftmesh::CaptureError>),
    /// A temporary table of ours could not be deleted (`trace`'s). Exit 1.
    #[error("deleting table inet {table}: {source}")]
    Cleanup {
        /// The table's name.
        table: String,
        /// Why.
        source: Box<nftmesh::CaptureError>,
    },
    /// The packet could not be evaluated through the ruleset (`explain`). Exit 1.
    #[error(transparent)]
    Eval(#[from] nftmesh_model::EvalError),
    /// A node agent client's call: no reply, or an error reply (its text, then its
    /// differences one a line). Exit 1.
    #[error(transparent)]
    Agent(#[from] nftmesh_protocol::CallError),
    /// Running the node agent failed (its socket, state dir, signals or metrics). Exit 1.
    #[error(transparent)]
    AgentRun(#[from] nftmesh_agent::server::AgentError),
    /// `cni install` or `cni uninstall` refused or failed; nothing was changed when refused.
    /// Exit 1.
    #[error(transparent)]
    CniInstall(#[from] CniInstallError),
    /// A result could not be written as JSON. Exit 1.
    #[error(transparent)]
    Json(serde_json::Error),
    /// Drift: the live tables differ from the capture. A legend line (what `-` and `+` are)
    /// and every difference, printed on stdout. Exit 1.
    #[error(
        "drift (- wanted by the capture settings, + live in the namespace):{}",
        lines(.0)
    )]
    Drift(Vec<nftmesh::Drift>),
    /// A drift check that could not run. Exit 2, as `diff` says trouble.
    #[error(transparent)]
    CheckFailed(Box<CliError>),
    /// Istio's validation found the capture not working (`istio-iptables --run-validation`).
    /// Exit 126, Istio's `ValidationErrorCode`.
    #[error(
        "iptables validation failed; workload is not ready for Istio: {0}. When using Istio \
         CNI, this can occur if a pod is scheduled before the node is ready."
    )]
    Validation(Box<nftmesh::CaptureError>),
    /// Linkerd's network validation did not land on its listener: the text says what
    /// happened. Exit 95, Linkerd's validator's code.
    #[error("{0}")]
    NetworkValidation(String),
    /// Stopped by a signal after `packets` packets (`trace`). Exit 128 + the signal's number,
    /// as a shell reports a process killed by it.
    #[error("{signal} after {packets} packet(s)")]
    Interrupted {
        /// The signal.
        signal: Signal,
        /// The packets traced before it.
        packets: u64,
    },
}

/// Each difference on a line of its own, after the legend.
fn lines(drift: &[nftmesh::Drift]) -> String {
    drift.iter().map(|d| format!("\n{d}")).collect()
}

impl From<nftmesh::CaptureError> for CliError {
    fn from(e: nftmesh::CaptureError) -> Self {
        CliError::Capture(Box::new(e))
    }
}

impl From<nftmesh_model::ConfigError> for CliError {
    fn from(e: nftmesh_model::ConfigError) -> Self {
        nftmesh::CaptureError::from(e).into()
    }
}

impl From<nftmesh_netlink::NetlinkError> for CliError {
    fn from(e: nftmesh_netlink::NetlinkError) -> Self {
        nftmesh::CaptureError::from(e).into()
    }
}

impl CliError {
    /// A reading or writing error of `what` (a path, or a stream's name), for `map_err`.
    pub fn io(what: impl Display) -> impl FnOnce(std::io::Error) -> CliError {
        let what = what.to_string();
        move |source| CliError::Io { what, source }
    }

    /// An error in the input `name` (a path, or `<stdin>`), for `map_err`.
    pub fn input<E: Display>(name: impl Display) -> impl FnOnce(E) -> CliError {
        let name = name.to_string();
        move |e| CliError::Input {
            name,
            why: e.to_string(),
        }
    }

    /// A failed system call made for `what`, for `map_err`.
    pub fn system(what: impl Display) -> impl FnOnce(nix::Error) -> CliError {
        let what = what.to_string();
        move |source| CliError::System { what, source }
    }

    /// The process's exit status for this error.
    pub fn code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::CheckFailed(_) => 2,
            CliError::Validation(_) => 126,
            CliError::NetworkValidation(_) => crate::linkerd_validator::FAILED,
            CliError::Interrupted { signal, .. } => 128 + *signal as u8,
            _ => 1,
        }
    }

    /// [`CliError::code`] as the process's exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// Print the error: drift on stdout; anything else as one line `SPEAKER: MESSAGE` on
    /// stderr (a reader of stderr that went away is no reason to fail differently).
    pub fn report(&self, speaker: &str) {
        match self {
            CliError::Drift(_) => println!("{self}"),
            _ => {
                let _ = writeln!(std::io::stderr(), "{speaker}: {self}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_exit_code() {
        let config = || CliError::Config("bad".into());
        assert_eq!(config().code(), 1);
        assert_eq!(CliError::Usage("--timeout".into()).code(), 2);
        assert_eq!(CliError::Drift(vec![]).code(), 1);
        assert_eq!(CliError::CheckFailed(Box::new(config())).code(), 2);
        let verify = nftmesh::CaptureError::Verify("no".into());
        assert_eq!(CliError::Validation(Box::new(verify)).code(), 126);
        let interrupted = |signal| CliError::Interrupted { signal, packets: 3 };
        assert_eq!(interrupted(Signal::SIGTERM).code(), 128 + 15);
        assert_eq!(interrupted(Signal::SIGINT).code(), 128 + 2);
    }

    #[test]
    fn messages_say_what_failed_and_where() {
        let e = CliError::io("/etc/x.json")(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(e.to_string(), "/etc/x.json: entity not found");
        let e = CliError::input("<stdin>")("line 2, column 4: unknown chain");
        assert_eq!(e.to_string(), "<stdin>: line 2, column 4: unknown chain");
        let e = CliError::CheckFailed(Box::new(CliError::Config("bad".into())));
        assert_eq!(e.to_string(), "bad");
        let e = CliError::Drift(vec![nftmesh::Drift::MissingLoopbackV6]);
        assert_eq!(
            e.to_string(),
            "drift (- wanted by the capture settings, + live in the namespace):\n\
             ::6/128 is missing on lo"
        );
        let e = CliError::Interrupted {
            signal: Signal::SIGINT,
            packets: 2,
        };
        assert_eq!(e.to_string(), "SIGINT after 2 packet(s)");
    }
}
