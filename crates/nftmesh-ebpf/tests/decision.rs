//! The eBPF outbound decision agrees with the nf_tables capture, for generated configurations
//! and connections: pure, no root.
//!
//! The decision of `bpf/capture.c` (`captured()`, run by `cgroup/connect4`) is mirrored below as
//! a pure function over the map contents `src/settings.rs` derives from a [`CaptureConfig`] (the
//! crate keeps `Settings` private, so [`Maps::from_config`] mirrors it too). For every generated
//! configuration (proxy port, uids and gids, included and excluded ports and CIDRs, `*` or a
//! list, owner groups by gid, the host loopback range, REDIRECT or TPROXY) and connection (uid,
//! gid, destination, port, the address the socket is bound to), the mirror's answer is
//! compared with nftmesh's evaluator on `compile(cfg)` at the output hook for the packet that
//! connect() sends: redirected to the proxy port by the programs ⇔ the evaluator's outcome is a
//! redirect to that port.
//!
//! The packet is the one the kernel routes: connect() to `0.0.0.0` goes to the local host
//! (`127.0.0.1`, or the bound address), and the output interface is `lo` exactly when the
//! destination is a loopback address or one of the pod's own addresses (generated, possibly
//! none; with none, `lo` ⇔ destination in 127.0.0.0/8, the crate README's approximation, is
//! exact), `eth0` otherwise. Destinations a TCP connect cannot reach at all (multicast,
//! 255.255.255.255, 0.0.0.0/8 but 0.0.0.0) are not generated: the kernel refuses them before a
//! packet exists. The socket's owner is the connecting thread (one uid and gid per connection):
//! the README's "real ids of the thread vs the socket's owner" difference is not modelled.
//!
//! Every disagreement must fall in one of the classes of [`KNOWN`], and every class must be
//! seen, so the list cannot go stale (as `tests/pure_iptables_equivalence.rs` does).

use ipnet::{IpNet, Ipv4Net};
use nftmesh_model::config::{CaptureConfig, CidrSelection, GroupRef, OwnerGroups};
use nftmesh_model::{compile, eval, Hook, InterceptionMode, Packet, Ruleset};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// `127.0.0.6`, the proxy's inbound passthrough source.
const PASSTHROUGH: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// The pod's source on `eth0` when it has no address of its own in the generated world (only
/// `ip saddr 127.0.0.6` looks at the source, so any non-loopback address does).
const ETH0_SOURCE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// Owner groups as `src/settings.rs` keeps them.
#[derive(Debug, Clone)]
enum Owners {
    All,
    Include(BTreeSet<u32>),
    Exclude(BTreeSet<u32>),
}

/// What `bpf/capture.c` reads from its maps: `src/settings.rs`'s `Settings`, mirrored.
#[derive(Debug, Clone)]
struct Maps {
    proxy_uids: BTreeSet<u32>,
    proxy_gids: BTreeSet<u32>,
    ports_exclude: BTreeSet<u16>,
    ports_include: BTreeSet<u16>,
    /// `include_all` of `struct capture_config`.
    include_all: bool,
    /// The LPM trie `cidrs_include` (prefixes truncated to their network, as `v4()` does).
    cidrs_include: Vec<Ipv4Net>,
    cidrs_exclude: Vec<Ipv4Net>,
    owners: Owners,
    /// Computed, as `Settings::from_config` does, on the truncated prefixes.
    loopback_included: bool,
    host_lo: Ipv4Net,
}

impl Maps {
    /// `Settings::from_config` for a configuration it accepts (IPv4, no DNS, no interfaces,
    /// owner groups by gid).
    fn from_config(cfg: &CaptureConfig) -> Self {
        let v4 = |nets: &[IpNet]| -> Vec<Ipv4Net> {
            nets.iter()
                .filter_map(|n| match n {
                    IpNet::V4(n) => Some(n.trunc()),
                    IpNet::V6(_) => None,
                })
                .collect()
        };
        let (include_all, cidrs_include) = match &cfg.outbound_cidrs_include {
            CidrSelection::All => (true, vec![]),
            CidrSelection::Cidrs(c) => (false, v4(c)),
        };
        // Of the included prefixes as configured, not their networks.
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
            proxy_uids: cfg.proxy_uids.iter().copied().collect(),
            proxy_gids: cfg.proxy_gids.iter().copied().collect(),
            ports_exclude: cfg.outbound_ports_exclude.iter().copied().collect(),
            ports_include: cfg.outbound_ports_include.iter().copied().collect(),
            include_all,
            cidrs_include,
            cidrs_exclude: v4(&cfg.outbound_cidrs_exclude),
            owners: match &cfg.owner_groups {
                OwnerGroups::All => Owners::All,
                OwnerGroups::Include(g) => Owners::Include(gids(g)),
                OwnerGroups::Exclude(g) => Owners::Exclude(gids(g)),
            },
            loopback_included,
            host_lo: cfg.host_ipv4_loopback_cidr,
        }
    }
}

/// A TCP connect() as `cgroup/connect4` sees it.
#[derive(Debug, Clone, Copy)]
struct Connect {
    /// `bpf_get_current_uid_gid()`: the thread's ids, here also the socket's owner.
    uid: u32,
    gid: u32,
    /// `ctx->user_ip4`: the address passed to connect().
    daddr: Ipv4Addr,
    dport: u16,
    /// `ctx->sk->src_ip4`: the address the socket is bound to, if any.
    bound: Option<Ipv4Addr>,
}

/// `captured()` of `bpf/capture.c`, rule by rule, each `return 0` a `false`.
fn captured(m: &Maps, c: &Connect) -> bool {
    let in_cidrs = |nets: &[Ipv4Net]| nets.iter().any(|n| n.contains(&c.daddr));
    let on_lo = c.daddr.octets()[0] == 127;
    if m.ports_exclude.contains(&c.dport) {
        return false;
    }
    if c.bound == Some(PASSTHROUGH) {
        return false;
    }
    if m.proxy_uids.contains(&c.uid) || m.proxy_gids.contains(&c.gid) {
        return false;
    }
    if on_lo && !m.loopback_included {
        return false;
    }
    match &m.owners {
        Owners::Exclude(g) if g.contains(&c.gid) => return false,
        Owners::Include(g) if !g.contains(&c.gid) => return false,
        _ => {}
    }
    if m.host_lo.contains(&c.daddr) {
        return false;
    }
    if in_cidrs(&m.cidrs_exclude) {
        return false;
    }
    if m.ports_include.contains(&c.dport) {
        return true;
    }
    m.include_all || in_cidrs(&m.cidrs_include)
}

/// The pod the connection is made in: its own (non-loopback) addresses, reached over `lo`.
#[derive(Debug, Clone)]
struct Pod {
    own: Vec<Ipv4Addr>,
}

/// The first packet of the connection, as the kernel routes it and nf_tables sees it.
fn packet(pod: &Pod, c: &Connect) -> Packet {
    // ip_route_output: a connect to 0.0.0.0 goes to the source, or to 127.0.0.1.
    let daddr = if c.daddr.is_unspecified() {
        c.bound.unwrap_or(Ipv4Addr::LOCALHOST)
    } else {
        c.daddr
    };
    let over_lo = daddr.is_loopback() || pod.own.contains(&daddr);
    let saddr = c.bound.unwrap_or(if daddr.is_loopback() {
        // `local 127.0.0.0/8 dev lo src 127.0.0.1`.
        Ipv4Addr::LOCALHOST
    } else if over_lo {
        daddr
    } else {
        pod.own.first().copied().unwrap_or(ETH0_SOURCE)
    });
    let oif = if over_lo { "lo" } else { "eth0" };
    Packet::local_tcp(c.uid, c.gid, saddr.into(), daddr.into(), c.dport, oif)
}

/// What became of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    /// Redirected to the proxy's outbound port.
    Proxy,
    /// Redirected to the inbound capture port (nf_tables only).
    Inbound,
    /// Let through to its destination.
    Through,
}

/// A disagreement and what it happened to.
struct Case<'a> {
    cfg: &'a CaptureConfig,
    pod: &'a Pod,
    conn: &'a Connect,
    packet: &'a Packet,
    ebpf: Fate,
    nft: Fate,
}

/// A documented difference between the BPF decision and nf_tables (or a reported bug).
struct Known {
    name: &'static str,
    holds: fn(&Case) -> bool,
}

const KNOWN: [Known; 3] = [
    Known {
        // Crate README: "output interface lo" ≈ "destination in 127.0.0.0/8". nf_tables lets
        // every non-proxy connection over lo through (`oifname lo skuid != <proxy> return`),
        // the program sees a non-loopback destination and goes on.
        name: "own address: a connect to one of the pod's own addresses leaves over lo; \
               nf_tables lets it through, the programs redirect it",
        holds: |c| {
            c.pod.own.contains(&c.conn.daddr) && c.nft == Fate::Through && c.ebpf == Fate::Proxy
        },
    },
    Known {
        // Crate README: the proxy's own connects to the pod over lo go to the inbound port
        // (`istio-in-redirect`) under nf_tables; the programs let the proxy through.
        name: "proxy to the pod over lo: nf_tables redirects it to the inbound capture port, \
               the programs let it through",
        holds: |c| {
            c.packet.oif == "lo"
                && (c.cfg.proxy_uids.contains(&c.conn.uid)
                    || c.cfg.proxy_gids.contains(&c.conn.gid))
                && c.nft == Fate::Inbound
                && c.ebpf == Fate::Through
        },
    },
    Known {
        // Crate README: connect() to 0.0.0.0 reaches the local host over lo
        // (nf_tables sees 127.0.0.1 and lets it through); connect4 sees 0.0.0.0, not
        // 127.0.0.0/8, and captures it with `-i '*'`: the proxy is handed 0.0.0.0:port.
        name: "connect to 0.0.0.0: the kernel sends it to the local host over lo, the programs \
               see a non-loopback destination",
        holds: |c| c.conn.daddr.is_unspecified() && c.nft == Fate::Through && c.ebpf == Fate::Proxy,
    },
];

fn nft_fate(cfg: &CaptureConfig, ruleset: &Ruleset, p: &Packet) -> Fate {
    let outcome = eval(ruleset, p, Hook::Output).expect("the compiled ruleset evaluates");
    match outcome.redirect {
        None => Fate::Through,
        Some(port) if port == cfg.proxy_port => Fate::Proxy,
        Some(port) if port == cfg.inbound_capture_port => Fate::Inbound,
        Some(port) => panic!("redirect to {port}, neither proxy nor inbound port: {p:?}"),
    }
}

// ---- Generation ----

fn v4(a: u32, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), len).expect("len <= 32"))
}

fn an_addr() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(u32::from(Ipv4Addr::new(10, 0, 0, 0))),
        Just(u32::from(Ipv4Addr::new(10, 1, 2, 3))),
        Just(u32::from(Ipv4Addr::new(127, 0, 0, 1))),
        Just(u32::from(Ipv4Addr::new(127, 0, 0, 5))),
        Just(u32::from(Ipv4Addr::new(127, 1, 2, 3))),
        Just(u32::from(Ipv4Addr::new(8, 8, 8, 8))),
        Just(0),
        any::<u32>(),
    ]
}

fn a_cidr() -> impl Strategy<Value = IpNet> {
    let len = prop_oneof![
        Just(0u8),
        Just(1),
        Just(4),
        Just(8),
        Just(16),
        Just(24),
        Just(32),
        0u8..=32
    ];
    (an_addr(), len).prop_map(|(a, l)| v4(a, l))
}

fn a_port() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(80u16),
        Just(443),
        Just(8080),
        Just(9000),
        Just(15001),
        Just(15008),
        1u16..=u16::MAX
    ]
}

fn an_id() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1000),
        Just(1337),
        Just(1338),
        Just(2000),
        any::<u32>()
    ]
}

fn ids(min: usize) -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(an_id(), min..=3)
}

fn a_config() -> impl Strategy<Value = CaptureConfig> {
    let include = prop_oneof![
        Just(CidrSelection::All),
        prop::collection::vec(a_cidr(), 0..=3).prop_map(CidrSelection::Cidrs),
    ];
    let groups = || prop::collection::vec(an_id().prop_map(GroupRef::Id), 0..=3);
    let owners = prop_oneof![
        Just(OwnerGroups::All),
        groups().prop_map(OwnerGroups::Include),
        groups().prop_map(OwnerGroups::Exclude),
    ];
    let host_lo = prop_oneof![
        Just((Ipv4Addr::LOCALHOST, 32u8)),
        Just((Ipv4Addr::new(127, 0, 0, 0), 8)),
        Just((Ipv4Addr::new(127, 0, 0, 0), 24)),
    ];
    let ports = || prop::collection::vec(a_port(), 0..=3);
    (
        (
            prop_oneof![Just(15001u16), a_port()],
            prop_oneof![Just(15008u16), a_port()],
            ids(1),
            ids(1),
            any::<bool>(),
        ),
        (
            ports(),
            ports(),
            include,
            prop::collection::vec(a_cidr(), 0..=3),
            owners,
            host_lo,
        ),
    )
        .prop_map(|(a, b)| {
            let (proxy_port, tunnel, uids, gids, tproxy) = a;
            let (ports_include, ports_exclude, include, exclude, owners, host_lo) = b;
            CaptureConfig {
                proxy_port,
                inbound_tunnel_port: tunnel,
                proxy_uids: uids,
                proxy_gids: gids,
                mode: if tproxy {
                    InterceptionMode::Tproxy
                } else {
                    InterceptionMode::Redirect
                },
                outbound_ports_include: ports_include,
                outbound_ports_exclude: ports_exclude,
                outbound_cidrs_include: include,
                outbound_cidrs_exclude: exclude,
                owner_groups: owners,
                host_ipv4_loopback_cidr: Ipv4Net::new(host_lo.0, host_lo.1).expect("valid"),
                ..CaptureConfig::sidecar()
            }
        })
        .prop_filter("a configuration the backends accept", |c| {
            c.validate().is_ok()
        })
}

fn a_pod() -> impl Strategy<Value = Pod> {
    let own = prop_oneof![
        Just(Ipv4Addr::new(10, 0, 0, 5)),
        Just(Ipv4Addr::new(10, 1, 2, 3)),
        (1u8..=126, any::<u8>(), any::<u8>(), 1u8..=254)
            .prop_map(|(a, b, c, d)| Ipv4Addr::new(a, b, c, d)),
    ];
    prop::collection::vec(own, 0..=2).prop_map(|own| Pod {
        own: own.into_iter().filter(|a| !a.is_loopback()).collect(),
    })
}

/// One connection, as indices into the pools a configuration and pod make (plus a random
/// address and port for the rest of the space).
type Pick = (Index, u32, Index, u16, Index, Index, u8);

/// Whether a TCP connect() to `a` can make a packet at all.
fn reachable(a: Ipv4Addr) -> bool {
    a.is_unspecified() || !(a.octets()[0] == 0 || a.is_multicast() || a.is_broadcast())
}

/// The edges of `net`: first, last, and one outside on each side.
fn edges(net: &Ipv4Net) -> Vec<Ipv4Addr> {
    let (lo, hi) = (u32::from(net.network()), u32::from(net.broadcast()));
    [Some(lo), Some(hi), lo.checked_sub(1), hi.checked_add(1)]
        .into_iter()
        .flatten()
        .map(Ipv4Addr::from)
        .chain([net.addr()])
        .collect()
}

fn connection(cfg: &CaptureConfig, pod: &Pod, pick: &Pick) -> Connect {
    let mut addrs: BTreeSet<Ipv4Addr> = [
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::new(127, 0, 0, 5),
        PASSTHROUGH,
        Ipv4Addr::new(127, 255, 255, 254),
        Ipv4Addr::new(8, 8, 8, 8),
        Ipv4Addr::new(10, 0, 0, 5),
    ]
    .into_iter()
    .chain(pod.own.iter().copied())
    .chain(edges(&cfg.host_ipv4_loopback_cidr))
    .collect();
    let nets = match &cfg.outbound_cidrs_include {
        CidrSelection::All => vec![],
        CidrSelection::Cidrs(c) => c.clone(),
    };
    for n in nets.iter().chain(&cfg.outbound_cidrs_exclude) {
        if let IpNet::V4(n) = n {
            addrs.extend(edges(n));
        }
    }
    let addrs: Vec<Ipv4Addr> = addrs.into_iter().filter(|a| reachable(*a)).collect();
    let ports: Vec<u16> = [22, 53, 80, 8080, 15001, 15006, 15008, 15021, 65535]
        .into_iter()
        .chain([cfg.proxy_port, cfg.inbound_tunnel_port])
        .chain(
            cfg.outbound_ports_include
                .iter()
                .chain(&cfg.outbound_ports_exclude)
                .flat_map(|p| [*p, p.saturating_add(1), p.saturating_sub(1).max(1)]),
        )
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let owner_gids = match &cfg.owner_groups {
        OwnerGroups::All => vec![],
        OwnerGroups::Include(g) | OwnerGroups::Exclude(g) => g.clone(),
    };
    let ids: Vec<u32> = [0, 1000, 1338]
        .into_iter()
        .chain(cfg.proxy_uids.iter().copied())
        .chain(cfg.proxy_gids.iter().copied())
        .chain(owner_gids.iter().filter_map(|g| match g {
            GroupRef::Id(id) => Some(*id),
            GroupRef::Name(_) => None,
        }))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let (addr_i, rand_addr, port_i, rand_port, uid_i, gid_i, bind) = pick;
    let i = addr_i.index(addrs.len() + 1);
    let daddr = match addrs.get(i) {
        Some(a) => *a,
        None if reachable(Ipv4Addr::from(*rand_addr)) => Ipv4Addr::from(*rand_addr),
        None => addrs[0],
    };
    let dport = ports
        .get(port_i.index(ports.len() + 1))
        .copied()
        .unwrap_or((*rand_port).max(1));
    // Bound to 127.0.0.6 (the proxy's passthrough) only where that source can go: over lo.
    let over_lo = daddr.is_unspecified() || daddr.is_loopback() || pod.own.contains(&daddr);
    let bound = (over_lo && bind % 4 == 0).then_some(PASSTHROUGH);
    // Three times in four an app's ids (root or 1000, neither generated as a proxy id more
    // often than any other), else any id the configuration names.
    let app = |i: &Index, bits: u8| {
        if bits != 0 {
            [0, 1000][i.index(2)]
        } else {
            *i.get(&ids)
        }
    };
    Connect {
        uid: app(uid_i, bind & 0x30),
        gid: app(gid_i, bind & 0xc0),
        daddr,
        dport,
        bound,
    }
}

/// Connections a run must contain, whatever the generator draws: one of each known class.
fn seeds() -> Vec<(CaptureConfig, Pod, Connect)> {
    let conn = |uid, daddr, dport| Connect {
        uid,
        gid: uid,
        daddr,
        dport,
        bound: None,
    };
    let pod = Pod {
        own: vec![Ipv4Addr::new(10, 0, 0, 5)],
    };
    let short = CaptureConfig {
        outbound_cidrs_include: CidrSelection::Cidrs(vec![v4(0x7f01_0203, 4)]),
        ..CaptureConfig::sidecar()
    };
    vec![
        (
            CaptureConfig::sidecar(),
            pod.clone(),
            conn(1000, Ipv4Addr::new(10, 0, 0, 5), 8080),
        ),
        (
            CaptureConfig::sidecar(),
            pod.clone(),
            conn(1337, Ipv4Addr::new(10, 0, 0, 5), 8080),
        ),
        (
            CaptureConfig::sidecar(),
            pod.clone(),
            conn(1000, Ipv4Addr::UNSPECIFIED, 8080),
        ),
        (short, pod, conn(1000, Ipv4Addr::new(127, 0, 0, 5), 8080)),
    ]
}

#[derive(Default)]
struct Tally {
    /// How often each (eBPF, nf_tables) pair was met.
    pairs: BTreeMap<(Fate, Fate), usize>,
    seen: BTreeMap<&'static str, usize>,
}

/// One configuration as both backends hold it.
struct Both<'a> {
    cfg: &'a CaptureConfig,
    maps: Maps,
    ruleset: Ruleset,
}

impl<'a> Both<'a> {
    fn new(cfg: &'a CaptureConfig) -> Self {
        Both {
            cfg,
            maps: Maps::from_config(cfg),
            ruleset: compile(cfg),
        }
    }
}

/// Compare one connection; `Err` with the whole story when the disagreement is unexplained.
fn check(both: &Both, pod: &Pod, conn: &Connect, tally: &mut Tally) -> Result<(), String> {
    let (cfg, maps) = (both.cfg, &both.maps);
    let p = packet(pod, conn);
    let ebpf = if captured(maps, conn) {
        Fate::Proxy
    } else {
        Fate::Through
    };
    let nft = nft_fate(cfg, &both.ruleset, &p);
    *tally.pairs.entry((ebpf, nft)).or_default() += 1;
    if ebpf == nft {
        return Ok(());
    }
    let case = Case {
        cfg,
        pod,
        conn,
        packet: &p,
        ebpf,
        nft,
    };
    match KNOWN.iter().find(|k| (k.holds)(&case)) {
        Some(k) => {
            *tally.seen.entry(k.name).or_default() += 1;
            Ok(())
        }
        None => Err(format!(
            "eBPF {ebpf:?}, nf_tables {nft:?}\n  connect: {conn:?}\n  packet: {p:?}\n  \
             pod: {pod:?}\n  maps: {maps:?}\n  config: {cfg:?}"
        )),
    }
}

#[test]
fn ebpf_decision_agrees_with_nf_tables() {
    let tally = RefCell::new(Tally::default());
    for (cfg, pod, conn) in seeds() {
        cfg.validate().expect("a valid seed");
        check(&Both::new(&cfg), &pod, &conn, &mut tally.borrow_mut())
            .unwrap_or_else(|e| panic!("seed: {e}"));
    }
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 512,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let picks = prop::collection::vec(any::<Pick>(), 200);
    let result = runner.run(&(a_config(), a_pod(), picks), |(cfg, pod, picks)| {
        let both = Both::new(&cfg);
        for pick in &picks {
            let conn = connection(&cfg, &pod, pick);
            check(&both, &pod, &conn, &mut tally.borrow_mut()).map_err(TestCaseError::fail)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("the eBPF decision and nf_tables disagree, unexplained: {e}");
    }
    let tally = tally.into_inner();
    eprintln!("(eBPF, nf_tables) fates: {:?}", tally.pairs);
    for k in &KNOWN {
        let n = tally.seen.get(k.name).copied().unwrap_or(0);
        eprintln!("{n:>6}  {}", k.name);
        assert!(n > 0, "documented difference never seen: {}", k.name);
    }
    // Not vacuous: both answers are met often when the two agree.
    for (fate, least) in [(Fate::Proxy, 2_000), (Fate::Through, 10_000)] {
        let n = tally.pairs.get(&(fate, fate)).copied().unwrap_or(0);
        assert!(n >= least, "only {n} connections agreed on {fate:?}");
    }
}
