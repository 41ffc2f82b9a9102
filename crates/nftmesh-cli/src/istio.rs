//! `istio-iptables`: the drop-in for Istio's istio-init and istio-validation containers. The
//! injector's argv (`istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*'
//! -d 15090,15021,15020 --log_output_level=default:info`, and `--run-validation
//! --skip-rule-apply` for istio-validation) runs as `nftmesh istio-iptables ARGS` or as a binary
//! named `istio-iptables`. Every flag of Istio's `tools/istio-iptables/pkg/cmd/root.go` is
//! accepted with its environment variable; exit codes are Istio's (0, 1, 126 when validation
//! fails).

use crate::capture_args::{CaptureArgs, Ipv6Mode};
use crate::error::CliError;
use crate::go_flags::{go_bool, go_bool_arg, go_duration};
use crate::host;
use crate::log::{Level, Logger};
use nftmesh::verify::IstioValidation;
use nftmesh::{Capture, Namespace};
use std::path::PathBuf;
use std::time::Duration;

/// Who speaks in the error line: the tool this drop-in stands in for.
pub const SPEAKER: &str = "istio-iptables";

/// `istio-iptables` run on its own (`argv[0]` is `istio-iptables`).
#[derive(clap::Parser)]
#[command(
    name = "istio-iptables",
    version,
    args_override_self = true,
    about = "Set up Istio's sidecar traffic capture (nftmesh: natively through nf_tables, one transaction)"
)]
pub struct IstioIptablesCli {
    #[command(flatten)]
    args: IstioIptablesArgs,
}

impl IstioIptablesCli {
    /// The arguments.
    pub fn into_args(self) -> IstioIptablesArgs {
        self.args
    }
}

/// istio-iptables' flags beyond the capture settings, with their environment variables.
#[derive(clap::Args)]
pub struct IstioIptablesArgs {
    #[command(flatten)]
    capture: CaptureArgs,
    /// Print the rules and change nothing [istio-iptables -n/--dry-run]
    #[arg(short = 'n', long, env = "DRY_RUN", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool_arg, action = clap::ArgAction::Set)]
    dry_run: bool,
    /// Port the validation probe connects to [istio-iptables --iptables-probe-port]
    #[arg(long, env = "IPTABLES_PROBE_PORT", default_value = "15002")]
    iptables_probe_port: u16,
    /// How long validation keeps trying, a Go duration (5s, 500ms, 1m) [istio-iptables --probe-timeout]
    #[arg(long, env = "PROBE_TIMEOUT", default_value = "5s", value_parser = go_duration)]
    probe_timeout: Duration,
    /// Install nothing (istio-validation, when istio-cni installs the capture) [istio-iptables --skip-rule-apply]
    #[arg(long, env = "SKIP_RULE_APPLY", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool_arg, action = clap::ArgAction::Set)]
    skip_rule_apply: bool,
    /// Check with a real connection that capture is in place [istio-iptables --run-validation]
    #[arg(long, env = "RUN_VALIDATION", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool_arg, action = clap::ArgAction::Set)]
    run_validation: bool,
    /// Network namespace to work in (`/proc/PID/ns/net`, `/var/run/netns/NAME`) [istio-iptables --network-namespace]
    #[arg(long, value_name = "PATH", env = "NETWORK_NAMESPACE")]
    network_namespace: Option<PathBuf>,
    /// Run as a CNI plugin; accepted, nothing changes (no xtables lock to scope) [istio-iptables --cni-mode]
    #[arg(long, env = "CNI_MODE", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool_arg, action = clap::ArgAction::Set)]
    cni_mode: bool,
    /// Reconcile a different capture already in place; nftmesh always replaces in place in one
    /// transaction, so this only silences the advice [istio-iptables --reconcile]
    #[arg(long, env = "RECONCILE", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool_arg, action = clap::ArgAction::Set)]
    reconcile: bool,
    /// Only remove the capture (nftmesh's tables and the TPROXY routing) [istio-iptables --cleanup-only]
    #[arg(long, env = "CLEANUP_ONLY", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool_arg, action = clap::ArgAction::Set)]
    cleanup_only: bool,
    /// Apply even if the same capture is already in place [istio-iptables --force-apply]
    #[arg(long, env = "FORCE_APPLY", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool_arg, action = clap::ArgAction::Set)]
    force_apply: bool,
    /// Accepted and logged: nftmesh always programs nf_tables natively [istio-iptables --native-nftables]
    #[arg(long, env = "NATIVE_NFTABLES", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool_arg, action = clap::ArgAction::Set)]
    native_nftables: bool,
    /// Accepted and logged: nftmesh runs no iptables binary [istio-iptables --force-iptables-binary]
    #[arg(long, env = "FORCE_IPTABLES_BINARY", default_value = "")]
    force_iptables_binary: String,
    /// Accepted and logged: nftmesh adds no LOG tracing rules [istio-iptables --iptables-trace-logging]
    #[arg(long, env = "IPTABLES_TRACE_LOGGING", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool_arg, action = clap::ArgAction::Set)]
    iptables_trace_logging: bool,
    /// Minimum level, `LEVEL` or `SCOPE:LEVEL,...` (debug, info, warn, error, fatal, none) [--log_output_level]
    #[arg(long = "log_output_level", default_value = "default:info")]
    log_output_level: String,
    /// One JSON object per log line [--log_as_json]
    #[arg(long = "log_as_json", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool_arg, action = clap::ArgAction::Set)]
    log_as_json: bool,
    /// Where logs go: stdout, stderr or a file path; the last one counts [--log_target]
    #[arg(long = "log_target", default_value = "stdout")]
    log_target: Vec<String>,
    /// Accepted; nftmesh logs no caller [--log_caller]
    #[arg(long = "log_caller", default_value = "")]
    log_caller: String,
    /// Accepted; nftmesh logs no stack traces [--log_stacktrace_level]
    #[arg(long = "log_stacktrace_level", default_value = "default:none")]
    log_stacktrace_level: String,
    /// Accepted and logged: nftmesh does not rotate logs [--log_rotate]
    #[arg(long = "log_rotate", default_value = "")]
    log_rotate: String,
    /// Accepted (log rotation) [--log_rotate_max_age]
    #[arg(long = "log_rotate_max_age")]
    log_rotate_max_age: Option<String>,
    /// Accepted (log rotation) [--log_rotate_max_backups]
    #[arg(long = "log_rotate_max_backups")]
    log_rotate_max_backups: Option<String>,
    /// Accepted (log rotation) [--log_rotate_max_size]
    #[arg(long = "log_rotate_max_size")]
    log_rotate_max_size: Option<String>,
}

/// Whether any of `vars` is set to a true value (Istio's additional environment variables).
fn env_true(vars: &[&str]) -> bool {
    vars.iter()
        .any(|v| std::env::var(v).ok().as_deref().and_then(go_bool) == Some(true))
}

/// Run as istio-iptables; an error is also logged.
pub fn run(mut a: IstioIptablesArgs) -> Result<(), CliError> {
    let target = a.log_target.last().cloned().unwrap_or_default();
    let log = Logger::new(&a.log_output_level, a.log_as_json, &target).map_err(CliError::Config)?;
    // Istio's additional environment variables for three flags.
    a.capture.redirect_dns |= env_true(&["REDIRECT_DNS"]);
    a.capture.drop_invalid |= env_true(&["DROP_INVALID"]);
    a.capture.dual_stack |= env_true(&["DUAL_STACK", "ISTIO_DUAL_STACK"]);
    a.capture.capture_all_dns |= env_true(&["CAPTURE_ALL_DNS"]);
    // IPv6 as Istio decides it (`getLocalIP`), unless --ipv6 says: on when the pod's first
    // address is IPv6, or with --dual-stack when it has any global IPv6 address.
    if a.capture.ipv6 == Ipv6Mode::Auto {
        let dual = a.capture.dual_stack;
        let probe = move || host::first_address_is_ipv6() || (dual && host::has_global_ipv6());
        let on = match a.network_namespace.as_deref() {
            Some(p) => nftmesh::netlink::netns::run_in(p, probe).unwrap_or(false),
            None => probe(),
        };
        a.capture.ipv6 = if on { Ipv6Mode::On } else { Ipv6Mode::Off };
        a.capture.dual_stack = false;
    }
    run_logged(&a, &log).inspect_err(|e| log.error(&e.to_string()))
}

fn run_logged(a: &IstioIptablesArgs, log: &Logger) -> Result<(), CliError> {
    log.info(&format!(
        "istio-iptables, by nftmesh {}: capture through native nf_tables, no iptables binary",
        env!("CARGO_PKG_VERSION")
    ));
    for (on, what) in [
        (a.native_nftables, "--native-nftables: nftmesh always programs nf_tables natively; nothing else to do"),
        (!a.force_iptables_binary.is_empty(), "--force-iptables-binary: nftmesh runs no iptables binary; ignored"),
        (a.iptables_trace_logging, "--iptables-trace-logging: nftmesh adds no LOG rules (use `nft monitor trace`); ignored"),
        (a.cni_mode, "--cni-mode: nftmesh takes no xtables lock; nothing changes"),
        (!a.log_rotate.is_empty(), "--log_rotate: nftmesh does not rotate logs; they go to --log_target"),
        (!a.log_caller.is_empty(), "--log_caller: nftmesh logs no caller information"),
    ] {
        if on {
            log.info(what);
        }
    }
    let ns_path = a.network_namespace.as_deref();
    let cfg = a.capture.to_config_in(ns_path)?;
    let capture = Capture::new(&cfg)?;
    if a.dry_run {
        log.info("running in dry-run mode, no rule changes will be made");
        print!("{}", capture.render());
    } else if a.skip_rule_apply {
        log.info("--skip-rule-apply: no rule changes");
    } else {
        let ns = Namespace::open_or_current(ns_path)?;
        if a.cleanup_only {
            let removed = ns.remove(&capture)?;
            log.info(&format!(
                "cleanup only: removed {} table(s) and the TPROXY routing",
                removed.tables
            ));
        } else {
            install(&ns, &capture, a, log)?;
        }
        ns.close_after_exit();
    }
    if a.run_validation {
        let v = IstioValidation {
            proxy_port: cfg.proxy_port,
            inbound_capture_port: cfg.inbound_capture_port,
            probe_port: a.iptables_probe_port,
            timeout: a.probe_timeout,
            ipv6: host::first_address_is_ipv6(),
        };
        log.info("Starting iptables validation. This check verifies that iptables rules are properly established for the network.");
        let run = |v: IstioValidation| nftmesh::verify::istio_validation(&v);
        let result = match ns_path {
            Some(p) => nftmesh::netlink::netns::run_in(p, move || run(v))?,
            None => run(v),
        };
        let ok = result.map_err(|e| CliError::Validation(Box::new(e)))?;
        log.info(&ok.summary);
    }
    Ok(())
}

/// Install unless the same capture is already in place (Istio's idempotence), logging what
/// differed when a different one is.
fn install(
    ns: &Namespace,
    capture: &Capture,
    a: &IstioIptablesArgs,
    log: &Logger,
) -> Result<(), CliError> {
    let drift = ns.check(capture)?;
    let nothing_live = drift.iter().all(|d| {
        matches!(
            d,
            nftmesh::Drift::Rules(nftmesh::model::diff::Difference::MissingTable { .. })
        )
    });
    if drift.is_empty() && !a.force_apply {
        log.info("the capture is already in place; nothing changed (--force-apply applies anyway)");
        return Ok(());
    }
    if !drift.is_empty() && !nothing_live {
        log.info(&format!(
            "a different capture is in place ({} difference(s)); nftmesh replaces it in place in \
             one transaction, no reconcile guardrails needed{}",
            drift.len(),
            if a.reconcile {
                ""
            } else {
                " (as --reconcile would)"
            }
        ));
        for d in &drift {
            log.log(Level::Debug, &format!("difference: {d}"));
        }
    }
    log.info("Applying the capture (nf_tables, one transaction)");
    let report = ns.install(capture)?;
    log.info(&report.to_string());
    if drift.is_empty() {
        log.warn("--force-apply: applied although the same capture was already in place");
    }
    Ok(())
}
