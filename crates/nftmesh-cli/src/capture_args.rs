//! istio-iptables' flags and environment variables, mapped onto a [`CaptureConfig`].

use crate::error::CliError;
use crate::host;
use crate::netns_arg::NetnsArg;
use clap::{Args, ValueEnum};
use nftmesh_model::config::{CaptureConfig, GroupNames, IstioSettings};
use std::path::{Path, PathBuf};

/// Whether IPv6 is captured.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Ipv6Mode {
    /// On when the namespace has a global IPv6 address (Istio's detection).
    Auto,
    /// Always on.
    On,
    /// Always off.
    Off,
}

impl Ipv6Mode {
    /// Whether IPv6 is on in the network namespace at `netns` (ours when `None`): `auto` looks
    /// for a global IPv6 address there.
    pub fn resolve(self, netns: Option<&Path>) -> Result<bool, CliError> {
        Ok(match self {
            Ipv6Mode::On => true,
            Ipv6Mode::Off => false,
            Ipv6Mode::Auto => match netns {
                None => host::has_global_ipv6(),
                Some(path) => nftmesh_netlink::netns::run_in(path, host::has_global_ipv6)?,
            },
        })
    }
}

/// Capture settings, spelled as Istio's `istio-iptables` spells them.
#[derive(Args, Debug)]
pub struct CaptureArgs {
    /// A JSON capture configuration file; replaces every capture flag below.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Outbound capture port [istio-iptables -p/--envoy-port]
    #[arg(
        short = 'p',
        long = "envoy-port",
        env = "ENVOY_PORT",
        default_value = "15001"
    )]
    pub envoy_port: String,
    /// Inbound capture port [istio-iptables -z/--inbound-capture-port]
    #[arg(
        short = 'z',
        long,
        env = "INBOUND_CAPTURE_PORT",
        default_value = "15006"
    )]
    pub inbound_capture_port: String,
    /// Inbound tunnel (HBONE) port, never captured [istio-iptables -e/--inbound-tunnel-port]
    #[arg(
        short = 'e',
        long,
        env = "INBOUND_TUNNEL_PORT",
        default_value = "15008"
    )]
    pub inbound_tunnel_port: String,
    /// Proxy uids, comma separated [istio-iptables -u/--proxy-uid]
    #[arg(short = 'u', long, env = "PROXY_UID", default_value = "1337")]
    pub proxy_uid: String,
    /// Proxy gids, comma separated; default: the uids [istio-iptables -g/--proxy-gid]
    #[arg(short = 'g', long, env = "PROXY_GID", default_value = "")]
    pub proxy_gid: String,
    /// Inbound interception mode, REDIRECT or TPROXY [istio-iptables -m/--istio-inbound-interception-mode]
    #[arg(
        short = 'm',
        long = "istio-inbound-interception-mode",
        env = "ISTIO_INBOUND_INTERCEPTION_MODE",
        default_value = ""
    )]
    pub mode: String,
    /// TPROXY packet mark [istio-iptables -t/--istio-inbound-tproxy-mark]
    #[arg(
        short = 't',
        long = "istio-inbound-tproxy-mark",
        env = "ISTIO_INBOUND_TPROXY_MARK",
        default_value = "1337"
    )]
    pub tproxy_mark: String,
    /// TPROXY route table [istio-iptables -r/--istio-inbound-tproxy-route-table]
    #[arg(
        short = 'r',
        long = "istio-inbound-tproxy-route-table",
        env = "ISTIO_INBOUND_TPROXY_ROUTE_TABLE",
        default_value = "133"
    )]
    pub tproxy_route_table: String,
    /// Inbound ports to capture, or "*" [istio-iptables -b/--istio-inbound-ports]
    #[arg(
        short = 'b',
        long = "istio-inbound-ports",
        env = "ISTIO_INBOUND_PORTS",
        default_value = ""
    )]
    pub inbound_ports: String,
    /// Inbound ports never captured when all are [istio-iptables -d/--istio-local-exclude-ports]
    #[arg(
        short = 'd',
        long = "istio-local-exclude-ports",
        env = "ISTIO_LOCAL_EXCLUDE_PORTS",
        default_value = ""
    )]
    pub inbound_ports_exclude: String,
    /// Outbound ports always captured [istio-iptables -q/--istio-outbound-ports]
    #[arg(
        short = 'q',
        long = "istio-outbound-ports",
        env = "ISTIO_OUTBOUND_PORTS",
        default_value = ""
    )]
    pub outbound_ports: String,
    /// Outbound ports never captured [istio-iptables -o/--istio-local-outbound-ports-exclude]
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        env = "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE",
        default_value = ""
    )]
    pub outbound_ports_exclude: String,
    /// Outbound CIDRs to capture, or "*" [istio-iptables -i/--istio-service-cidr]
    #[arg(
        short = 'i',
        long = "istio-service-cidr",
        env = "ISTIO_SERVICE_CIDR",
        default_value = ""
    )]
    pub service_cidr: String,
    /// Outbound CIDRs never captured [istio-iptables -x/--istio-service-exclude-cidr]
    #[arg(
        short = 'x',
        long = "istio-service-exclude-cidr",
        env = "ISTIO_SERVICE_EXCLUDE_CIDR",
        default_value = ""
    )]
    pub service_exclude_cidr: String,
    /// Interfaces never captured [istio-iptables -c/--istio-exclude-interfaces]
    #[arg(
        short = 'c',
        long = "istio-exclude-interfaces",
        env = "ISTIO_EXCLUDE_INTERFACES",
        default_value = ""
    )]
    pub exclude_interfaces: String,
    /// Virtual interfaces whose inbound traffic is treated as outbound [istio-iptables -k/--kube-virt-interfaces]
    #[arg(
        short = 'k',
        long = "kube-virt-interfaces",
        env = "KUBE_VIRT_INTERFACES",
        default_value = ""
    )]
    pub kube_virt_interfaces: String,
    /// Owner groups whose outbound traffic is captured, or "*" [env ISTIO_OUTBOUND_OWNER_GROUPS]
    #[arg(long, env = "ISTIO_OUTBOUND_OWNER_GROUPS", default_value = "*")]
    pub outbound_owner_groups: String,
    /// Owner groups whose outbound traffic is not captured [env ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE]
    #[arg(long, env = "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", default_value = "")]
    pub outbound_owner_groups_exclude: String,
    /// Keep unknown owner group names as names instead of refusing them (Istio's behaviour)
    #[arg(long)]
    pub pass_through_group_names: bool,
    /// Capture DNS to the agent on 15053 [istio-iptables --redirect-dns, env ISTIO_META_DNS_CAPTURE]
    #[arg(long, env = "ISTIO_META_DNS_CAPTURE", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = crate::go_flags::go_bool_arg, action = clap::ArgAction::Set)]
    pub redirect_dns: bool,
    /// Capture DNS to every address, not only the servers [istio-iptables --capture-all-dns]
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = crate::go_flags::go_bool_arg, action = clap::ArgAction::Set)]
    pub capture_all_dns: bool,
    /// DNS servers, comma separated; default: the nameservers of the namespace's resolv.conf (as
    /// Istio: the pod's; for --network-namespace /proc/PID/ns/net that process's
    /// /etc/resolv.conf, for /var/run/netns/NAME /etc/netns/NAME/resolv.conf if present)
    #[arg(long)]
    pub dns_servers: Option<String>,
    /// Drop packets conntrack marks invalid [istio-iptables --drop-invalid, env INVALID_DROP]
    #[arg(long, env = "INVALID_DROP", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = crate::go_flags::go_bool_arg, action = clap::ArgAction::Set)]
    pub drop_invalid: bool,
    /// IPv6 capture [istio-iptables: detected from the pod's addresses; --dual-stack forces it]
    #[arg(long, value_enum, default_value = "auto")]
    pub ipv6: Ipv6Mode,
    /// Capture IPv6 too, as dual stack [istio-iptables --dual-stack, env ISTIO_AGENT_DUAL_STACK]
    #[arg(long, env = "ISTIO_AGENT_DUAL_STACK", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = crate::go_flags::go_bool_arg, action = clap::ArgAction::Set)]
    pub dual_stack: bool,
    /// The host's IPv4 loopback range [env ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR]
    #[arg(
        long,
        env = "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
        default_value = "127.0.0.1/32"
    )]
    pub ipv4_loopback_cidr: String,
}

impl CaptureArgs {
    /// The validated configuration these flags (or `--config`) describe, with owner groups
    /// resolved through the system's group database.
    pub fn to_config(&self) -> Result<CaptureConfig, CliError> {
        self.to_config_in(None)
    }

    /// [`CaptureArgs::to_config`] for the network namespace at `netns` (ours when `None`): as
    /// Istio looks at the pod's addresses, `--ipv6 auto` looks at that namespace's.
    pub fn to_config_in(&self, netns: Option<&Path>) -> Result<CaptureConfig, CliError> {
        let mut cfg = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(CliError::io(path.display()))?;
                CaptureConfig::from_json(&text).map_err(CliError::input(path.display()))?
            }
            None => self.settings(netns)?.to_config()?,
        };
        let names = if self.pass_through_group_names {
            GroupNames::PassThrough
        } else {
            GroupNames::Strict
        };
        // Group names resolve as the pod would resolve them: in its own /etc/group when the
        // namespace is a process's; through the system's database otherwise. The file is read
        // only when a name must be resolved: a pause container's root has no /etc/group.
        match host::group_file_for(netns) {
            Some(path) => {
                let text = std::cell::OnceCell::new();
                let unresolved = std::cell::RefCell::new(None);
                let lookup = |name: &str| match text.get_or_init(|| std::fs::read_to_string(&path))
                {
                    Ok(t) => host::gid_in(t, name),
                    Err(_) => {
                        unresolved
                            .borrow_mut()
                            .get_or_insert_with(|| name.to_string());
                        None
                    }
                };
                let resolved = cfg.resolve_groups(&lookup, names);
                if let (Some(name), Some(Err(e)), GroupNames::Strict) =
                    (unresolved.into_inner(), text.get(), names)
                {
                    return Err(CliError::Config(format!(
                        "owner group {name:?} cannot be resolved: the namespace's process has \
                         no readable group database ({}: {e}); give the gid instead, or \
                         --pass-through-group-names",
                        path.display()
                    )));
                }
                resolved
            }
            None => cfg.resolve_groups(&host::gid_of, names),
        }?;
        Ok(cfg)
    }

    fn settings(&self, netns: Option<&Path>) -> Result<IstioSettings, CliError> {
        let ipv6 = self.dual_stack || self.ipv6.resolve(netns)?;
        let dns_servers = match &self.dns_servers {
            Some(s) => s.clone(),
            None if self.redirect_dns && !self.capture_all_dns => {
                let text =
                    std::fs::read_to_string(host::resolv_conf_for(netns)).unwrap_or_default();
                host::nameservers(&text)
                    .into_iter()
                    .filter(|a| ipv6 || a.is_ipv4())
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            }
            None => String::new(),
        };
        Ok(IstioSettings {
            proxy_port: self.envoy_port.clone(),
            inbound_capture_port: self.inbound_capture_port.clone(),
            inbound_tunnel_port: self.inbound_tunnel_port.clone(),
            proxy_uid: self.proxy_uid.clone(),
            proxy_gid: self.proxy_gid.clone(),
            inbound_interception_mode: self.mode.clone(),
            inbound_tproxy_mark: self.tproxy_mark.clone(),
            inbound_tproxy_route_table: self.tproxy_route_table.clone(),
            inbound_ports: self.inbound_ports.clone(),
            inbound_ports_exclude: self.inbound_ports_exclude.clone(),
            outbound_ports_include: self.outbound_ports.clone(),
            outbound_ports_exclude: self.outbound_ports_exclude.clone(),
            outbound_ip_ranges_include: self.service_cidr.clone(),
            outbound_ip_ranges_exclude: self.service_exclude_cidr.clone(),
            owner_groups_include: self.outbound_owner_groups.clone(),
            owner_groups_exclude: self.outbound_owner_groups_exclude.clone(),
            exclude_interfaces: self.exclude_interfaces.clone(),
            kube_virt_interfaces: self.kube_virt_interfaces.clone(),
            redirect_dns: self.redirect_dns,
            capture_all_dns: self.capture_all_dns,
            dns_servers,
            drop_invalid: self.drop_invalid,
            ipv6,
            host_ipv4_loopback_cidr: self.ipv4_loopback_cidr.clone(),
        })
    }
}

/// Capture settings and the network namespace they are for (`apply`, `diff`, `verify`).
#[derive(Args)]
pub struct CaptureInArgs {
    /// The capture settings.
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// Where.
    #[command(flatten)]
    pub netns: NetnsArg,
    /// The eBPF backend's cgroup and BPF file system.
    #[command(flatten)]
    pub ebpf: EbpfArgs,
}

/// Where the eBPF backend works (`apply --backend ebpf`, `diff`): the pod's cgroup and bpffs.
#[derive(Args, Debug)]
pub struct EbpfArgs {
    /// eBPF backend: the pod's cgroup v2 directory, whose processes' connects are captured
    /// (`apply --backend ebpf`); `diff` also reports the programs attached there.
    #[arg(long, value_name = "DIR")]
    pub cgroup: Option<PathBuf>,
    /// eBPF backend: the BPF file system the programs are pinned in; default: the bpf mount
    /// /proc/mounts lists (/sys/fs/bpf first).
    #[arg(long, value_name = "DIR", requires = "cgroup")]
    pub bpffs: Option<PathBuf>,
    /// eBPF backend: also accelerate captured connections with sk_msg (the app's and the
    /// proxy's ends hand bytes to each other without TCP). Off by default: on the kernels seen a
    /// blocking recv() after shutdown(SHUT_WR) returns EAGAIN early on an accelerated socket,
    /// which breaks apps that half-close and wait for the answer. An apply without it turns it off.
    #[arg(long, requires = "cgroup")]
    pub sk_msg: bool,
    /// eBPF backend: how inbound is captured: nftables (a REDIRECT/TPROXY table in the
    /// namespace; conntrack then tracks every connection of the pod) or sk-lookup (BPF steering
    /// to the proxy's listener: no table, no conntrack; install before the proxy listens, a
    /// proxy already listening is not found and captured inbound is refused until it listens
    /// again; no TPROXY).
    #[arg(
        long,
        value_enum,
        value_name = "HOW",
        default_value = "nftables",
        requires = "cgroup"
    )]
    pub ebpf_inbound: EbpfInboundArg,
}

/// `--ebpf-inbound`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EbpfInboundArg {
    /// An nf_tables inbound table.
    Nftables,
    /// sk_lookup steering.
    SkLookup,
}

impl EbpfArgs {
    /// The eBPF backend for `--cgroup`, `None` without it.
    pub fn backend(&self) -> Result<Option<nftmesh::ebpf::EbpfBackend>, CliError> {
        use nftmesh::ebpf::{Bpffs, EbpfBackend};
        let Some(cgroup) = &self.cgroup else {
            return Ok(None);
        };
        let backend = match &self.bpffs {
            Some(dir) => {
                EbpfBackend::new(cgroup, Bpffs::at(dir).map_err(nftmesh::CaptureError::from)?)
            }
            None => EbpfBackend::find(cgroup)?,
        };
        let inbound = match self.ebpf_inbound {
            EbpfInboundArg::Nftables => nftmesh::ebpf::EbpfInbound::Nftables,
            EbpfInboundArg::SkLookup => nftmesh::ebpf::EbpfInbound::SkLookup,
        };
        Ok(Some(backend.with_sk_msg(self.sk_msg).with_inbound(inbound)))
    }
}

impl CaptureInArgs {
    /// The configuration the settings describe, IPv6 and DNS detected in the namespace.
    pub fn config(&self) -> Result<CaptureConfig, CliError> {
        self.capture
            .to_config_in(self.netns.network_namespace.as_deref())
    }

    /// The nf_tables capture the settings describe (subcommands that know only that backend:
    /// `--cgroup` is refused).
    pub fn capture(&self) -> Result<nftmesh::Capture, CliError> {
        if self.ebpf.cgroup.is_some() {
            return Err(CliError::Usage(
                "--cgroup: this subcommand knows only the nf_tables backend".into(),
            ));
        }
        Ok(nftmesh::Capture::new(&self.config()?)?)
    }

    /// The namespace, opened.
    pub fn namespace(&self) -> Result<nftmesh::Namespace, CliError> {
        let path = self.netns.network_namespace.as_deref();
        Ok(nftmesh::Namespace::open_or_current(path)?)
    }
}
