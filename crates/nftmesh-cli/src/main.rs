//! The `nftmesh` command: Istio's `istio-iptables` flags over nftmesh's native nf_tables
//! capture, plus subcommands.
#![forbid(unsafe_code)]

mod capture_args;
mod host;
mod restore;

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
    /// Check capture with real connections, like Istio's validation: a connection from a
    /// non-proxy uid to the probe must land on the outbound capture port, one from the proxy
    /// uid must not. Exit 1 naming the failed expectation.
    Verify(VerifyArgs),
    /// Compare the live tables with what the capture settings compile to; exit 1 on drift
    /// (printing each difference), 0 when equal, 2 on error.
    Diff(DiffArgs),
    /// Translate iptables-save text to nf_tables and print it as nft text; changes nothing.
    Translate(restore::InputArgs),
    /// Apply iptables-save text natively (a native iptables-restore for nat, mangle, raw and
    /// filter): every table it writes is replaced in ONE nf_tables transaction.
    Restore(restore::RestoreArgs),
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
    let cli = Cli::parse();
    let result = match cli.command {
        None => apply(cli.apply),
        Some(Command::Plan(args)) => plan(&args),
        Some(Command::Apply(args)) => apply(args),
        Some(Command::Dump(args)) => dump(args),
        Some(Command::Diff(args)) => return diff(args),
        Some(Command::Verify(args)) => verify(args),
        Some(Command::Translate(args)) => restore::translate(&args),
        Some(Command::Restore(args)) => restore::restore(args),
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
    let cfg = args
        .capture
        .to_config_in(args.network_namespace.as_deref())?;
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
    let migrate = args.migrate;
    if migrate {
        let legacy = in_netns(args.network_namespace.as_deref(), || {
            Ok(nftmesh_netlink::migrate::legacy_tables())
        })?;
        if !legacy.is_empty() && !args.migrate_allow_legacy {
            return Err(format!(
                "--migrate: iptables-legacy tables exist in this namespace ({}); their rules \
                 cannot change in the nf_tables transaction, so both captures would be active. \
                 Remove them first (iptables-legacy-save shows them), or pass \
                 --migrate-allow-legacy to leave them in place",
                legacy.join(", ")
            ));
        }
    }
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
        } else if routing.ipv6 {
            // As Istio does in both modes: ::6 on lo, the proxy's IPv6 passthrough source.
            nftmesh_netlink::routes::Routing::open()?.ensure_loopback_v6()?;
        }
        let (r, migrated) = if migrate {
            let (r, found) = conn.apply_migrating(&ruleset)?;
            (r, Some(found))
        } else {
            (conn.apply(&ruleset)?, None)
        };
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
        // The transaction is acknowledged; the socket's release waits for the kernel's
        // deferred cleanup, which need not delay this command's exit.
        conn.close_after_exit();
        if let Some(found) = migrated {
            let jumps = found
                .removals
                .iter()
                .filter(|x| matches!(x, nftmesh_netlink::migrate::Removal::Rule { .. }))
                .count();
            msg.push_str(&format!(
                "\nmigrated from iptables in the same transaction: removed {jumps} jump rule(s) \
                 to ISTIO_* chains; {} other rule(s) left in the iptables-nft nat/mangle/raw \
                 tables",
                found.leftover_rules
            ));
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
    nftmesh_netlink::netns::run_in_or_here(ns, work)
        .and_then(|r| r)
        .map_err(|e| e.to_string())
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
        let cfg = args
            .capture
            .to_config_in(args.netns.network_namespace.as_deref())?;
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

fn verify(args: VerifyArgs) -> Result<(), String> {
    let cfg = args
        .capture
        .to_config_in(args.netns.network_namespace.as_deref())?;
    let probe = args.probe;
    let app = args.app_uid;
    if cfg.proxy_uids.contains(&app) {
        return Err(format!("--app-uid {app} is a proxy uid; pick another"));
    }
    let proxy_uid = cfg.proxy_uids.first().copied().unwrap_or(1337);
    let port = cfg.proxy_port;
    let wait = std::time::Duration::from_secs(2);
    let work = move || -> Result<Result<String, String>, nftmesh_netlink::NetlinkError> {
        use nftmesh_netlink::probe::{accept_within, connect_as, original_dst};
        let l = match std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)) {
            Ok(l) => l,
            Err(e) => {
                return Ok(Err(format!(
                    "cannot listen on :{port} (is the proxy already running?): {e}"
                )))
            }
        };
        // Client and server run at the same time, so a lost connection costs one wait.
        let client = std::thread::spawn(move || connect_as(app, app, probe, wait));
        let got = accept_within(&l, wait).map(|s| original_dst(&s));
        let _ = client.join();
        match got {
            Some(Some(orig)) if orig == probe => {}
            Some(orig) => {
                return Ok(Err(format!(
                    "uid {app}'s connection to {probe} landed on :{port} with original destination {orig:?}, not {probe}"
                )))
            }
            None => return Ok(Err(format!("uid {app}'s connection to {probe} was not captured to :{port}"))),
        }
        let short = std::time::Duration::from_millis(500);
        let client = std::thread::spawn(move || connect_as(proxy_uid, proxy_uid, probe, short));
        let got = accept_within(&l, short);
        let _ = client.join();
        if got.is_some() {
            return Ok(Err(format!(
                "the proxy uid {proxy_uid}'s connection to {probe} was captured to :{port}"
            )));
        }
        Ok(Ok(format!(
            "verified: uid {app} to {probe} is captured to :{port}; the proxy uid {proxy_uid} is not"
        )))
    };
    match in_netns(args.netns.network_namespace.as_deref(), work)? {
        Ok(msg) => {
            eprintln!("nftmesh: {msg}");
            Ok(())
        }
        Err(why) => Err(format!("verification failed: {why}")),
    }
}
