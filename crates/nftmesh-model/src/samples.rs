//! One sample of every [`Match`] and [`Statement`] variant with its `nft` rendering, for
//! table-driven tests here and in the crates that encode, decode and translate the model.
//!
//! [`variant_of_match`] and [`variant_of_statement`] are exhaustive `match`es: adding a variant
//! fails to compile until it has a name here, and the coverage tests fail until it has a
//! sample.

use crate::expr::{
    CtStates, Direction, IpVersion, L4Proto, MarkValue, Match, Owner, PortRange, Statement, Values,
    Verdict,
};

/// The variant name of a match.
pub fn variant_of_match(m: &Match) -> &'static str {
    match m {
        Match::Nfproto { .. } => "Nfproto",
        Match::L4Proto { .. } => "L4Proto",
        Match::Addr { .. } => "Addr",
        Match::Port { .. } => "Port",
        Match::Iifname { .. } => "Iifname",
        Match::Oifname { .. } => "Oifname",
        Match::SkUid { .. } => "SkUid",
        Match::SkGid { .. } => "SkGid",
        Match::Mark { .. } => "Mark",
        Match::CtMark { .. } => "CtMark",
        Match::CtState { .. } => "CtState",
        Match::SocketTransparent => "SocketTransparent",
    }
}

/// Every match variant's name.
pub const MATCH_VARIANTS: [&str; 12] = [
    "Nfproto",
    "L4Proto",
    "Addr",
    "Port",
    "Iifname",
    "Oifname",
    "SkUid",
    "SkGid",
    "Mark",
    "CtMark",
    "CtState",
    "SocketTransparent",
];

/// The variant name of a statement.
pub fn variant_of_statement(s: &Statement) -> &'static str {
    match s {
        Statement::Counter => "Counter",
        Statement::Log { .. } => "Log",
        Statement::MarkSet(_) => "MarkSet",
        Statement::CtMarkSet(_) => "CtMarkSet",
        Statement::CtZoneSet(_) => "CtZoneSet",
        Statement::Redirect { .. } => "Redirect",
        Statement::Tproxy { .. } => "Tproxy",
        Statement::Snat { .. } => "Snat",
        Statement::Verdict(_) => "Verdict",
    }
}

/// Every statement variant's name.
pub const STATEMENT_VARIANTS: [&str; 9] = [
    "Counter",
    "Log",
    "MarkSet",
    "CtMarkSet",
    "CtZoneSet",
    "Redirect",
    "Tproxy",
    "Snat",
    "Verdict",
];

fn net(s: &str) -> ipnet::IpNet {
    s.parse()
        .unwrap_or_else(|_| unreachable!("sample prefixes are valid"))
}

/// Sample matches with the text [`crate::render::render_match`] gives them.
pub fn matches() -> Vec<(Match, &'static str)> {
    vec![
        (
            Match::Nfproto {
                version: IpVersion::V6,
            },
            "meta nfproto ipv6",
        ),
        (
            Match::L4Proto {
                negate: false,
                proto: L4Proto::Tcp,
            },
            "meta l4proto tcp",
        ),
        (
            Match::L4Proto {
                negate: true,
                proto: L4Proto::Udp,
            },
            "meta l4proto != udp",
        ),
        (
            Match::Addr {
                dir: Direction::Src,
                version: IpVersion::V4,
                negate: false,
                values: Values::One(net("127.0.0.6/32")),
            },
            "ip saddr 127.0.0.6/32",
        ),
        (
            Match::Addr {
                dir: Direction::Dst,
                version: IpVersion::V6,
                negate: true,
                values: Values::Set(vec![net("2001:db8::/32"), net("fd00::/8")]),
            },
            "ip6 daddr != { 2001:db8::/32, fd00::/8 }",
        ),
        (
            Match::Port {
                dir: Direction::Dst,
                proto: L4Proto::Tcp,
                negate: true,
                values: Values::Set(vec![
                    PortRange::single(53),
                    PortRange {
                        first: 15000,
                        last: 15010,
                    },
                ]),
            },
            "tcp dport != { 53, 15000-15010 }",
        ),
        (
            Match::Port {
                dir: Direction::Src,
                proto: L4Proto::Udp,
                negate: false,
                values: Values::One(PortRange::single(15053)),
            },
            "udp sport 15053",
        ),
        (
            Match::Iifname {
                negate: false,
                values: Values::One("lo".into()),
            },
            "iifname \"lo\"",
        ),
        (
            Match::Oifname {
                negate: true,
                values: Values::Set(vec!["eth0".into(), "eth1".into()]),
            },
            "oifname != { \"eth0\", \"eth1\" }",
        ),
        (
            Match::SkUid {
                negate: false,
                values: Values::One(Owner::Id(1337)),
            },
            "meta skuid 1337",
        ),
        (
            Match::SkGid {
                negate: true,
                values: Values::Set(vec![Owner::Id(1), Owner::Range(100, 200)]),
            },
            "meta skgid != { 1, 100-200 }",
        ),
        (
            Match::Mark {
                negate: false,
                mask: u32::MAX,
                value: 1337,
            },
            "meta mark 0x539",
        ),
        (
            Match::Mark {
                negate: true,
                mask: 0xff,
                value: 0x3a,
            },
            "meta mark and 0xff != 0x3a",
        ),
        (
            Match::CtMark {
                negate: false,
                mask: u32::MAX,
                value: 1337,
            },
            "ct mark 0x539",
        ),
        (
            Match::CtState {
                negate: false,
                states: CtStates::ESTABLISHED.union(CtStates::RELATED),
            },
            "ct state established,related",
        ),
        (
            Match::CtState {
                negate: true,
                states: CtStates::INVALID,
            },
            "ct state != invalid",
        ),
        (Match::SocketTransparent, "socket transparent 1"),
    ]
}

/// Sample statements with the text [`crate::render::render_statement`] gives them.
pub fn statements() -> Vec<(Statement, &'static str)> {
    vec![
        (Statement::Counter, "counter"),
        (
            Statement::Log {
                prefix: Some("nftmesh: ".into()),
            },
            "log prefix \"nftmesh: \"",
        ),
        (
            Statement::MarkSet(MarkValue::Value(1338)),
            "meta mark set 0x53a",
        ),
        (
            Statement::MarkSet(MarkValue::Bitwise {
                and: 0xffff_0000,
                xor: 0x539,
            }),
            "meta mark set meta mark and 0xffff0000 xor 0x539",
        ),
        (
            Statement::MarkSet(MarkValue::FromCtMark),
            "meta mark set ct mark",
        ),
        (
            Statement::CtMarkSet(MarkValue::FromMark),
            "ct mark set meta mark",
        ),
        (Statement::CtZoneSet(2), "ct zone set 2"),
        (
            Statement::Redirect { port: Some(15001) },
            "redirect to :15001",
        ),
        (
            Statement::Tproxy {
                version: Some(IpVersion::V6),
                addr: None,
                port: Some(15006),
            },
            "tproxy ip6 to :15006",
        ),
        (
            Statement::Snat {
                version: Some(IpVersion::V4),
                addr: "169.254.7.127".parse().unwrap_or_else(|_| unreachable!()),
            },
            "snat ip to 169.254.7.127",
        ),
        (
            Statement::Snat {
                version: Some(IpVersion::V6),
                addr: "e9ac:1e77:90ca:399f:4d6d:ece2:2f9b:3164"
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
            },
            "snat ip6 to e9ac:1e77:90ca:399f:4d6d:ece2:2f9b:3164",
        ),
        (Statement::Verdict(Verdict::Accept), "accept"),
        (
            Statement::Verdict(Verdict::Jump("istio-output".into())),
            "jump istio-output",
        ),
        (
            Statement::Verdict(Verdict::Goto("istio-output".into())),
            "goto istio-output",
        ),
        (Statement::Verdict(Verdict::Return), "return"),
        (Statement::Verdict(Verdict::Drop), "drop"),
    ]
}
