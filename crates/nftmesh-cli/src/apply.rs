//! `nftmesh apply`: install the capture in ONE nf_tables transaction (replacing nftmesh's
//! tables in place), or print it (`--dry-run`), or remove it (`--cleanup-only`); `--migrate`
//! takes over from Istio's iptables rules in the same transaction. `--backend ebpf` captures
//! outbound with BPF programs on the pod's cgroup instead (inbound stays with nf_tables).

use crate::capture_args::CaptureInArgs;
use crate::error::CliError;
use nftmesh::ebpf::EbpfBackend;
use nftmesh::{CaptureError, Migration};

/// How the outbound capture is done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// nf_tables REDIRECT (or TPROXY) in the network namespace, both ways.
    #[default]
    Nftables,
    /// BPF programs on the pod's cgroup (--cgroup) at connect(), pinned in bpffs; inbound by
    /// nf_tables in the network namespace.
    Ebpf,
}

/// `nftmesh apply`: where and how to install.
#[derive(clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    target: CaptureInArgs,
    /// How outbound traffic is captured: nf_tables in the namespace, or eBPF programs on the
    /// pod's cgroup (needs --cgroup).
    #[arg(long, value_enum, default_value = "nftables")]
    backend: Backend,
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
    match (args.backend, args.target.ebpf.backend()?) {
        (Backend::Nftables, None) => {}
        (Backend::Nftables, Some(_)) => {
            return Err(CliError::Usage(
                "--cgroup is for --backend ebpf; the nftables backend works in the network \
                 namespace only"
                    .into(),
            ))
        }
        (Backend::Ebpf, None) => {
            return Err(CliError::Usage(
                "--backend ebpf needs --cgroup DIR, the pod's cgroup v2 directory".into(),
            ))
        }
        (Backend::Ebpf, Some(ebpf)) => return run_ebpf(args, &ebpf),
    }
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

/// `apply --backend ebpf`: outbound by the programs on the cgroup, inbound by nf_tables.
fn run_ebpf(args: &ApplyArgs, ebpf: &EbpfBackend) -> Result<(), CliError> {
    if args.migrate {
        return Err(CliError::Usage(
            "--migrate works with --backend nftables only".into(),
        ));
    }
    let cfg = args.target.config()?;
    if args.dry_run {
        println!(
            "# outbound: eBPF programs on {}; inbound:",
            ebpf.cgroup().display()
        );
        if ebpf.inbound_mode() == nftmesh::ebpf::EbpfInbound::SkLookup {
            println!("# sk_lookup steering to the proxy's listener (no nf_tables table)");
        } else {
            print!("{}", EbpfBackend::inbound(&cfg)?.render());
        }
        return Ok(());
    }
    let ns = args.target.namespace()?;
    if args.cleanup_only {
        let removed = ebpf.remove(&ns, &cfg)?;
        let programs = if removed.programs {
            "the eBPF programs of"
        } else {
            "no eBPF program was attached to"
        };
        eprintln!(
            "nftmesh: removed {programs} {}{} and {} table(s)",
            ebpf.cgroup().display(),
            if removed.sk_msg {
                " (with sk_msg acceleration)"
            } else {
                ""
            },
            removed.inbound.tables
        );
        return Ok(());
    }
    let installed = ebpf.install(&ns, &cfg)?;
    ns.close_after_exit();
    eprintln!("nftmesh: {installed}");
    Ok(())
}
