//! proptest strategies for rulesets built from the model's types (every match and statement,
//! named and anonymous sets, base and regular chains), shared by the kernel round trip and the
//! codec round trip without a kernel.

use ipnet::IpNet;
use nftmesh::model::expr::{
    CtStates, Direction, IpVersion, L4Proto, MarkValue, Match, Owner, PortRange, Statement, Values,
    Verdict,
};
use nftmesh::model::ruleset::{
    BaseChain, Chain, ChainType, Family, Hook, Policy, Rule, Ruleset, Table,
};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

pub fn v4net() -> impl Strategy<Value = IpNet> + Clone {
    (any::<u32>(), 1u8..=32)
        .prop_map(|(a, p)| IpNet::new(Ipv4Addr::from(a).into(), p).unwrap().trunc())
}

pub fn v6net() -> impl Strategy<Value = IpNet> + Clone {
    (any::<u128>(), 1u8..=128)
        .prop_map(|(a, p)| IpNet::new(Ipv6Addr::from(a).into(), p).unwrap().trunc())
}

pub fn values<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + Clone + 'static,
) -> impl Strategy<Value = Values<T>> {
    prop_oneof![
        s.clone().prop_map(Values::One),
        proptest::collection::vec(s, 2..6).prop_map(Values::Set),
    ]
}

pub fn port() -> impl Strategy<Value = PortRange> + Clone {
    prop_oneof![
        (1u16..=65535).prop_map(PortRange::single),
        (1u16..30000, 1u16..30000).prop_map(|(a, d)| PortRange {
            first: a,
            last: a + d
        }),
    ]
}

pub fn ifname() -> impl Strategy<Value = String> + Clone {
    "[a-z][a-z0-9]{0,14}"
}

pub fn a_match() -> impl Strategy<Value = Match> {
    let dir = prop_oneof![Just(Direction::Src), Just(Direction::Dst)];
    let l4 = prop_oneof![Just(L4Proto::Tcp), Just(L4Proto::Udp)];
    prop_oneof![
        (dir.clone(), any::<bool>(), values(v4net())).prop_map(|(dir, negate, values)| {
            Match::Addr {
                dir,
                version: IpVersion::V4,
                negate,
                values,
            }
        }),
        (dir.clone(), any::<bool>(), values(v6net())).prop_map(|(dir, negate, values)| {
            Match::Addr {
                dir,
                version: IpVersion::V6,
                negate,
                values,
            }
        }),
        (dir, l4.clone(), any::<bool>(), values(port())).prop_map(
            |(dir, proto, negate, values)| {
                // A set mixing ranges and single ports becomes an interval set: fine. A single
                // range negated is `range !=`, positive is `>= <=`: both decode.
                Match::Port {
                    dir,
                    proto,
                    negate,
                    values,
                }
            }
        ),
        (l4, any::<bool>()).prop_map(|(proto, negate)| Match::L4Proto { negate, proto }),
        (any::<bool>(), values(ifname()))
            .prop_map(|(negate, values)| Match::Oifname { negate, values }),
        (any::<bool>(), values(ifname()))
            .prop_map(|(negate, values)| Match::Iifname { negate, values }),
        (any::<bool>(), values((0u32..100_000).prop_map(Owner::Id)))
            .prop_map(|(negate, values)| Match::SkUid { negate, values }),
        (any::<bool>(), 0u32..1000, 1u32..1000).prop_map(|(negate, a, d)| Match::SkGid {
            negate,
            values: Values::One(Owner::Range(a, a + d))
        }),
        (any::<bool>(), any::<u32>(), any::<u32>()).prop_map(|(negate, mask, value)| Match::Mark {
            negate,
            mask,
            value: value & mask
        }),
        (any::<bool>(), 1u8..16).prop_map(|(negate, bits)| Match::CtState {
            negate,
            states: CtStates(bits)
        }),
    ]
}

pub fn a_rule() -> impl Strategy<Value = Rule> {
    let stmt = prop_oneof![
        Just(Statement::Counter),
        proptest::option::of("[a-z]{1,12}").prop_map(|prefix| Statement::Log { prefix }),
        any::<u32>().prop_map(|v| Statement::MarkSet(MarkValue::Value(v))),
        (any::<u32>(), any::<u32>())
            .prop_map(|(and, xor)| Statement::CtMarkSet(MarkValue::Bitwise { and, xor })),
    ];
    let verdict = prop_oneof![
        Just(Verdict::Accept),
        Just(Verdict::Return),
        Just(Verdict::Drop),
        Just(Verdict::Jump("sub".into())),
        Just(Verdict::Goto("sub".into())),
    ];
    (
        proptest::collection::vec(a_match(), 0..4),
        proptest::collection::vec(stmt, 0..3),
        proptest::option::of(verdict),
        proptest::option::of("[a-z ]{1,20}"),
    )
        .prop_map(|(matches, mut statements, v, comment)| {
            if let Some(v) = v {
                statements.push(Statement::Verdict(v));
            }
            Rule {
                matches,
                statements,
                comment,
            }
        })
}

pub fn a_ruleset() -> impl Strategy<Value = Ruleset> {
    (
        proptest::collection::vec(a_rule(), 0..8),
        proptest::collection::vec(a_rule(), 0..4),
    )
        .prop_map(|(base_rules, sub_rules)| {
            let mut t = Table::new(Family::Inet, "nftmesh-roundtrip");
            t.chains.push(Chain {
                name: "sub".into(),
                base: None,
                rules: sub_rules
                    .into_iter()
                    .map(|mut r| {
                        // No jumps from sub to itself.
                        r.statements.retain(|s| {
                            !matches!(s, Statement::Verdict(Verdict::Jump(_) | Verdict::Goto(_)))
                        });
                        r
                    })
                    .collect(),
            });
            t.chains.push(Chain {
                name: "output".into(),
                base: Some(BaseChain {
                    kind: ChainType::Filter,
                    hook: Hook::Output,
                    priority: -150,
                    policy: Policy::Accept,
                }),
                rules: base_rules,
            });
            Ruleset { tables: vec![t] }
        })
}
