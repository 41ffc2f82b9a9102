//! `nftmesh linkerd-proxy-init`, and the binary invoked as `proxy-init`: Linkerd's
//! linkerd2-proxy-init command (`proxy-init/cmd/root.go` at
//! 183e791d99dcc6d4fa765b7331cbaec7ce40c2de) over nftmesh's native capture. Every flag of
//! proxy-init's, with its defaults and its Go spelling (`--ipv6=false`, repeated or
//! comma-separated lists); the iptables flavour flags are accepted and logged as having no
//! effect. The capture is Linkerd's (`nftmesh::model::linkerd`), installed in one transaction;
//! the same capture already in place is left as it is, a different one replaced.

use crate::error::CliError;
use crate::go_flags::go_bool_arg;
use nftmesh::log::{Format, Level, Logger};
use nftmesh::model::expr::PortRange;
use nftmesh::model::linkerd::LinkerdConfig;
use nftmesh::{Capture, Namespace};
use std::path::{Path, PathBuf};

/// Who speaks in error lines.
pub const SPEAKER: &str = "proxy-init";

/// proxy-init's flags.
#[derive(clap::Args, Debug)]
pub struct ProxyInitArgs {
    /// Port to redirect incoming traffic
    #[arg(short = 'p', long, default_value_t = -1, allow_negative_numbers = true)]
    incoming_proxy_port: i64,
    /// Port to redirect outgoing traffic
    #[arg(short = 'o', long, default_value_t = -1, allow_negative_numbers = true)]
    outgoing_proxy_port: i64,
    /// User ID that the proxy is running under; its traffic is not redirected
    #[arg(short = 'u', long, default_value_t = -1, allow_negative_numbers = true)]
    proxy_uid: i64,
    /// Group ID that the proxy is running under; its traffic is not redirected
    #[arg(short = 'g', long, default_value_t = -1, allow_negative_numbers = true)]
    proxy_gid: i64,
    /// Ports to redirect to the proxy; none: every port
    #[arg(short = 'r', long, value_delimiter = ',', action = clap::ArgAction::Append)]
    ports_to_redirect: Vec<u16>,
    /// Inbound ports and ranges (inclusive, `A-B`) not redirected
    #[arg(long, value_delimiter = ',', action = clap::ArgAction::Append)]
    inbound_ports_to_ignore: Vec<String>,
    /// Outbound ports and ranges (inclusive, `A-B`) not redirected
    #[arg(long, value_delimiter = ',', action = clap::ArgAction::Append)]
    outbound_ports_to_ignore: Vec<String>,
    /// Source subnets whose inbound traffic is not redirected
    #[arg(long, value_delimiter = ',', action = clap::ArgAction::Append)]
    subnets_to_ignore: Vec<String>,
    /// Print the capture (nft syntax) and change nothing
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool_arg, action = clap::ArgAction::Set)]
    simulate: bool,
    /// The network namespace to change (a path, e.g. /var/run/netns/NAME); default: this
    /// process's
    #[arg(long, value_name = "PATH")]
    netns: Option<PathBuf>,
    /// Accepted for compatibility (iptables' -w); nftmesh takes no xtables lock
    #[arg(short = 'w', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool_arg, action = clap::ArgAction::Set)]
    use_wait_flag: bool,
    /// Sets net.netfilter.nf_conntrack_tcp_timeout_close_wait (seconds) in the namespace
    #[arg(long, default_value_t = 0)]
    timeout_close_wait_secs: u32,
    /// Log format: plain or json
    #[arg(long, default_value = "plain")]
    log_format: String,
    /// Log level: trace, debug, info, warn(ing), error, fatal or panic
    #[arg(long, default_value = "info")]
    log_level: String,
    /// legacy, nft or plain: which iptables proxy-init would run; nftmesh runs none
    #[arg(long)]
    iptables_mode: Option<String>,
    /// Set the rules for IPv6 too
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", value_parser = go_bool_arg, action = clap::ArgAction::Set)]
    ipv6: bool,
    /// Path to an iptables binary (kept for compatibility; nftmesh runs none)
    #[arg(long)]
    firewall_bin_path: Option<String>,
    /// Path to an iptables-save binary (kept for compatibility; nftmesh runs none)
    #[arg(long)]
    firewall_save_bin_path: Option<String>,
}

/// `proxy-init` as its own command (the binary invoked as `proxy-init`).
#[derive(clap::Parser, Debug)]
#[command(
    name = "proxy-init",
    version,
    about = "proxy-init adds a Kubernetes pod to the Linkerd service mesh (nftmesh: native nf_tables, no iptables binary)"
)]
pub struct ProxyInitCli {
    #[command(flatten)]
    args: ProxyInitArgs,
}

impl ProxyInitCli {
    /// The flags.
    pub fn into_args(self) -> ProxyInitArgs {
        self.args
    }
}

/// A port or `A-B` range of an ignore list, as linkerd's `ParsePortRange` reads it.
fn port_range(flag: &str, s: &str) -> Result<PortRange, CliError> {
    let bad = || CliError::Config(format!("{flag}: invalid port or range {s:?}"));
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let first: u16 = a.trim().parse().map_err(|_| bad())?;
    let last: u16 = b.trim().parse().map_err(|_| bad())?;
    if first > last {
        return Err(bad());
    }
    Ok(PortRange { first, last })
}

/// A proxy port as `BuildFirewallConfiguration` checks it.
fn proxy_port(flag: &str, v: i64) -> Result<u16, CliError> {
    u16::try_from(v)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| CliError::Config(format!("{flag} must be a valid TCP port number")))
}

impl ProxyInitArgs {
    /// The capture settings, checked as proxy-init checks them (and stricter where listed in
    /// `tests/data/linkerd/README.md`).
    pub fn config(&self) -> Result<LinkerdConfig, CliError> {
        match self.iptables_mode.as_deref() {
            None | Some("legacy" | "nft" | "plain") => {}
            Some(_) => {
                return Err(CliError::Config(
                    "--iptables-mode valid values are only \"legacy\", \"nft\" and \"plain\""
                        .into(),
                ))
            }
        }
        let ports = |flag: &str, list: &[String]| -> Result<Vec<PortRange>, CliError> {
            list.iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(|s| port_range(flag, s))
                .collect()
        };
        let subnets = self
            .subnets_to_ignore
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|_| CliError::Config(format!("{s} is not a valid CIDR address")))
            })
            .collect::<Result<_, _>>()?;
        let id = |v: i64| u32::try_from(v).ok().filter(|v| *v > 0);
        let cfg = LinkerdConfig {
            incoming_proxy_port: proxy_port("--incoming-proxy-port", self.incoming_proxy_port)?,
            outgoing_proxy_port: proxy_port("--outgoing-proxy-port", self.outgoing_proxy_port)?,
            proxy_uid: id(self.proxy_uid),
            proxy_gid: id(self.proxy_gid),
            ports_to_redirect: self.ports_to_redirect.clone(),
            inbound_ports_to_ignore: ports(
                "--inbound-ports-to-ignore",
                &self.inbound_ports_to_ignore,
            )?,
            outbound_ports_to_ignore: ports(
                "--outbound-ports-to-ignore",
                &self.outbound_ports_to_ignore,
            )?,
            subnets_to_ignore: subnets,
            ipv6: self.ipv6,
        };
        cfg.validate()
            .map_err(|e| CliError::Config(e.to_string()))?;
        Ok(cfg)
    }

    fn logger(&self) -> Result<Logger, CliError> {
        let format = match self.log_format.as_str() {
            "json" => Format::Json,
            // logrus' TextFormatter for anything else, as proxy-init's getFormatter.
            _ => Format::Text,
        };
        let min = match self.log_level.to_ascii_lowercase().as_str() {
            "trace" | "debug" => Level::Debug,
            "info" => Level::Info,
            "warn" | "warning" => Level::Warn,
            "error" | "fatal" | "panic" => Level::Error,
            other => {
                return Err(CliError::Config(format!(
                    "not a valid logrus Level: {other:?}"
                )))
            }
        };
        Ok(Logger::stderr(format, min))
    }
}

/// Where conntrack's close-wait timeout is set: the `net` sysctls a thread opens are those of
/// its own network namespace.
const CLOSE_WAIT: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait";

/// Set conntrack's close-wait timeout in the calling thread's network namespace.
fn set_close_wait(secs: u32) -> std::io::Result<()> {
    std::fs::write(CLOSE_WAIT, secs.to_string())
}

/// Run as proxy-init.
pub fn run(a: &ProxyInitArgs) -> Result<(), CliError> {
    let log = a.logger()?;
    run_logged(a, &log).inspect_err(|e| log.error(&e.to_string()))
}

fn run_logged(a: &ProxyInitArgs, log: &Logger) -> Result<(), CliError> {
    log.info(&format!(
        "proxy-init, by nftmesh {}: capture through native nf_tables, no iptables binary",
        env!("CARGO_PKG_VERSION")
    ));
    for (on, what) in [
        (
            a.iptables_mode.is_some(),
            "--iptables-mode: nftmesh runs no iptables binary; ignored",
        ),
        (
            a.firewall_bin_path.is_some(),
            "--firewall-bin-path: nftmesh runs no iptables binary; ignored",
        ),
        (
            a.firewall_save_bin_path.is_some(),
            "--firewall-save-bin-path: nftmesh runs no iptables-save binary; ignored",
        ),
        (
            a.use_wait_flag,
            "--use-wait-flag: nftmesh takes no xtables lock; ignored",
        ),
    ] {
        if on {
            log.info(what);
        }
    }
    let cfg = a.config()?;
    let capture = Capture::linkerd(&cfg)?;
    if a.simulate {
        log.info("--simulate: no rule changes; the capture would be:");
        print!("{}", capture.render());
        return Ok(());
    }
    let ns_path: Option<&Path> = a.netns.as_deref();
    if a.timeout_close_wait_secs != 0 {
        let secs = a.timeout_close_wait_secs;
        let set = match ns_path {
            Some(p) => nftmesh::netlink::netns::run_in(p, move || set_close_wait(secs))?,
            None => set_close_wait(secs),
        };
        set.map_err(|source| CliError::Io {
            what: CLOSE_WAIT.into(),
            source,
        })?;
        log.info(&format!(
            "net.netfilter.nf_conntrack_tcp_timeout_close_wait = {secs}"
        ));
    }
    let ns = Namespace::open_or_current(ns_path)?;
    let drift = ns.check(&capture)?;
    if drift.is_empty() {
        log.info("the capture is already in place; nothing changed");
    } else {
        for d in &drift {
            log.at(Level::Debug, &format!("difference: {d}"));
        }
        let report = ns.install(&capture)?;
        log.info(&report.to_string());
    }
    ns.close_after_exit();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<ProxyInitArgs, clap::Error> {
        ProxyInitCli::try_parse_from(std::iter::once("proxy-init").chain(args.iter().copied()))
            .map(ProxyInitCli::into_args)
    }

    #[test]
    fn the_injectors_argv_gives_linkerds_capture() {
        let a = parse(&[
            "--incoming-proxy-port",
            "4143",
            "--outgoing-proxy-port",
            "4140",
            "--proxy-uid",
            "2102",
            "--inbound-ports-to-ignore",
            "4190,4191,4567,4568",
            "--outbound-ports-to-ignore",
            "4567,4568",
        ])
        .unwrap();
        let cfg = a.config().unwrap();
        assert_eq!(
            (cfg.incoming_proxy_port, cfg.outgoing_proxy_port),
            (4143, 4140)
        );
        assert_eq!(cfg.proxy_uid, Some(2102));
        assert_eq!(cfg.inbound_ports_to_ignore.len(), 4);
        assert!(cfg.ipv6, "proxy-init's default");
    }

    #[test]
    fn go_spellings_ranges_repeats_and_short_flags() {
        let a = parse(&[
            "-p",
            "4143",
            "-o",
            "4140",
            "-u",
            "2102",
            "-g",
            "2103",
            "-r",
            "80",
            "-r",
            "8080,9090",
            "--inbound-ports-to-ignore",
            "4567-4568",
            "--inbound-ports-to-ignore",
            "22",
            "--ipv6=false",
            "-w",
            "--iptables-mode",
            "nft",
            "--simulate=true",
        ])
        .unwrap();
        let cfg = a.config().unwrap();
        assert_eq!(cfg.ports_to_redirect, vec![80, 8080, 9090]);
        assert_eq!(
            cfg.inbound_ports_to_ignore,
            vec![
                PortRange {
                    first: 4567,
                    last: 4568
                },
                PortRange::single(22)
            ]
        );
        assert_eq!(cfg.proxy_gid, Some(2103));
        assert!(!cfg.ipv6 && a.simulate && a.use_wait_flag);
    }

    #[test]
    fn what_proxy_init_refuses_is_refused_naming_the_flag() {
        for (args, word) in [
            (
                &["-o", "4140"][..],
                "--incoming-proxy-port must be a valid TCP port number",
            ),
            (
                &["-p", "4143"],
                "--outgoing-proxy-port must be a valid TCP port number",
            ),
            (
                &["-p", "4143", "-o", "4140", "--iptables-mode", "iptables"],
                "--iptables-mode valid values",
            ),
            (
                &[
                    "-p",
                    "4143",
                    "-o",
                    "4140",
                    "--subnets-to-ignore",
                    "10.0.0.0/33",
                ],
                "is not a valid CIDR address",
            ),
            (
                &[
                    "-p",
                    "4143",
                    "-o",
                    "4140",
                    "--outbound-ports-to-ignore",
                    "http",
                ],
                "--outbound-ports-to-ignore: invalid port",
            ),
            (
                &[
                    "-p",
                    "4143",
                    "-o",
                    "4140",
                    "--ipv6=false",
                    "--subnets-to-ignore",
                    "fd00::/8",
                ],
                "IPv6",
            ),
        ] {
            let e = parse(args).unwrap().config().unwrap_err().to_string();
            assert!(e.contains(word), "{args:?}: {e}");
        }
        // Uids below 1 are no bypass, as proxy-init's `ProxyUID > 0`.
        let a = parse(&["-p", "1", "-o", "2", "-u", "0"]).unwrap();
        assert_eq!(a.config().unwrap().proxy_uid, None);
    }
}
