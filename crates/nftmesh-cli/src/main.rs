//! The `nftmesh` command: Istio's `istio-iptables` flags over nftmesh's native nf_tables
//! capture, plus subcommands.

mod capture_args;
mod host;

use capture_args::CaptureArgs;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Istio sidecar traffic capture through nf_tables, with no iptables or nft binary.
#[derive(Parser)]
#[command(name = "nftmesh", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the nf_tables ruleset (nft syntax) the capture settings compile to; changes nothing.
    Plan(CaptureArgs),
    /// Install the capture in ONE nf_tables transaction (replacing nftmesh's tables in place).
    Apply(ApplyArgs),
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
        Command::Plan(args) => plan(&args),
        Command::Apply(args) => apply(args),
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
    let work = move || -> Result<String, nftmesh_netlink::NetlinkError> {
        let mut conn = nftmesh_netlink::Connection::open()?;
        if cleanup_only {
            let n = conn.delete_tables(&owned)?;
            return Ok(format!("removed {n} table(s)"));
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
    let result = match &args.network_namespace {
        Some(path) => nftmesh_netlink::netns::run_in(path, work).map_err(|e| e.to_string())?,
        None => work(),
    };
    let msg = result.map_err(|e| e.to_string())?;
    eprintln!("nftmesh: {msg}");
    Ok(())
}
