//! The `nftmesh` command: Istio's `istio-iptables` flags over nftmesh's native nf_tables
//! capture, plus subcommands.
#![forbid(unsafe_code)]

mod agent;
mod ambient;
mod capture_args;
mod cni_install;
mod docs;
mod explain;
mod host;
mod istio;
mod log;
mod restore;
mod stats;
mod trace;

use capture_args::CaptureArgs;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Istio sidecar traffic capture through nf_tables, with no iptables or nft binary.
///
/// Nothing changes without a subcommand that says so: `nftmesh` alone prints this help.
#[derive(Parser)]
#[command(
    name = "nftmesh",
    version,
    about,
    subcommand_required = true,
    arg_required_else_help = true,
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The help's last words: how to apply, since a bare `nftmesh` never does.
const AFTER_HELP: &str = "Capture flags follow a subcommand: `nftmesh plan FLAGS` prints the \
rules, `nftmesh apply FLAGS --network-namespace PATH` installs them. Istio's bare \
`istio-iptables FLAGS` is `nftmesh istio-iptables FLAGS` (or the binary named istio-iptables).";

#[derive(Subcommand)]
enum Command {
    /// Print the nf_tables ruleset (nft syntax) the capture settings compile to; changes nothing.
    Plan(CaptureArgs),
    /// Install the capture in ONE nf_tables transaction (replacing nftmesh's tables in place).
    Apply(ApplyArgs),
    /// Print nftmesh's live tables as nft text, read back over netlink and decoded by nftmesh.
    Dump(NetnsArg),
    /// Check capture with real connections, like Istio's validation: a connection from a
    /// non-proxy uid to the probe must land on the outbound capture port, one from the proxy
    /// uid must not. Exit 1 naming the failed expectation.
    Verify(VerifyArgs),
    /// Compare the live tables with what the capture settings compile to; exit 1 on drift
    /// (printing each difference), 0 when equal, 2 on error.
    Diff(DiffArgs),
    /// Explain one packet's way through the capture (or the live tables with --live): every
    /// chain entered, every rule that matched, and whether and where it is captured.
    Explain(Box<explain::ExplainArgs>),
    /// The packet and byte counters of nftmesh's live tables: captured outbound, inbound and
    /// DNS, passthrough by reason (proxy uid, loopback, excluded CIDR, port, interface), and
    /// every rule's counts.
    Stats(stats::StatsArgs),
    /// Trace real packets live: a temporary table of its own marks the packets the filter
    /// selects for nf_tables tracing; prints `tracing` to stderr once it listens, then each
    /// packet's path (every rule that matched, as nft text). The table is deleted on exit, and
    /// by the kernel if the process is killed.
    Trace(Box<trace::TraceArgs>),
    /// Translate iptables-save text to nf_tables and print it as nft text; changes nothing.
    Translate(restore::InputArgs),
    /// Apply iptables-save text natively (nat, mangle, raw and filter): every table it writes
    /// is replaced in ONE nf_tables transaction. The rules are nftables-native, so
    /// iptables-nft(-save) then calls those tables incompatible; read them with nft.
    Restore(restore::RestoreArgs),
    /// The node agent: keeps every registered pod's capture intact (run), and its clients
    /// (add, remove, status, list).
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Istio ambient: ztunnel's in-pod capture and the node's kubelet probe SNAT.
    #[command(subcommand)]
    Ambient(ambient::AmbientCommand),
    /// Install or uninstall nftmesh-cni in a node's CNI configuration (as istio-cni's installer does).
    #[command(subcommand)]
    Cni(cni_install::CniCommand),
    /// Behave as Istio's `istio-iptables` (the istio-init and istio-validation containers):
    /// the injector's argv, Istio's flags, env vars, validation and exit codes. A binary
    /// named `istio-iptables` (e.g. a symlink to nftmesh) does the same.
    #[command(name = "istio-iptables", args_override_self = true)]
    IstioIptables(Box<istio::IstioIptablesArgs>),
    /// Print the shell completion script for SHELL (generated from this command's flags).
    Completions(docs::CompletionsArgs),
    /// Print the man page nftmesh.1, or write it and one page per subcommand with --out-dir.
    Man(docs::ManArgs),
}

/// Where to work.
#[derive(clap::Args)]
struct NetnsArg {
    /// Network namespace to work in (`/proc/PID/ns/net`, `/var/run/netns/NAME`); default: ours.
    #[arg(long, value_name = "PATH", env = "NETWORK_NAMESPACE")]
    network_namespace: Option<std::path::PathBuf>,
}

/// `nftmesh verify`: the capture to check, where, and the probe.
#[derive(clap::Args)]
struct VerifyArgs {
    #[command(flatten)]
    capture: CaptureArgs,
    #[command(flatten)]
    netns: NetnsArg,
    /// Destination of the probe connections: an address routed out of the namespace and not
    /// excluded from capture (nothing needs to answer there).
    #[arg(long, value_name = "ADDR:PORT", default_value = "192.0.2.1:15002")]
    probe: std::net::SocketAddr,
    /// The uid (and gid) of the connection that must be captured.
    #[arg(long, value_name = "UID", default_value_t = 65534)]
    app_uid: u32,
}

/// `nftmesh diff`: the desired capture and where to compare it.
#[derive(clap::Args)]
struct DiffArgs {
    #[command(flatten)]
    capture: CaptureArgs,
    #[command(flatten)]
    netns: NetnsArg,
}

/// `nftmesh apply`: where and how to install.
#[derive(clap::Args)]
struct ApplyArgs {
    #[command(flatten)]
    capture: CaptureArgs,
    /// Network namespace to work in (`/proc/PID/ns/net`, `/var/run/netns/NAME`); default: ours.
    #[arg(long, value_name = "PATH", env = "NETWORK_NAMESPACE")]
    network_namespace: Option<std::path::PathBuf>,
    /// Print the ruleset that would be applied (nft syntax) and change nothing.
    #[arg(long, env = "DRY_RUN")]
    dry_run: bool,
    /// Only remove nftmesh's tables (both capture modes); every other table is untouched.
    #[arg(long, env = "CLEANUP_ONLY")]
    cleanup_only: bool,
    /// Take over from Istio's iptables rules: delete their `ISTIO_*` chains and the rules
    /// jumping to them from the iptables-nft nat, mangle and raw tables in the SAME transaction
    /// that installs nftmesh's tables. Refused while iptables-legacy tables exist in the
    /// namespace (see --migrate-allow-legacy).
    #[arg(long, conflicts_with = "cleanup_only")]
    migrate: bool,
    /// With --migrate: go ahead although iptables-legacy tables exist; their rules (a separate
    /// kernel subsystem) stay in place and keep matching.
    #[arg(long, requires = "migrate")]
    migrate_allow_legacy: bool,
}

fn main() -> ExitCode {
    let invoked_as = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if invoked_as.as_deref() == Some("istio-iptables") {
        return istio::run(istio::IstioIptablesCli::parse().into_args());
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Flags without a subcommand (the old istio-iptables-style invocation): say how.
            if e.kind() == clap::error::ErrorKind::UnknownArgument
                && std::env::args().nth(1).is_some_and(|a| a.starts_with('-'))
            {
                eprintln!("\nnftmesh: nothing was changed. {AFTER_HELP}");
            }
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let result = match cli.command {
        Command::Plan(args) => plan(&args),
        Command::Apply(args) => apply(args),
        Command::Dump(args) => dump(args),
        Command::Diff(args) => return diff(args),
        Command::Verify(args) => verify(args),
        Command::Explain(args) => explain::run(&args),
        Command::Stats(args) => stats::run(&args),
        Command::Trace(args) => return trace::run(&args),
        Command::Translate(args) => restore::translate(&args),
        Command::Restore(args) => restore::restore(args),
        Command::IstioIptables(args) => return istio::run(*args),
        Command::Ambient(cmd) => return ambient::run(cmd),
        Command::Agent(cmd) => return agent::run(cmd),
        Command::Cni(cmd) => return cni_install::run(cmd),
        Command::Completions(args) => docs::completions::<Cli>(&args),
        Command::Man(args) => docs::man::<Cli>(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nftmesh: {e}");
            ExitCode::FAILURE
        }
    }
}

fn plan(args: &CaptureArgs) -> Result<(), String> {
    let cfg = args.to_config().map_err(|e| e.to_string())?;
    print!("{}", nftmesh_model::render(&nftmesh_model::compile(&cfg)));
    Ok(())
}

fn apply(args: ApplyArgs) -> Result<(), String> {
    let ns_path = args.network_namespace.as_deref();
    let cfg = args.capture.to_config_in(ns_path)?;
    let migration = match (args.migrate, args.migrate_allow_legacy) {
        (false, _) => nftmesh::Migration::None,
        (true, false) => nftmesh::Migration::FromIptables,
        (true, true) => nftmesh::Migration::FromIptablesAllowLegacy,
    };
    let capture = nftmesh::Capture::new(&cfg)
        .map_err(|e| e.to_string())?
        .migrating(migration);
    if args.dry_run {
        print!("{}", capture.render());
        return Ok(());
    }
    let ns = nftmesh::Namespace::open_or_current(ns_path).map_err(|e| e.to_string())?;
    if args.cleanup_only {
        let removed = ns.remove(&capture).map_err(|e| e.to_string())?;
        eprintln!(
            "nftmesh: removed {} table(s) and the TPROXY routing",
            removed.tables
        );
        return Ok(());
    }
    let report = ns.install(&capture).map_err(|e| match e {
        nftmesh::CaptureError::LegacyTables(_) => {
            format!("--migrate: {e}: pass --migrate-allow-legacy to leave them in place")
        }
        e => e.to_string(),
    })?;
    let mut msg = report.to_string();
    if migration != nftmesh::Migration::None {
        msg.push_str(&format!(
            "\nmigrated from iptables in the same transaction: removed {} jump rule(s) to \
             ISTIO_* chains; {} other rule(s) left in the iptables-nft nat/mangle/raw tables",
            report.migrated_jumps, report.iptables_rules_left
        ));
    }
    // The transaction is acknowledged; the socket's release waits for the kernel's deferred
    // cleanup, which need not delay this command's exit.
    ns.close_after_exit();
    eprintln!("nftmesh: {msg}");
    Ok(())
}

fn dump(args: NetnsArg) -> Result<(), String> {
    let ns = nftmesh::Namespace::open_or_current(args.network_namespace.as_deref())
        .map_err(|e| e.to_string())?;
    let live = ns.live().map_err(|e| e.to_string())?;
    if live.tables.is_empty() {
        // stdout stays an (empty) nft script; the person reading learns why it is empty.
        eprintln!("nftmesh: no nftmesh table in this namespace");
    }
    print!("{}", nftmesh_model::render(&live));
    Ok(())
}

fn diff(args: DiffArgs) -> ExitCode {
    report_drift((|| {
        let ns_path = args.netns.network_namespace.as_deref();
        let cfg = args.capture.to_config_in(ns_path)?;
        let capture = nftmesh::Capture::new(&cfg).map_err(|e| e.to_string())?;
        let ns = nftmesh::Namespace::open_or_current(ns_path).map_err(|e| e.to_string())?;
        ns.check(&capture).map_err(|e| e.to_string())
    })())
}

/// Print a drift check's outcome as `diff` commands do: nothing and exit 0 when equal; a
/// legend line (what `-` and `+` are) and every difference, exit 1, on drift; the error, exit
/// 2, when the check could not run.
pub(crate) fn report_drift(checked: Result<Vec<nftmesh::Drift>, String>) -> ExitCode {
    match checked {
        Ok(d) if d.is_empty() => ExitCode::SUCCESS,
        Ok(d) => {
            println!("drift (- wanted by the capture settings, + live in the namespace):");
            for x in &d {
                println!("{x}");
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("nftmesh: {e}");
            ExitCode::from(2)
        }
    }
}

fn verify(args: VerifyArgs) -> Result<(), String> {
    let ns_path = args.netns.network_namespace.as_deref();
    let cfg = args.capture.to_config_in(ns_path)?;
    let capture = nftmesh::Capture::new(&cfg).map_err(|e| e.to_string())?;
    let probe =
        nftmesh::verify::Probe::new(&capture, args.probe, args.app_uid).map_err(|e| match e {
            nftmesh::CaptureError::Verify(why) => why.replace("app uid", "--app-uid"),
            e => e.to_string(),
        })?;
    let ns = nftmesh::Namespace::open_or_current(ns_path).map_err(|e| e.to_string())?;
    let verified = ns.verify(&probe).map_err(|e| e.to_string())?;
    eprintln!("nftmesh: {}", verified.summary);
    Ok(())
}
