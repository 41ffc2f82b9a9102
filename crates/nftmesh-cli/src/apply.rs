//! `nftmesh apply`: install the capture in ONE nf_tables transaction (replacing nftmesh's
//! tables in place), or print it (`--dry-run`), or remove it (`--cleanup-only`); `--migrate`
//! takes over from Istio's iptables rules in the same transaction.

use crate::capture_args::CaptureInArgs;
use crate::error::CliError;
use nftmesh::{CaptureError, Migration};

/// `nftmesh apply`: where and how to install.
#[derive(clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    target: CaptureInArgs,
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

/// Run `nftmesh apply`.
pub fn run(args: &ApplyArgs) -> Result<(), CliError> {
    let migration = match (args.migrate, args.migrate_allow_legacy) {
        (false, _) => Migration::None,
        (true, false) => Migration::FromIptables,
        (true, true) => Migration::FromIptablesAllowLegacy,
    };
    let capture = args.target.capture()?.migrating(migration);
    if args.dry_run {
        print!("{}", capture.render());
        return Ok(());
    }
    let ns = args.target.namespace()?;
    if args.cleanup_only {
        let removed = ns.remove(&capture)?;
        eprintln!(
            "nftmesh: removed {} table(s) and the TPROXY routing",
            removed.tables
        );
        return Ok(());
    }
    let report = ns.install(&capture).map_err(|e| match e {
        CaptureError::LegacyTables(_) => CliError::Config(format!(
            "--migrate: {e}: pass --migrate-allow-legacy to leave them in place"
        )),
        e => e.into(),
    })?;
    let mut msg = report.to_string();
    if migration != Migration::None {
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
