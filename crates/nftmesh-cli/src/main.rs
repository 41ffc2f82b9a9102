//! The `nftmesh` command: Istio's `istio-iptables` flags over nftmesh's native nf_tables
//! capture, plus subcommands.
#![forbid(unsafe_code)]

mod agent;
mod ambient;
mod apply;
mod capture_args;
mod cni_install;
mod diff;
mod docs;
mod dump;
mod error;
mod explain;
mod go_flags;
mod host;
mod istio;
mod linkerd_proxy_init;
mod linkerd_validator;
mod log;
mod netns_arg;
mod packet_args;
mod plan;
mod restore;
mod stats;
mod stdout;
mod trace;
mod verify;

use capture_args::CaptureArgs;
use clap::{Parser, Subcommand};
use error::CliError;
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
    Apply(apply::ApplyArgs),
    /// Print nftmesh's live tables as nft text, read back over netlink and decoded by nftmesh.
    Dump(dump::DumpArgs),
    /// Check capture with real connections, like Istio's validation: a connection from a
    /// non-proxy uid to the probe must land on the outbound capture port, one from the proxy
    /// uid must not. Exit 1 naming the failed expectation.
    Verify(verify::VerifyArgs),
    /// Compare the live tables with what the capture settings compile to; exit 1 on drift
    /// (printing each difference), 0 when equal, 2 on error.
    Diff(capture_args::CaptureInArgs),
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
    /// Behave as Linkerd's `proxy-init` (the linkerd-init container): its flags and defaults,
    /// over native nf_tables. A binary named `proxy-init` does the same.
    #[command(name = "linkerd-proxy-init")]
    LinkerdProxyInit(Box<linkerd_proxy_init::ProxyInitArgs>),
    /// Behave as Linkerd's `linkerd2-network-validator`: listen on the proxy's outbound port,
    /// connect to an unroutable address, succeed when the connection lands on the listener
    /// (exit 95 otherwise). A binary named `linkerd2-network-validator` does the same.
    #[command(name = "linkerd-network-validator")]
    LinkerdNetworkValidator(linkerd_validator::ValidatorArgs),
    /// Print the shell completion script for SHELL (generated from this command's flags).
    Completions(docs::CompletionsArgs),
    /// Print the man page nftmesh.1, or write it and one page per subcommand with --out-dir.
    Man(docs::ManArgs),
}

impl Command {
    /// Who speaks in the subcommand's error line (`SPEAKER: MESSAGE`).
    fn speaker(&self) -> &'static str {
        match self {
            Command::Agent(_) => "nftmesh: agent",
            Command::Trace(_) => "nftmesh: trace",
            Command::Cni(_) => "nftmesh cni: error",
            Command::IstioIptables(_) => istio::SPEAKER,
            Command::LinkerdProxyInit(_) => linkerd_proxy_init::SPEAKER,
            Command::LinkerdNetworkValidator(_) => linkerd_validator::SPEAKER,
            _ => "nftmesh",
        }
    }
}

fn main() -> ExitCode {
    let invoked_as = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    match invoked_as.as_deref() {
        Some("istio-iptables") => {
            let args = istio::IstioIptablesCli::parse().into_args();
            return finish(istio::SPEAKER, istio::run(args));
        }
        Some("proxy-init") => {
            let args = linkerd_proxy_init::ProxyInitCli::parse().into_args();
            return finish(linkerd_proxy_init::SPEAKER, linkerd_proxy_init::run(&args));
        }
        Some("linkerd2-network-validator") => {
            let args = linkerd_validator::ValidatorCli::parse().into_args();
            return finish(linkerd_validator::SPEAKER, linkerd_validator::run(&args));
        }
        _ => {}
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
    let speaker = cli.command.speaker();
    let result = match cli.command {
        Command::Plan(args) => plan::run(&args),
        Command::Apply(args) => apply::run(&args),
        Command::Dump(args) => dump::run(&args),
        Command::Diff(args) => diff::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Stats(args) => stats::run(&args),
        Command::Trace(args) => trace::run(&args),
        Command::Translate(args) => restore::translate(&args),
        Command::Restore(args) => restore::restore(&args),
        Command::IstioIptables(args) => istio::run(*args),
        Command::LinkerdProxyInit(args) => linkerd_proxy_init::run(&args),
        Command::LinkerdNetworkValidator(args) => linkerd_validator::run(&args),
        Command::Ambient(cmd) => ambient::run(cmd),
        Command::Agent(cmd) => agent::run(cmd),
        Command::Cni(cmd) => cni_install::run(cmd),
        Command::Completions(args) => docs::completions::<Cli>(&args),
        Command::Man(args) => docs::man::<Cli>(&args),
    };
    finish(speaker, result)
}

/// The exit code of a subcommand's outcome, its error printed as `speaker` says it.
fn finish(speaker: &str, result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.report(speaker);
            e.exit_code()
        }
    }
}
