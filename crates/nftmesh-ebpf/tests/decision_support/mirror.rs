//! `bpf/capture.c`'s decision, mirrored as pure functions over the map contents
//! `src/settings.rs` derives from a [`CaptureConfig`] (the crate keeps `Settings` private, so
//! [`Maps::from_config`] mirrors it too).
//!
//! Each function is named after the C function it mirrors and reads like it, rule by rule;
//! `return 0` / `TO_NONE` is `false` / [`To::None`]. What the programs do when a map is full or
//! a socket has no storage (leave the connect alone) is not mirrored: the maps are sized to the
//! configuration and never full here.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nftmesh_model::config::{
    CaptureConfig, CidrSelection, GroupRef, OwnerGroups, DNS_CAPTURE_PORT,
};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `127.0.0.6`, the proxy's inbound passthrough source.
pub const PASSTHROUGH: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// `::6`, its IPv6 twin.
pub const PASSTHROUGH6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);
/// DNS's port (`DNS_PORT` of capture.c).
pub const DNS_PORT: u16 = 53;

/// Owner groups as `src/settings.rs` keeps them.
#[derive(Debug, Clone)]
pub enum Owners {
    All,
    Include(BTreeSet<u32>),
    Exclude(BTreeSet<u32>),
}

/// `Dns` of `src/settings.rs`: `DNS_OFF`, `DNS_SERVERS` (maps `dns_servers`, `dns_servers6`)
/// or `DNS_ALL`.
#[derive(Debug, Clone)]
pub enum Dns {
    Off,
    Servers(BTreeSet<Ipv4Addr>, BTreeSet<Ipv6Addr>),
    All,
}

/// What `bpf/capture.c` reads from its maps: `src/settings.rs`'s `Settings`, mirrored.
#[derive(Debug, Clone)]
pub struct Maps {
    pub proxy_port: u16,
    pub proxy_uids: BTreeSet<u32>,
    pub proxy_gids: BTreeSet<u32>,
    pub ports_exclude: BTreeSet<u16>,
    pub ports_include: BTreeSet<u16>,
    /// `include_all` of `struct capture_config`.
    pub include_all: bool,
    /// The LPM tries `cidrs_include` / `cidrs6_include` (prefixes truncated to their network,
    /// as `v4()` / `v6()` do).
    pub cidrs_include: Vec<Ipv4Net>,
    pub cidrs6_include: Vec<Ipv6Net>,
    pub cidrs_exclude: Vec<Ipv4Net>,
    pub cidrs6_exclude: Vec<Ipv6Net>,
    pub owners: Owners,
    /// `ipv6`: native IPv6 connects are captured too.
    pub ipv6: bool,
    /// Computed, as `Settings::from_config` does, on the included prefixes as configured.
    pub loopback_included: bool,
    pub host_lo: Ipv4Net,
    pub dns: Dns,
    pub dns_port: u16,
}

impl Maps {
    /// `Settings::from_config` for a configuration it accepts (no interfaces, owner groups by
    /// gid).
    pub fn from_config(cfg: &CaptureConfig) -> Self {
        let v4 = |nets: &[IpNet]| -> Vec<Ipv4Net> {
            nets.iter()
                .filter_map(|n| match n {
                    IpNet::V4(n) => Some(n.trunc()),
                    IpNet::V6(_) => None,
                })
                .collect()
        };
        let v6 = |nets: &[IpNet]| -> Vec<Ipv6Net> {
            nets.iter()
                .filter_map(|n| match n {
                    IpNet::V6(n) => Some(n.trunc()),
                    IpNet::V4(_) => None,
                })
                .collect()
        };
        let (include_all, cidrs_include, cidrs6_include) = match &cfg.outbound_cidrs_include {
            CidrSelection::All => (true, vec![], vec![]),
            CidrSelection::Cidrs(c) => (false, v4(c), v6(c)),
        };
        // Of the included prefixes as configured (both families), not their networks.
        let loopback_included = match &cfg.outbound_cidrs_include {
            CidrSelection::All => false,
            CidrSelection::Cidrs(c) => c.iter().any(|n| n.addr().is_loopback()),
        };
        let gids = |g: &[GroupRef]| -> BTreeSet<u32> {
            g.iter()
                .map(|g| match g {
                    GroupRef::Id(id) => *id,
                    GroupRef::Name(n) => panic!("not generated: group name {n}"),
                })
                .collect()
        };
        Maps {
            proxy_port: cfg.proxy_port,
            proxy_uids: cfg.proxy_uids.iter().copied().collect(),
            proxy_gids: cfg.proxy_gids.iter().copied().collect(),
            ports_exclude: cfg.outbound_ports_exclude.iter().copied().collect(),
            ports_include: cfg.outbound_ports_include.iter().copied().collect(),
            include_all,
            cidrs_include,
            cidrs6_include,
            cidrs_exclude: v4(&cfg.outbound_cidrs_exclude),
            cidrs6_exclude: v6(&cfg.outbound_cidrs_exclude),
            owners: match &cfg.owner_groups {
                OwnerGroups::All => Owners::All,
                OwnerGroups::Include(g) => Owners::Include(gids(g)),
                OwnerGroups::Exclude(g) => Owners::Exclude(gids(g)),
            },
            ipv6: cfg.ipv6,
            loopback_included,
            host_lo: cfg.host_ipv4_loopback_cidr,
            dns: dns(cfg),
            dns_port: DNS_CAPTURE_PORT,
        }
    }
}

/// `dns()` of `src/settings.rs`: off unless in effect (on, and capture-all or a server; Istio
/// turns it off otherwise), all with capture-all, else the servers per family.
fn dns(cfg: &CaptureConfig) -> Dns {
    let in_effect = cfg.dns.enabled && (cfg.dns.capture_all || !cfg.dns.servers.is_empty());
    if !in_effect {
        return Dns::Off;
    }
    if cfg.dns.capture_all {
        return Dns::All;
    }
    let (mut v4, mut v6) = (BTreeSet::new(), BTreeSet::new());
    for s in &cfg.dns.servers {
        match s {
            IpAddr::V4(a) => v4.insert(*a),
            IpAddr::V6(a) => v6.insert(*a),
        };
    }
    Dns::Servers(v4, v6)
}

/// The socket's protocol: `is_tcp()` / `is_udp()` of capture.c.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    /// A TCP connect (connect4 / connect6).
    Tcp,
    /// A UDP datagram (sendmsg4 / sendmsg6) or a UDP socket's connect (connect4 / connect6),
    /// decided alike (`redirect_dns4` / `redirect_dns6`). A dual-stack socket's sendto() to an
    /// IPv4-mapped address meets sendmsg4 with the IPv4 address, not sendmsg6 (udpv6_sendmsg
    /// hands mapped destinations to udp_sendmsg before its own hook), and `sk->src_ip4` is the
    /// IPv4 address it is bound to: `redirect_dns4`, as `redirect_dns6`'s mapped branch (which
    /// its connect() meets) decides.
    Udp,
}

/// A connect() or sendmsg() as `cgroup/connect4|6` or `cgroup/sendmsg4|6` sees it. The family
/// of `daddr` is the socket's: IPv4 for an `AF_INET` socket, IPv6 (possibly IPv4-mapped, a
/// dual-stack socket reaching an IPv4 peer) for an `AF_INET6` one.
#[derive(Debug, Clone, Copy)]
pub struct Connect {
    pub proto: Proto,
    /// `bpf_get_current_uid_gid()`: the thread's ids, here also the socket's owner.
    pub uid: u32,
    pub gid: u32,
    /// `ctx->user_ip4` / `ctx->user_ip6`: the address passed to connect() or sendto().
    pub daddr: IpAddr,
    pub dport: u16,
    /// `ctx->sk->src_ip4` / `src_ip6`: the address the socket is bound to, if any (of the
    /// socket's family).
    pub bound: Option<IpAddr>,
}

/// Where a connect goes: `TO_NONE`, `TO_PROXY`, `TO_DNS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    None,
    Proxy,
    Dns,
}

/// `let_through()`: the rules of `istio-output` both families share, up to the owner groups.
fn let_through(m: &Maps, c: &Connect, dport: u16, from_passthrough: bool, on_lo: bool) -> bool {
    if m.ports_exclude.contains(&dport) {
        return true;
    }
    if from_passthrough {
        return true;
    }
    if m.proxy_uids.contains(&c.uid) || m.proxy_gids.contains(&c.gid) {
        return true;
    }
    if on_lo && !m.loopback_included {
        return true;
    }
    match &m.owners {
        Owners::Exclude(g) if g.contains(&c.gid) => return true,
        Owners::Include(g) if !g.contains(&c.gid) => return true,
        _ => {}
    }
    false
}

/// `dns_server()`: port 53 of a configured IPv4 server, or of any address with capture-all.
fn dns_server(m: &Maps, daddr: Ipv4Addr, dport: u16) -> bool {
    if dport != DNS_PORT {
        return false;
    }
    match &m.dns {
        Dns::Off => false,
        Dns::All => true,
        Dns::Servers(v4, _) => v4.contains(&daddr),
    }
}

/// `captured()`: an IPv4 TCP connect (or a dual-stack socket's IPv4-mapped one), `saddr` the
/// bound IPv4 address or 0.0.0.0.
fn captured(m: &Maps, c: &Connect, daddr: Ipv4Addr, dport: u16, saddr: Ipv4Addr) -> To {
    let in_cidrs = |nets: &[Ipv4Net]| nets.iter().any(|n| n.contains(&daddr));
    let mut on_lo = daddr.octets()[0] == 127;
    if !matches!(m.dns, Dns::Off) && dport == DNS_PORT {
        on_lo = false;
    }
    if let_through(m, c, dport, saddr == PASSTHROUGH, on_lo) {
        return To::None;
    }
    if dns_server(m, daddr, dport) {
        return To::Dns;
    }
    if m.host_lo.contains(&daddr) {
        return To::None;
    }
    if in_cidrs(&m.cidrs_exclude) {
        return To::None;
    }
    if m.ports_include.contains(&dport) {
        return To::Proxy;
    }
    if m.include_all {
        return To::Proxy;
    }
    if in_cidrs(&m.cidrs_include) {
        To::Proxy
    } else {
        To::None
    }
}

/// `captured_udp()`: whether an IPv4 UDP datagram goes to the DNS capture port.
fn captured_udp(m: &Maps, c: &Connect, daddr: Ipv4Addr, dport: u16, saddr: Ipv4Addr) -> bool {
    if matches!(m.dns, Dns::Off) {
        return false;
    }
    if let_through(m, c, dport, saddr == PASSTHROUGH, false) {
        return false;
    }
    dns_server(m, daddr, dport)
}

/// `dns_server6()`: port 53 of a configured IPv6 server, or of any address with capture-all.
fn dns_server6(m: &Maps, daddr: Ipv6Addr, dport: u16) -> bool {
    if dport != DNS_PORT {
        return false;
    }
    match &m.dns {
        Dns::Off => false,
        Dns::All => true,
        Dns::Servers(_, v6) => v6.contains(&daddr),
    }
}

/// `captured6()`: a native IPv6 TCP connect (IPv6 capture on); `::1` is both "oif lo" and the
/// host loopback, `::6` the passthrough source.
fn captured6(m: &Maps, c: &Connect, daddr: Ipv6Addr, dport: u16, saddr: Ipv6Addr) -> To {
    let in_cidrs6 = |nets: &[Ipv6Net]| nets.iter().any(|n| n.contains(&daddr));
    let on_lo = daddr == Ipv6Addr::LOCALHOST;
    let dns_on_53 = !matches!(m.dns, Dns::Off) && dport == DNS_PORT;
    if let_through(m, c, dport, saddr == PASSTHROUGH6, on_lo && !dns_on_53) {
        return To::None;
    }
    if dns_server6(m, daddr, dport) {
        return To::Dns;
    }
    if on_lo {
        return To::None;
    }
    if in_cidrs6(&m.cidrs6_exclude) {
        return To::None;
    }
    if m.ports_include.contains(&dport) {
        return To::Proxy;
    }
    if m.include_all {
        return To::Proxy;
    }
    if in_cidrs6(&m.cidrs6_include) {
        To::Proxy
    } else {
        To::None
    }
}

/// `captured_udp6()`: [`captured_udp`] for a native IPv6 datagram (IPv6 capture on).
fn captured_udp6(m: &Maps, c: &Connect, daddr: Ipv6Addr, dport: u16, saddr: Ipv6Addr) -> bool {
    if matches!(m.dns, Dns::Off) {
        return false;
    }
    if let_through(m, c, dport, saddr == PASSTHROUGH6, false) {
        return false;
    }
    dns_server6(m, daddr, dport)
}

/// The IPv4 address a bound address stands for: `sk->src_ip4`, or of a dual-stack socket
/// `is_v4_mapped(saddr) ? saddr[3] : 0`.
fn bound4(c: &Connect) -> Ipv4Addr {
    match c.bound {
        Some(IpAddr::V4(a)) => a,
        Some(IpAddr::V6(a)) => a.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
        None => Ipv4Addr::UNSPECIFIED,
    }
}

/// `sk->src_ip6` of an IPv6 socket (`::` when unbound).
fn bound6(c: &Connect) -> Ipv6Addr {
    match c.bound {
        Some(IpAddr::V6(a)) => a,
        Some(IpAddr::V4(a)) => a.to_ipv6_mapped(),
        None => Ipv6Addr::UNSPECIFIED,
    }
}

/// `redirect_dns4()`: a UDP datagram or UDP connect of an IPv4 socket.
fn redirect_dns4(m: &Maps, c: &Connect, daddr: Ipv4Addr) -> To {
    if captured_udp(m, c, daddr, c.dport, bound4(c)) {
        To::Dns
    } else {
        To::None
    }
}

/// `redirect_dns6()`: an IPv4-mapped server decided as IPv4, a native one with IPv6 capture on.
fn redirect_dns6(m: &Maps, c: &Connect, daddr: Ipv6Addr) -> To {
    if let Some(server) = daddr.to_ipv4_mapped() {
        return redirect_dns4(m, c, server);
    }
    if !m.ipv6 || !captured_udp6(m, c, daddr, c.dport, bound6(c)) {
        return To::None;
    }
    To::Dns
}

/// `nftmesh_connect4` for a TCP socket.
fn connect4(m: &Maps, c: &Connect, daddr: Ipv4Addr) -> To {
    captured(m, c, daddr, c.dport, bound4(c))
}

/// `nftmesh_connect6` for a TCP socket: an IPv4-mapped destination decided as IPv4 (whether
/// IPv6 capture is on or not), a native one only with IPv6 capture on.
fn connect6(m: &Maps, c: &Connect, daddr: Ipv6Addr) -> To {
    if let Some(v4) = daddr.to_ipv4_mapped() {
        return captured(m, c, v4, c.dport, bound4(c));
    }
    if !m.ipv6 {
        return To::None;
    }
    captured6(m, c, daddr, c.dport, bound6(c))
}

/// `target_port()`: the port a connect decided `to` goes to, if it is redirected.
fn target_port(m: &Maps, to: To) -> Option<u16> {
    match to {
        To::None => None,
        To::Proxy => Some(m.proxy_port),
        To::Dns => Some(m.dns_port),
    }
}

/// What the programs do with `c`: the port on loopback it is sent to instead, if any.
pub fn redirect(m: &Maps, c: &Connect) -> Option<u16> {
    let to = match (c.proto, c.daddr) {
        (Proto::Tcp, IpAddr::V4(d)) => connect4(m, c, d),
        (Proto::Tcp, IpAddr::V6(d)) => connect6(m, c, d),
        (Proto::Udp, IpAddr::V4(d)) => redirect_dns4(m, c, d),
        (Proto::Udp, IpAddr::V6(d)) => redirect_dns6(m, c, d),
    };
    target_port(m, to)
}
