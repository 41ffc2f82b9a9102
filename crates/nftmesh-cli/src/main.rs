//! The `nftmesh` command: Istio's `istio-iptables` flags over nftmesh's native nf_tables
//! capture, plus subcommands.

mod capture_args;
mod host;

use capture_args::CaptureArgs;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Istio sidecar traffic capture through nf_tables, with no iptables or nft binary.
#[derive(Parser)]
#[command(
    name = "nftmesh",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand, `nftmesh [FLAGS]` applies, as `istio-iptables [FLAGS]` does.
    #[command(flatten)]
    apply: ApplyArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print the nf_tables ruleset (nft syntax) the capture settings compile to; changes nothing.
    Plan(CaptureArgs),
    /// Install the capture in ONE nf_tables transaction (replacing nftmesh's tables in place).
    Apply(ApplyArgs),
    /// Print nftmesh's live tables as nft text, read back over netlink and decoded by nftmesh.
    Dump(NetnsArg),
    /// Compare the live tables with what the capture settings compile to; exit 1 on drift
    /// (printing each difference), 0 when equal, 2 on error.
    Diff(DiffArgs),
}

/// Where to work.
#[derive(clap::Args)]
struct NetnsArg {
    /// Network namespace to work in (`/proc/PID/ns/net`, `/var/run/netns/NAME`); default: ours.
    #[arg(long, value_name = "PATH", env = "NETWORK_NAMESPACE")]
    network_namespace: Option<std::path::PathBuf>,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => apply(cli.apply),
        Some(Command::Plan(args)) => plan(&args),
        Some(Command::Apply(args)) => apply(args),
        Some(Command::Dump(args)) => dump(args),
        Some(Command::Diff(args)) => return diff(args),
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

/// The tables nftmesh owns for this configuration, in either capture mode.
fn owned_tables(
    cfg: &nftmesh_model::config::CaptureConfig,
) -> Vec<(nftmesh_model::ruleset::Family, String)> {
    use nftmesh_model::config::InterceptionMode;
    let mut out = Vec::new();
    for mode in [InterceptionMode::Redirect, InterceptionMode::Tproxy] {
        let mut c = cfg.clone();
        c.mode = mode;
        for t in nftmesh_model::compile(&c).tables {
            if !out.contains(&(t.family, t.name.clone())) {
                out.push((t.family, t.name));
            }
        }
    }
    out
}

fn apply(args: ApplyArgs) -> Result<(), String> {
    let cfg = args.capture.to_config().map_err(|e| e.to_string())?;
    let ruleset = nftmesh_model::compile(&cfg);
    if args.dry_run {
        print!("{}", nftmesh_model::render(&ruleset));
        return Ok(());
    }
    let cleanup_only = args.cleanup_only;
    let owned = owned_tables(&cfg);
    let routing = nftmesh_netlink::routes::TproxyRouting {
        mark: cfg.tproxy_mark,
        table: cfg.tproxy_route_table,
        ipv6: cfg.ipv6,
    };
    let tproxy = cfg.mode == nftmesh_model::config::InterceptionMode::Tproxy;
    let work = move || -> Result<String, nftmesh_netlink::NetlinkError> {
        let mut conn = nftmesh_netlink::Connection::open()?;
        if cleanup_only {
            let n = conn.delete_tables(&owned)?;
            nftmesh_netlink::routes::Routing::open()?.remove(&routing)?;
            return Ok(format!("removed {n} table(s) and the TPROXY routing"));
        }
        if tproxy {
            // Routing first: once the tproxy rules are live, marked packets need the table.
            nftmesh_netlink::routes::Routing::open()?.ensure(&routing)?;
        }
        let r = conn.apply(&ruleset)?;
        let mut msg = format!(
            "applied {} rule(s) in {} table(s): one transaction of {} messages, {} bytes",
            ruleset.rule_count(),
            ruleset.tables.len(),
            r.messages,
            r.bytes
        );
        for c in &r.deleted_chains {
            msg.push_str(&format!("\ndeleted chain {c}"));
        }
        Ok(msg)
    };
    let msg = in_netns(args.network_namespace.as_deref(), work)?;
    eprintln!("nftmesh: {msg}");
    Ok(())
}

/// Run `work` in the given namespace (on a dedicated thread) or in ours.
fn in_netns<T: Send + 'static>(
    ns: Option<&std::path::Path>,
    work: impl FnOnce() -> Result<T, nftmesh_netlink::NetlinkError> + Send + 'static,
) -> Result<T, String> {
    match ns {
        Some(path) => nftmesh_netlink::netns::Netns::new(path)
            .run(work)
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string()),
        None => work().map_err(|e| e.to_string()),
    }
}

fn dump(args: NetnsArg) -> Result<(), String> {
    let owned = owned_tables(&nftmesh_model::config::CaptureConfig::sidecar());
    let live = in_netns(args.network_namespace.as_deref(), move || {
        nftmesh_netlink::Connection::open()?.dump_ruleset(&owned)
    })?;
    print!("{}", nftmesh_model::render(&live));
    Ok(())
}

fn diff(args: DiffArgs) -> ExitCode {
    let run = || -> Result<Vec<nftmesh_netlink::diff::Difference>, String> {
        let cfg = args.capture.to_config()?;
        let desired = nftmesh_model::compile(&cfg);
        let owned = owned_tables(&cfg);
        let live = in_netns(args.netns.network_namespace.as_deref(), move || {
            nftmesh_netlink::Connection::open()?.dump_ruleset(&owned)
        })?;
        Ok(nftmesh_netlink::diff::diff(&desired, &live))
    };
    match run() {
        Ok(d) if d.is_empty() => ExitCode::SUCCESS,
        Ok(d) => {
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
