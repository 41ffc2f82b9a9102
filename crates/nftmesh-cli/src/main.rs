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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plan(args) => plan(&args),
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
