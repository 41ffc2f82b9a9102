//! Property: for random iptables rulesets in the supported grammar and random packets, the
//! xtables interpreter on the parsed rules and the model's evaluator on their translation give
//! the same outcome (verdict, NAT binding, SNAT source, TPROXY target, marks, zone); ipset
//! lookups see the same contents on both sides. The ruleset is written
//! as iptables-restore text and parsed, so the parser and the printer are exercised too.

use nftmesh_iptables::{interpret_with_sets, parse, translate, IpSets};
use nftmesh_model::eval::Packet;
use nftmesh_model::expr::{CtStates, IpVersion, L4Proto};
use nftmesh_model::ruleset::SetElement;
use nftmesh_model::{eval, Hook};
use proptest::prelude::*;
use std::net::IpAddr;

const V4_NETS: [&str; 6] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.3/32",
    "127.0.0.1/32",
    "0.0.0.0/0",
    "10.1.2.0/24",
];
const V6_NETS: [&str; 6] = [
    "fd00::/8",
    "fd00:1::/32",
    "fd00:1::3/128",
    "::1/128",
    "::/0",
    "fd00:1::/64",
];
const V4_ADDRS: [&str; 6] = [
    "10.1.2.3",
    "10.1.2.4",
    "10.1.3.1",
    "10.2.0.1",
    "127.0.0.1",
    "192.0.2.1",
];
const V6_ADDRS: [&str; 6] = [
    "fd00:1::3",
    "fd00:1::4",
    "fd00:1:0:1::1",
    "fd00:2::1",
    "::1",
    "2001:db8::1",
];
/// The ipset rules may look addresses up in, and its contents per family.
const SET: &str = "PROBES";
const V4_SET: [&str; 2] = ["10.1.2.3/32", "10.1.2.0/24"];
const V6_SET: [&str; 2] = ["fd00:1::3/128", "fd00:1::/64"];
const IFACES: [&str; 3] = ["lo", "eth0", "eth1"];
const PORTS: [u16; 6] = [22, 53, 80, 15001, 15006, 15008];
const IDS: [u32; 4] = [0, 1000, 1337, 1338];
const MARKS: [u32; 4] = [0, 1337, 1338, 0xff00];

/// The built-in chains of each table.
fn builtins(table: &str) -> &'static [&'static str] {
    match table {
        "raw" => &["PREROUTING", "OUTPUT"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        _ => &["INPUT", "FORWARD", "OUTPUT"],
    }
}

/// What a rule may contain, given its table and the one built-in chain its chain is reached from.
#[derive(Clone, Debug)]
struct Ctx {
    v6: bool,
    table: &'static str,
    hook: &'static str,
    /// User chains this chain may jump or go to.
    targets: Vec<String>,
}

type MatchSpec = (
    (usize, bool),
    Option<(usize, bool, bool)>,
    Option<(usize, bool)>,
    Option<(usize, bool, usize, usize)>,
    Option<(bool, bool, usize, bool)>,
    Option<(bool, bool, usize, bool)>,
    Option<(bool, u8)>,
    bool,
    Option<usize>,
);
/// A rule as plain values; what it means depends on the chain it lands in (see `render_rule`).
type RuleSpec = (MatchSpec, usize, usize, usize);

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    let matches = (
        (0..4usize, any::<bool>()),
        proptest::option::of((0..6usize, any::<bool>(), any::<bool>())),
        proptest::option::of((0..3usize, any::<bool>())),
        proptest::option::of((0..4usize, any::<bool>(), 0..6usize, 0..6usize)),
        proptest::option::of((any::<bool>(), any::<bool>(), 0..4usize, any::<bool>())),
        proptest::option::of((any::<bool>(), any::<bool>(), 0..4usize, any::<bool>())),
        proptest::option::of((any::<bool>(), 1..16u8)),
        any::<bool>(),
        proptest::option::of(0..2usize),
    );
    (matches, 0..24usize, 0..4usize, 0..6usize)
}

/// The iptables text of a rule spec in a chain: only what iptables allows there is written.
fn render_rule(ctx: &Ctx, spec: &RuleSpec) -> String {
    let (m, t, k, port) = *spec;
    {
        let ((p, pneg), addr, iface, ports, owner, mark, state, socket, comment) = m;
        let mut s = Vec::new();
        let proto = ["", "tcp", "udp", "icmp"][p];
        let l4_ok = (p == 1 || p == 2) && !pneg;
        if !proto.is_empty() {
            s.push(format!("{}-p {proto}", if pneg { "! " } else { "" }));
        }
        if let Some((1, src, neg)) = addr {
            // Index 1 looks the address up in the ipset PROBES instead.
            s.push(format!(
                "-m set {}--match-set {SET} {}",
                if neg { "! " } else { "" },
                if src { "src" } else { "dst" }
            ));
        } else if let Some((i, src, neg)) = addr {
            let nets = if ctx.v6 { V6_NETS } else { V4_NETS };
            // A comma list (one rule per address, as iptables expands it) when not negated and
            // the index is even.
            let net = if !neg && i % 2 == 0 {
                format!("{},{}", nets[i], nets[(i + 1) % nets.len()])
            } else {
                nets[i].to_string()
            };
            s.push(format!(
                "{}{} {net}",
                if neg { "! " } else { "" },
                if src { "-s" } else { "-d" }
            ));
        }
        if let Some((i, neg)) = iface {
            let out_hook = matches!(ctx.hook, "OUTPUT" | "POSTROUTING");
            let in_hook = matches!(ctx.hook, "PREROUTING" | "INPUT");
            let opt = if !out_hook {
                "-i"
            } else if !in_hook {
                "-o"
            } else {
                ""
            };
            if !opt.is_empty() {
                s.push(format!(
                    "{}{opt} {}",
                    if neg { "! " } else { "" },
                    IFACES[i]
                ));
            }
        }
        if let (Some((kind, neg, a, b)), true) = (ports, l4_ok) {
            let (a, b) = (PORTS[a.min(b)], PORTS[a.max(b)]);
            let n = if neg { "! " } else { "" };
            s.push(match kind {
                0 => format!("{n}--dport {a}"),
                1 => format!("-m {proto} {n}--sport {a}:{b}"),
                2 => format!("-m multiport {n}--dports {a},{b}"),
                _ => format!("-m multiport {n}--sports {a}:{b},{}", PORTS[0]),
            });
        }
        if let (Some((_, false, 3, _)), true) =
            (owner, matches!(ctx.hook, "OUTPUT" | "POSTROUTING"))
        {
            s.push("-m owner --socket-exists".into());
        } else if let (Some((uid, neg, i, range)), true) =
            (owner, matches!(ctx.hook, "OUTPUT" | "POSTROUTING"))
        {
            let id = if range {
                format!("{}-{}", IDS[i], IDS[i] + 5)
            } else {
                IDS[i].to_string()
            };
            s.push(format!(
                "-m owner {}--{}-owner {id}",
                if neg { "! " } else { "" },
                if uid { "uid" } else { "gid" }
            ));
        }
        if let Some((conn, neg, i, masked)) = mark {
            let v = if masked {
                format!("{:#x}/0xff00", MARKS[i] & 0xff00)
            } else {
                MARKS[i].to_string()
            };
            s.push(format!(
                "-m {} {}--mark {v}",
                if conn { "connmark" } else { "mark" },
                if neg { "! " } else { "" }
            ));
        }
        if let Some((neg, bits)) = state {
            let names: Vec<&str> = ["NEW", "ESTABLISHED", "RELATED", "INVALID"]
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, n)| *n)
                .collect();
            let (module, opt) = if k % 2 == 1 {
                ("state", "state")
            } else {
                ("conntrack", "ctstate")
            };
            s.push(format!(
                "-m {module} {}--{opt} {}",
                if neg { "! " } else { "" },
                names.join(",")
            ));
        }
        if socket && matches!(ctx.hook, "PREROUTING" | "INPUT") {
            s.push("-m socket --transparent".into());
        }
        if let Some(c) = comment {
            s.push(format!("-m comment --comment \"{}\"", ["a b", "x"][c]));
        }
        // Targets valid here, drawn by index.
        let mut targets: Vec<String> = vec![
            "".into(),
            "-j ACCEPT".into(),
            "-j RETURN".into(),
            "-j LOG --log-prefix \"p \"".into(),
        ];
        targets.push(format!(
            "-j MARK --set-xmark {:#x}/{:#x}",
            MARKS[k],
            MARKS[(k + 1) % 4] | 0xff
        ));
        targets.push(format!("-j MARK --or-mark {}", MARKS[k]));
        targets.push(format!("-j MARK --set-mark {}/0xff00", MARKS[k]));
        targets.push(format!("-j MARK --and-mark {:#x}", MARKS[(k + 2) % 4]));
        targets.push(format!("-j MARK --xor-mark {}", MARKS[k]));
        targets.push(format!("-j CONNMARK --set-xmark {:#x}/0xffff", MARKS[k]));
        targets.push(format!("-j CONNMARK --set-mark {}", MARKS[k]));
        targets.push("-j CONNMARK --save-mark".into());
        targets.push("-j CONNMARK --restore-mark".into());
        if ctx.table != "nat" {
            targets.push("-j DROP".into());
        }
        if ctx.table == "raw" {
            targets.push(format!("-j CT --zone {}", k + 1));
        }
        if ctx.table == "nat" && matches!(ctx.hook, "PREROUTING" | "OUTPUT") {
            targets.push(if l4_ok {
                format!("-j REDIRECT --to-ports {}", PORTS[port])
            } else {
                "-j REDIRECT".into()
            });
        }
        if ctx.table == "nat" && matches!(ctx.hook, "POSTROUTING" | "INPUT") {
            let to = if ctx.v6 { V6_ADDRS[k] } else { V4_ADDRS[k] };
            targets.push(format!("-j SNAT --to-source {to}"));
        }
        if ctx.table == "mangle" && ctx.hook == "PREROUTING" && l4_ok {
            let ip = if ctx.v6 { "::1" } else { "127.0.0.1" };
            targets.push(format!("-j TPROXY --on-port {} --on-ip {ip}", PORTS[port]));
            targets.push(format!(
                "-j TPROXY --on-port {} --tproxy-mark {:#x}/{:#x}",
                PORTS[port],
                MARKS[k],
                MARKS[(k + 1) % 4] | 1
            ));
        }
        for c in &ctx.targets {
            targets.push(format!("-j {c}"));
            targets.push(format!("-g {c}"));
        }
        let t = &targets[t % targets.len()];
        if !t.is_empty() {
            s.push(t.clone());
        }
        s.join(" ")
    }
}

/// A table as plain values: drop policies of the built-in chains, the owner (built-in chain
/// index) of each user chain, and rules for up to 8 chains (built-ins first, then user chains).
type TableSpec = (Vec<bool>, Vec<usize>, Vec<Vec<RuleSpec>>);

fn table_spec() -> impl Strategy<Value = TableSpec> {
    (
        proptest::collection::vec(any::<bool>(), 5),
        proptest::collection::vec(0..5usize, 0..4),
        proptest::collection::vec(proptest::collection::vec(rule_spec(), 0..5), 8),
    )
}

/// The iptables-restore text of one table. User chain `i` is only reached from its owner and
/// only jumps to user chains `j > i` of the same owner, so the hook restrictions are known.
fn render_table(v6: bool, name: &'static str, spec: &TableSpec) -> String {
    let (drop_policy, owners, rules) = spec;
    let b = builtins(name);
    let users: Vec<(String, &'static str)> = owners
        .iter()
        .enumerate()
        .map(|(i, o)| (format!("U{i}"), b[o % b.len()]))
        .collect();
    let mut chains: Vec<(String, Ctx)> = Vec::new();
    for hook in b {
        let targets = users
            .iter()
            .filter(|(_, o)| o == hook)
            .map(|(n, _)| n.clone())
            .collect();
        chains.push((
            hook.to_string(),
            Ctx {
                v6,
                table: name,
                hook,
                targets,
            },
        ));
    }
    for (i, (n, owner)) in users.iter().enumerate() {
        let targets = users[i + 1..]
            .iter()
            .filter(|(_, o)| o == owner)
            .map(|(n, _)| n.clone())
            .collect();
        chains.push((
            n.clone(),
            Ctx {
                v6,
                table: name,
                hook: owner,
                targets,
            },
        ));
    }
    let mut t = format!("*{name}\n");
    for (i, hook) in b.iter().enumerate() {
        let pol = if drop_policy[i] && name != "nat" {
            "DROP"
        } else {
            "ACCEPT"
        };
        t.push_str(&format!(":{hook} {pol} [0:0]\n"));
    }
    for (n, _) in &users {
        t.push_str(&format!(":{n} - [0:0]\n"));
    }
    for ((n, ctx), specs) in chains.iter().zip(rules) {
        for r in specs {
            let r = render_rule(ctx, r);
            t.push_str(format!("-A {n} {r}").trim_end());
            t.push('\n');
        }
    }
    t.push_str("COMMIT\n");
    t
}

/// Packets as plain values: hook, (proto, saddr, daddr, sport, dport, device),
/// (uid, gid, mark, ct mark, ct state, transparent socket).
type PacketSpec = (
    usize,
    (usize, usize, usize, usize, usize, usize),
    (usize, usize, usize, usize, usize, bool),
);

fn packet_spec() -> impl Strategy<Value = PacketSpec> {
    (
        0..5usize,
        (
            0..3usize,
            0..6usize,
            0..6usize,
            0..6usize,
            0..6usize,
            0..3usize,
        ),
        (
            0..4usize,
            0..4usize,
            0..4usize,
            0..4usize,
            0..4usize,
            any::<bool>(),
        ),
    )
}

fn render_packet(v6: bool, spec: &PacketSpec) -> (Hook, Packet) {
    let (h, (p, s, d, sp, dp, dev), (uid, gid, mark, ctmark, st, tr)) = *spec;
    {
        let hook = Hook::ALL[h];
        let addrs = if v6 { V6_ADDRS } else { V4_ADDRS };
        let a = |i: usize| addrs[i].parse::<IpAddr>().unwrap();
        let local = matches!(hook, Hook::Output | Hook::Postrouting);
        let mut pkt = if local {
            Packet::local_tcp(
                IDS[uid] + 2 * (uid as u32 % 2),
                IDS[gid],
                a(s),
                a(d),
                PORTS[dp],
                IFACES[dev],
            )
        } else {
            Packet::incoming_tcp(a(s), a(d), PORTS[dp], IFACES[dev])
        };
        if hook == Hook::Forward {
            pkt.oif = "eth1".into();
        }
        pkt.l4proto = [L4Proto::Tcp, L4Proto::Udp, L4Proto::Icmp][p];
        pkt.sport = PORTS[sp];
        pkt.mark = MARKS[mark];
        pkt.ct_mark = MARKS[ctmark];
        pkt.ct_state = [
            CtStates::NEW,
            CtStates::ESTABLISHED,
            CtStates::RELATED,
            CtStates::INVALID,
        ][st];
        pkt.socket_transparent = tr;
        (hook, pkt)
    }
}

const TABLES: [&str; 4] = ["raw", "mangle", "nat", "filter"];

type CaseSpec = (bool, Vec<Option<TableSpec>>, Vec<PacketSpec>);

fn case() -> impl Strategy<Value = CaseSpec> {
    (
        any::<bool>(),
        proptest::collection::vec(proptest::option::of(table_spec()), 4),
        proptest::collection::vec(packet_spec(), 24),
    )
}

fn render_case(spec: &CaseSpec) -> (bool, String, Vec<(Hook, Packet)>) {
    let (v6, tables, packets) = spec;
    let text: String = TABLES
        .iter()
        .zip(tables)
        .filter_map(|(n, t)| t.as_ref().map(|t| render_table(*v6, n, t)))
        .collect();
    let packets = packets.iter().map(|p| render_packet(*v6, p)).collect();
    (*v6, text, packets)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn interpreter_equals_evaluator_of_translation(spec in case()) {
        let (v6, text, packets) = render_case(&spec);
        let family = if v6 { IpVersion::V6 } else { IpVersion::V4 };
        let rules = parse(&text, family).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let printed = rules.to_string();
        let again = parse(&printed, family).map_err(|e| TestCaseError::fail(format!("reparse: {e}\n{printed}")))?;
        prop_assert_eq!(again.to_string(), printed.clone());
        let mut nft = translate(&rules).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let members: Vec<ipnet::IpNet> = (if v6 { V6_SET } else { V4_SET })
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        for set in nft.tables.iter_mut().flat_map(|t| &mut t.sets).filter(|s| s.name == SET) {
            set.elements = members.iter().map(|n| SetElement::Prefix(*n)).collect();
        }
        let sets = IpSets::from([(SET.to_string(), members.clone())]);
        for (hook, p) in &packets {
            let a = interpret_with_sets(std::slice::from_ref(&rules), p, *hook, &sets).unwrap();
            let b = eval(&nft, p, *hook).unwrap();
            prop_assert_eq!(&a, &b, "{:?} {:?}\n{}", hook, p, text);
        }
    }
}
