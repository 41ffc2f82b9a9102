//! `nftmesh ambient`: Istio ambient's in-pod capture for ztunnel (`plan`, `apply`, `diff`,
//! `cleanup`) and the node's kubelet probe SNAT (`host plan|apply|cleanup`, `host probe
//! add|remove ADDR...`), through the capture API. `host cleanup` and `host probe remove` need
//! no node setting: they act on the live table.

use crate::capture_args::Ipv6Mode;
use crate::error::CliError;
use clap::{Args, Subcommand, ValueEnum};
use nftmesh::ambient::{AmbientConfig, AmbientHostConfig, HostCapture};
use nftmesh::{Capture, Namespace};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// `on` or `off`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

/// The ambient subcommands.
#[derive(Subcommand)]
pub enum AmbientCommand {
    /// Print the in-pod tables (nft syntax); changes nothing.
    Plan(AmbientArgs),
    /// Install the in-pod capture: ztunnel's policy routing, then ONE nf_tables transaction.
    Apply(AmbientArgs),
    /// Compare the pod's tables and routing with the capture; exit 1 on drift, 2 on error.
    Diff(AmbientArgs),
    /// Remove the in-pod capture (nftmesh's tables and ztunnel's routing).
    Cleanup(AmbientArgs),
    /// Explain one packet's way through the in-pod capture (or the live tables with --live),
    /// as `nftmesh explain` does for sidecar capture.
    Explain(Box<AmbientExplainArgs>),
    /// The node's SNAT of kubelet health probes.
    #[command(subcommand)]
    Host(HostCommand),
}

/// The pod's ambient settings, named as Istio's annotations and settings.
#[derive(Args)]
pub struct AmbientArgs {
    /// Redirect the pod's DNS to ztunnel [Istio: REDIRECT_DNS, annotation ambient.istio.io/dns-capture]
    #[arg(long, value_enum, default_value = "off")]
    dns_capture: OnOff,
    /// Leave inbound traffic alone [annotation ambient.istio.io/bypass-inbound-capture]
    #[arg(long)]
    bypass_inbound_capture: bool,
    /// Interfaces whose inbound TCP goes to ztunnel's outbound port, comma separated
    /// [annotation istio.io/reroute-virtual-interfaces]
    #[arg(long, value_delimiter = ',')]
    reroute_virtual_interfaces: Vec<String>,
    /// IPv6 capture: auto (when the pod has a global IPv6 address), on, off
    #[arg(long, value_enum, default_value = "auto")]
    ipv6: Ipv6Mode,
    #[command(flatten)]
    probe_snat: ProbeSnatArgs,
    /// Network namespace to work in (`/proc/PID/ns/net`, `/var/run/netns/NAME`); default: ours
    #[arg(long, value_name = "PATH", env = "NETWORK_NAMESPACE")]
    network_namespace: Option<PathBuf>,
}

/// The kubelet probes' source addresses after the node's SNAT, shared by the pod's settings
/// (exempt from capture) and the node's (the SNAT itself).
#[derive(Args)]
pub struct ProbeSnatArgs {
    /// The kubelet probes' IPv4 source after the node's SNAT [Istio: HOST_PROBE_SNAT_IP]
    #[arg(long, default_value_t = nftmesh::ambient::PROBE_SNAT_IPV4)]
    probe_snat_ipv4: Ipv4Addr,
    /// Their IPv6 source [Istio: HOST_PROBE_SNAT_IPV6]
    #[arg(long, default_value_t = nftmesh::ambient::PROBE_SNAT_IPV6)]
    probe_snat_ipv6: Ipv6Addr,
}

/// `nftmesh ambient explain`: the pod's settings, the packet, and where to look.
#[derive(Args)]
pub struct AmbientExplainArgs {
    #[command(flatten)]
    settings: AmbientArgs,
    /// Explain against the namespace's live nftmesh tables (dumped and decoded), not against
    /// the capture the settings compile to.
    #[arg(long)]
    live: bool,
    #[command(flatten)]
    packet: crate::explain::PacketArgs,
    /// Print one JSON object (as `nftmesh explain --json`).
    #[arg(long)]
    json: bool,
}

/// The node's subcommands.
#[derive(Subcommand)]
pub enum HostCommand {
    /// Print the node's table (nft syntax); changes nothing.
    Plan(HostArgs),
    /// Install the probe SNAT (one transaction; the probe sets keep their elements).
    Apply(HostArgs),
    /// Flush the probe SNAT rules, as Istio's node cleanup does; the chains and both
    /// families' probe sets stay, with their addresses. Needs no node setting.
    Cleanup(HostCleanupArgs),
    /// Add or remove pod addresses in the probe sets (no rule is touched).
    #[command(subcommand)]
    Probe(ProbeCommand),
}

/// The node's settings.
#[derive(Args)]
pub struct HostArgs {
    /// The uid kubelet runs as
    #[arg(long)]
    kubelet_uid: u32,
    /// IPv6 rule and set: auto (when the node has a global IPv6 address), on, off
    #[arg(long, value_enum, default_value = "auto")]
    ipv6: Ipv6Mode,
    #[command(flatten)]
    probe_snat: ProbeSnatArgs,
    /// The node's network namespace; default: ours
    #[arg(long, value_name = "PATH", env = "NETWORK_NAMESPACE")]
    network_namespace: Option<PathBuf>,
}

/// `host cleanup`: only where; what to flush is read from the live table.
#[derive(Args)]
pub struct HostCleanupArgs {
    /// The node's network namespace; default: ours
    #[arg(long, value_name = "PATH", env = "NETWORK_NAMESPACE")]
    network_namespace: Option<PathBuf>,
}

/// `host probe add|remove`.
#[derive(Subcommand)]
pub enum ProbeCommand {
    /// Add pod addresses to the probe sets.
    Add(ProbeArgs),
    /// Remove pod addresses from the probe sets; an address not in its set is left and named.
    Remove(ProbeArgs),
}

/// Pod addresses and where.
#[derive(Args)]
pub struct ProbeArgs {
    /// Pod addresses (IPv4 and IPv6)
    #[arg(required = true)]
    addrs: Vec<IpAddr>,
    /// The node's network namespace; default: ours
    #[arg(long, value_name = "PATH", env = "NETWORK_NAMESPACE")]
    network_namespace: Option<PathBuf>,
}

impl AmbientArgs {
    fn capture(&self) -> Result<Capture, CliError> {
        let cfg = AmbientConfig {
            dns_capture: self.dns_capture == OnOff::On,
            bypass_inbound_capture: self.bypass_inbound_capture,
            reroute_virtual_interfaces: self
                .reroute_virtual_interfaces
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            ipv6: self.ipv6.resolve(self.network_namespace.as_deref())?,
            probe_snat_ipv4: self.probe_snat.probe_snat_ipv4,
            probe_snat_ipv6: self.probe_snat.probe_snat_ipv6,
            ..AmbientConfig::default()
        };
        Ok(Capture::ambient(&cfg)?)
    }

    fn namespace(&self) -> Result<Namespace, CliError> {
        Ok(Namespace::open_or_current(
            self.network_namespace.as_deref(),
        )?)
    }
}

impl HostArgs {
    fn capture(&self) -> Result<HostCapture, CliError> {
        Ok(HostCapture::new(&AmbientHostConfig {
            kubelet_uid: self.kubelet_uid,
            ipv6: self.ipv6.resolve(self.network_namespace.as_deref())?,
            probe_snat_ipv4: self.probe_snat.probe_snat_ipv4,
            probe_snat_ipv6: self.probe_snat.probe_snat_ipv6,
        }))
    }

    fn namespace(&self) -> Result<Namespace, CliError> {
        Ok(Namespace::open_or_current(
            self.network_namespace.as_deref(),
        )?)
    }
}

/// Run an ambient subcommand.
pub fn run(cmd: AmbientCommand) -> Result<(), CliError> {
    match cmd {
        AmbientCommand::Plan(a) => {
            print!("{}", a.capture()?.render());
            Ok(())
        }
        AmbientCommand::Apply(a) => {
            let c = a.capture()?;
            let ns = a.namespace()?;
            let r = ns.install(&c)?;
            ns.close_after_exit();
            eprintln!("nftmesh: {r}");
            Ok(())
        }
        AmbientCommand::Diff(a) => {
            crate::diff::outcome((|| Ok(a.namespace()?.check(&a.capture()?)?))())
        }
        AmbientCommand::Cleanup(a) => {
            let removed = a.namespace()?.remove(&a.capture()?)?;
            eprintln!(
                "nftmesh: removed {} table(s) and ztunnel's policy routing",
                removed.tables
            );
            Ok(())
        }
        AmbientCommand::Explain(a) => {
            let ruleset = if a.live {
                a.settings.namespace()?.live()?
            } else {
                a.settings.capture()?.ruleset().clone()
            };
            crate::explain::show(&ruleset, &a.packet, a.json)
        }
        AmbientCommand::Host(h) => host_run(h),
    }
}

fn host_run(cmd: HostCommand) -> Result<(), CliError> {
    match cmd {
        HostCommand::Plan(h) => {
            print!("{}", h.capture()?.render());
            Ok(())
        }
        HostCommand::Apply(h) => {
            let r = h.namespace()?.install_host(&h.capture()?)?;
            eprintln!("nftmesh: {r}");
            Ok(())
        }
        HostCommand::Cleanup(h) => {
            let done = Namespace::open_or_current(h.network_namespace.as_deref())
                .and_then(|ns| ns.remove_host())?;
            eprintln!("nftmesh: {done}");
            Ok(())
        }
        HostCommand::Probe(ProbeCommand::Add(args)) => {
            Namespace::open_or_current(args.network_namespace.as_deref())
                .and_then(|ns| ns.add_probes(&args.addrs))?;
            eprintln!("nftmesh: added {} probe address(es)", args.addrs.len());
            Ok(())
        }
        HostCommand::Probe(ProbeCommand::Remove(args)) => {
            let done = Namespace::open_or_current(args.network_namespace.as_deref())
                .and_then(|ns| ns.remove_probes(&args.addrs))?;
            for line in done.to_string().lines() {
                eprintln!("nftmesh: {line}");
            }
            Ok(())
        }
    }
}
