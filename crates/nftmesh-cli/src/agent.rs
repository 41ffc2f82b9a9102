//! `nftmesh agent`: the node agent (`run`, thin over `nftmesh_agent`) and its clients (`add`,
//! `remove`, `status`, `list`, typed requests and replies of `nftmesh_protocol`).

use crate::capture_args::CaptureArgs;
use crate::error::CliError;
use clap::Subcommand;
use nftmesh::log::{Format, Level, Logger};
use nftmesh_protocol::{client, Desired, Reply, Request};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// `nftmesh agent ...`.
#[derive(Subcommand)]
pub enum AgentCommand {
    /// Run the agent: keep every registered pod's capture intact until SIGINT or SIGTERM
    /// (captures stay when it stops).
    Run(RunArgs),
    /// Register a pod and install its capture (returns once committed).
    Add(Box<AddArgs>),
    /// Remove a pod's capture and forget the pod.
    Remove(PodArgs),
    /// Every pod's state (desired capture, backend, installed at, last check, repairs, last
    /// error; an eBPF pod's cgroup and links), or one pod's, as JSON.
    Status(StatusArgs),
    /// The registered pods' namespaces, one per line.
    List(SocketArg),
}

/// The agent's socket.
#[derive(clap::Args)]
pub struct SocketArg {
    /// The agent's unix socket.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
}

/// `nftmesh agent run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The API socket to create (mode 0600).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Where the registry is kept across restarts.
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,
    /// Serve Prometheus metrics here (e.g. 127.0.0.1:15114).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Check every pod in full this often, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    resync: f64,
    /// Own the pods' tables where the kernel allows (nf_tables `owner` + `persist`, Linux 6.9):
    /// another process's change is refused by the kernel instead of repaired. `false`: repair
    /// only, as on older kernels.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    own_tables: bool,
    /// Log lines on stderr as `text` (`TIME\tLEVEL\tMESSAGE\tkey=value ...`) or `json` (one
    /// object per line); times in RFC 3339 UTC with milliseconds.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: Format,
    /// The lowest level logged: `debug` (each difference a repair fixed), `info` (one line
    /// per add, remove, repair), `warn` or `error`.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: Level,
    /// The BPF file system eBPF pods (`agent add --cgroup`) are pinned in; default: the one
    /// /proc/mounts lists (/sys/fs/bpf first). Pins of cgroups that are gone are removed at
    /// start.
    #[arg(long, value_name = "DIR")]
    bpffs: Option<PathBuf>,
}

/// `nftmesh agent add`.
#[derive(clap::Args)]
pub struct AddArgs {
    #[command(flatten)]
    pod: PodArgs,
    /// An ambient (ztunnel) in-pod capture from this JSON file, instead of the sidecar flags.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    ambient_config: Option<PathBuf>,
    /// Capture the pod's outbound connects with the eBPF backend: BPF programs on this cgroup
    /// v2 directory (an absolute path, not a cgroup2 mount's root), pinned in the agent's
    /// bpffs; its inbound capture stays nf_tables in the namespace. A sidecar capture only.
    #[arg(long, value_name = "DIR", conflicts_with = "ambient_config")]
    cgroup: Option<PathBuf>,
    #[command(flatten)]
    capture: CaptureArgs,
}

/// A pod.
#[derive(clap::Args)]
pub struct PodArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// The pod's network namespace.
    #[arg(long, value_name = "PATH")]
    network_namespace: PathBuf,
}

/// `nftmesh agent status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// Only this pod.
    #[arg(long, value_name = "PATH")]
    network_namespace: Option<PathBuf>,
}

const TIMEOUT: Duration = Duration::from_secs(60);

/// Run `nftmesh agent ...`.
pub fn run(cmd: AgentCommand) -> Result<(), CliError> {
    match cmd {
        AgentCommand::Run(a) => serve(a),
        AgentCommand::Add(a) => add(&a),
        AgentCommand::Remove(a) => {
            call(&a.socket.socket, &Request::remove(&a.network_namespace)).map(drop)
        }
        AgentCommand::Status(a) => {
            let req = Request::status(a.network_namespace.as_deref());
            let reply = call(&a.socket.socket, &req)?;
            let mut pods =
                serde_json::to_value(reply.pods.unwrap_or_default()).map_err(CliError::Json)?;
            for pod in pods.as_array_mut().into_iter().flatten() {
                rfc3339_times(pod);
            }
            let pretty = serde_json::to_string_pretty(&pods).unwrap_or_default();
            println!("{pretty}");
            Ok(())
        }
        AgentCommand::List(a) => {
            let reply = call(&a.socket, &Request::list())?;
            for p in reply.pods.iter().flatten() {
                println!("{}", p.network_namespace().display());
            }
            Ok(())
        }
    }
}

fn serve(a: RunArgs) -> Result<(), CliError> {
    if !(a.resync > 0.0 && a.resync.is_finite()) {
        return Err(CliError::Config(
            "--resync must be a positive number of seconds".into(),
        ));
    }
    let opts = nftmesh_agent::server::Options {
        socket: a.socket,
        state_dir: a.state_dir,
        metrics_addr: a.metrics_addr,
        resync: Duration::from_secs_f64(a.resync),
        own_tables: a.own_tables,
        bpffs: a.bpffs,
    };
    let log = Logger::stderr(a.log_format, a.log_level);
    let agent = nftmesh_agent::server::Agent::start_with_log(opts, log)?;
    Ok(agent.run()?)
}

fn add(a: &AddArgs) -> Result<(), CliError> {
    let netns = &a.pod.network_namespace;
    let desired = match &a.ambient_config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(CliError::io(path.display()))?;
            let v: Value = serde_json::from_str(&text).map_err(CliError::input(path.display()))?;
            Desired::from_parts(None, Some(&v), None).map_err(CliError::input(path.display()))?
        }
        None => Desired::Capture(Box::new(a.capture.to_config_in(Some(netns))?)),
    };
    if let Some(c) = a.cgroup.as_deref().filter(|c| !c.is_absolute()) {
        return Err(CliError::Config(format!(
            "--cgroup {}: an absolute path is required",
            c.display()
        )));
    }
    let req = Request::add(netns, desired).with_cgroup(a.cgroup.clone());
    let reply = call(&a.pod.socket.socket, &req)?;
    if let Some(r) = reply.report {
        eprintln!("nftmesh: {r}");
    }
    Ok(())
}

/// One request; an error reply is an error with its text (and differences).
fn call(socket: &Path, req: &Request) -> Result<Reply, CliError> {
    Ok(client::call_ok(socket, req, TIMEOUT)?)
}

/// A pod of a `status` reply with its times (seconds since the epoch on the wire) in RFC 3339
/// UTC with milliseconds: `installed_at`, `last_check` and each of `recent_repairs`' `at`.
fn rfc3339_times(pod: &mut Value) {
    fn convert(v: &mut Value) {
        let Some(secs) = v.as_f64() else { return };
        let at = if secs >= 0.0 {
            Duration::try_from_secs_f64(secs)
                .ok()
                .map(|d| UNIX_EPOCH + d)
        } else {
            Duration::try_from_secs_f64(-secs)
                .ok()
                .and_then(|d| UNIX_EPOCH.checked_sub(d))
        };
        if let Some(at) = at {
            *v = json!(nftmesh::log::timestamp(at));
        }
    }
    convert(&mut pod["installed_at"]);
    convert(&mut pod["last_check"]);
    for r in pod["recent_repairs"].as_array_mut().into_iter().flatten() {
        convert(&mut r["at"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_times_are_shown_in_rfc3339() {
        let mut pod = json!({
            "installed_at": 1_796_209_137.123_4,
            "last_check": null,
            "recent_repairs": [{"at": 0.0, "cause": "resync"}, {"at": 951_782_400.5}],
            "repairs": 2,
        });
        rfc3339_times(&mut pod);
        assert_eq!(
            pod,
            json!({
                "installed_at": "2026-12-02T10:58:57.123Z",
                "last_check": null,
                "recent_repairs": [
                    {"at": "1970-01-01T00:00:00.000Z", "cause": "resync"},
                    {"at": "2000-02-29T00:00:00.500Z"},
                ],
                "repairs": 2,
            })
        );
    }
}
