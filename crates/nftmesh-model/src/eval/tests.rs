use super::*;
use crate::expr::{CtStates, Direction, IpVersion, L4Proto, MarkValue, Match, Owner, PortRange};
use crate::ruleset::{
    priority, Chain, ChainType, Family, Hook, Policy, Rule, Set, SetKeyType, Table,
};

fn v(stmts: Vec<Statement>) -> Rule {
    Rule::new(vec![], stmts)
}

fn when(m: Match, stmts: Vec<Statement>) -> Rule {
    Rule::new(vec![m], stmts)
}

fn mark_set(x: u32) -> Statement {
    Statement::MarkSet(MarkValue::Value(x))
}

fn verdict(x: Verdict) -> Statement {
    Statement::Verdict(x)
}

fn jump(c: &str) -> Statement {
    verdict(Verdict::Jump(c.into()))
}

fn chain(name: &str, base: Option<(ChainType, Hook, i32)>, rules: Vec<Rule>) -> Chain {
    let mut c = match base {
        Some((k, h, p)) => Chain::base(name, k, h, p),
        None => Chain::regular(name),
    };
    c.rules = rules;
    c
}

fn table(family: Family, name: &str, chains: Vec<Chain>) -> Table {
    Table {
        family,
        name: name.into(),
        chains,
        sets: vec![],
    }
}

fn out_filter(rules: Vec<Rule>) -> Chain {
    chain("out", Some((ChainType::Filter, Hook::Output, 0)), rules)
}

fn rs(tables: Vec<Table>) -> Ruleset {
    Ruleset { tables }
}

fn one(rules: Vec<Rule>) -> Ruleset {
    rs(vec![table(Family::Inet, "t", vec![out_filter(rules)])])
}

fn one_with(rules: Vec<Rule>, extra: Vec<Chain>) -> Ruleset {
    let mut chains = vec![out_filter(rules)];
    chains.extend(extra);
    rs(vec![table(Family::Inet, "t", chains)])
}

fn pkt4() -> Packet {
    Packet::local_tcp(
        1000,
        1000,
        "10.0.0.1".parse().unwrap(),
        "10.0.0.2".parse().unwrap(),
        80,
        "eth0",
    )
}

fn pkt6() -> Packet {
    Packet::local_tcp(
        1000,
        1000,
        "fd00::1".parse().unwrap(),
        "fd00::2".parse().unwrap(),
        80,
        "eth0",
    )
}

fn out(r: &Ruleset, p: &Packet) -> Outcome {
    eval(r, p, Hook::Output).unwrap()
}

/// Evaluate `m` alone: whether a rule with it sets mark 1.
fn holds(m: Match, p: &Packet) -> bool {
    out(&one(vec![when(m, vec![mark_set(1)])]), p).mark == 1
}

#[test]
fn empty_ruleset_accepts_unchanged() {
    let o = out(&rs(vec![]), &pkt4());
    assert_eq!(o.verdict, FinalVerdict::Accept);
    assert_eq!(
        (o.mark, o.redirect, o.tproxy, o.ct_zone),
        (0, None, None, None)
    );
}

#[test]
fn base_chains_run_in_priority_order_across_tables() {
    // The later table has the lower priority, so it runs first; the other sees its mark.
    let late = table(
        Family::Inet,
        "late",
        vec![chain(
            "o",
            Some((ChainType::Filter, Hook::Output, 10)),
            vec![when(mark(false, 7), vec![mark_set(8)])],
        )],
    );
    let early = table(
        Family::Inet,
        "early",
        vec![chain(
            "o",
            Some((ChainType::Filter, Hook::Output, -10)),
            vec![v(vec![mark_set(7)])],
        )],
    );
    assert_eq!(out(&rs(vec![late.clone(), early.clone()]), &pkt4()).mark, 8);
    // Swapping priorities: the mark-7 check runs before the mark is set.
    let mut late2 = late;
    late2.chains[0].base.as_mut().unwrap().priority = -20;
    assert_eq!(out(&rs(vec![late2, early]), &pkt4()).mark, 7);
}

fn mark(negate: bool, value: u32) -> Match {
    Match::Mark {
        negate,
        mask: u32::MAX,
        value,
    }
}

#[test]
fn accept_ends_one_base_chain_only() {
    let a = table(
        Family::Inet,
        "a",
        vec![chain(
            "o",
            Some((ChainType::Filter, Hook::Output, 0)),
            vec![v(vec![verdict(Verdict::Accept)]), v(vec![mark_set(1)])],
        )],
    );
    let b = table(
        Family::Inet,
        "b",
        vec![chain(
            "o",
            Some((ChainType::Filter, Hook::Output, 5)),
            vec![v(vec![Statement::CtZoneSet(3)])],
        )],
    );
    let o = out(&rs(vec![a, b]), &pkt4());
    assert_eq!(o.mark, 0, "rules after accept do not run");
    assert_eq!(o.ct_zone, Some(3), "the next base chain runs");
    assert_eq!(o.verdict, FinalVerdict::Accept);
}

#[test]
fn drop_ends_everything() {
    let a = table(
        Family::Inet,
        "a",
        vec![chain(
            "o",
            Some((ChainType::Filter, Hook::Output, 0)),
            vec![v(vec![verdict(Verdict::Drop)])],
        )],
    );
    let b = table(
        Family::Inet,
        "b",
        vec![chain(
            "o",
            Some((ChainType::Filter, Hook::Output, 5)),
            vec![v(vec![mark_set(9)])],
        )],
    );
    let o = out(&rs(vec![a, b]), &pkt4());
    assert_eq!(o.verdict, FinalVerdict::Drop);
    assert_eq!(o.mark, 0);
}

#[test]
fn chain_end_and_return_apply_the_policy() {
    let mut r = one(vec![
        when(mark(false, 0), vec![verdict(Verdict::Return)]),
        v(vec![mark_set(5)]),
    ]);
    r.tables[0].chains[0].base.as_mut().unwrap().policy = Policy::Drop;
    let o = out(&r, &pkt4());
    assert_eq!(
        (o.verdict, o.mark),
        (FinalVerdict::Drop, 0),
        "return at base applies policy"
    );
    let mut p = pkt4();
    p.mark = 3;
    let o = out(&r, &p);
    assert_eq!(
        (o.verdict, o.mark),
        (FinalVerdict::Drop, 5),
        "end of base chain applies policy"
    );
}

#[test]
fn jump_returns_to_the_next_rule_and_goto_does_not() {
    let sub = chain("sub", None, vec![v(vec![Statement::CtZoneSet(1)])]);
    let r = one_with(
        vec![v(vec![jump("sub")]), v(vec![mark_set(2)])],
        vec![sub.clone()],
    );
    let o = out(&r, &pkt4());
    assert_eq!(
        (o.ct_zone, o.mark),
        (Some(1), 2),
        "implicit return after jump"
    );

    let r = one_with(
        vec![v(vec![jump("mid")]), v(vec![mark_set(2)])],
        vec![
            chain(
                "mid",
                None,
                vec![
                    v(vec![verdict(Verdict::Goto("sub".into()))]),
                    v(vec![mark_set(99)]),
                ],
            ),
            sub,
        ],
    );
    let o = out(&r, &pkt4());
    assert_eq!(o.ct_zone, Some(1));
    assert_eq!(
        o.mark, 2,
        "goto's end returns to mid's caller, skipping the rest of mid"
    );
}

#[test]
fn explicit_return_pops_one_frame() {
    let r = one_with(
        vec![v(vec![jump("sub")]), v(vec![Statement::CtZoneSet(4)])],
        vec![chain(
            "sub",
            None,
            vec![v(vec![verdict(Verdict::Return)]), v(vec![mark_set(1)])],
        )],
    );
    let o = out(&r, &pkt4());
    assert_eq!((o.mark, o.ct_zone), (0, Some(4)));
}

#[test]
fn bad_jumps_are_errors() {
    let r = one(vec![v(vec![jump("nowhere")])]);
    assert_eq!(
        eval(&r, &pkt4(), Hook::Output).unwrap_err().to_string(),
        "table t: chain out jumps to unknown chain nowhere"
    );
    let r = one(vec![v(vec![jump("out")])]);
    assert_eq!(
        eval(&r, &pkt4(), Hook::Output).unwrap_err().to_string(),
        "table t: chain out jumps to base chain out"
    );
    let r = one_with(
        vec![v(vec![jump("loop")])],
        vec![chain("loop", None, vec![v(vec![jump("loop")])])],
    );
    assert_eq!(
        eval(&r, &pkt4(), Hook::Output).unwrap_err().to_string(),
        "table t: jump stack overflow at chain loop"
    );
    let r = one(vec![when(
        Match::Addr {
            dir: Direction::Dst,
            version: IpVersion::V4,
            negate: false,
            values: Values::Named("missing".into()),
        },
        vec![],
    )]);
    assert_eq!(
        eval(&r, &pkt4(), Hook::Output).unwrap_err().to_string(),
        "table t: unknown set @missing"
    );
}

fn nat_table(name: &str, prio: i32, port: u16) -> Table {
    table(
        Family::Inet,
        name,
        vec![chain(
            "o",
            Some((ChainType::Nat, Hook::Output, prio)),
            vec![v(vec![
                Statement::Redirect { port: Some(port) },
                mark_set(1),
            ])],
        )],
    )
}

#[test]
fn redirect_binds_accepts_and_the_first_binding_wins() {
    let r = rs(vec![nat_table("b", 10, 2000), nat_table("a", -10, 1000)]);
    let o = out(&r, &pkt4());
    assert_eq!(
        o.redirect,
        Some(1000),
        "lower priority binds first, the later one is skipped"
    );
    assert_eq!(o.mark, 0, "redirect ends the rule and chain");
    assert_eq!(o.verdict, FinalVerdict::Accept);
}

#[test]
fn nat_chains_see_only_new_connections() {
    let r = rs(vec![nat_table("a", -100, 1000)]);
    let mut p = pkt4();
    p.ct_state = CtStates::ESTABLISHED;
    assert_eq!(out(&r, &p).redirect, None);
    p.ct_state = CtStates::NEW;
    assert_eq!(out(&r, &p).redirect, Some(1000));
}

#[test]
fn redirect_without_port_keeps_the_destination_port() {
    let r = rs(vec![table(
        Family::Inet,
        "n",
        vec![chain(
            "o",
            Some((ChainType::Nat, Hook::Output, 0)),
            vec![v(vec![Statement::Redirect { port: None }])],
        )],
    )]);
    assert_eq!(out(&r, &pkt4()).redirect, Some(80));
}

#[test]
fn table_families_cover_their_versions() {
    let t = |f| {
        rs(vec![table(
            f,
            "t",
            vec![out_filter(vec![v(vec![mark_set(1)])])],
        )])
    };
    assert_eq!(out(&t(Family::Ip), &pkt4()).mark, 1);
    assert_eq!(out(&t(Family::Ip), &pkt6()).mark, 0);
    assert_eq!(out(&t(Family::Ip6), &pkt6()).mark, 1);
    assert_eq!(out(&t(Family::Ip6), &pkt4()).mark, 0);
    assert_eq!(out(&t(Family::Inet), &pkt6()).mark, 1);
    assert_eq!(
        eval(&t(Family::Inet), &pkt4(), Hook::Prerouting)
            .unwrap()
            .mark,
        0,
        "other hooks do not run"
    );
}

fn addr(dir: Direction, version: IpVersion, negate: bool, values: Values<IpNet>) -> Match {
    Match::Addr {
        dir,
        version,
        negate,
        values,
    }
}

#[test]
fn address_matches_carry_their_version_dependency() {
    let net: IpNet = "10.0.0.0/24".parse().unwrap();
    assert!(holds(
        addr(Direction::Dst, IpVersion::V4, false, Values::One(net)),
        &pkt4()
    ));
    assert!(!holds(
        addr(Direction::Dst, IpVersion::V4, true, Values::One(net)),
        &pkt4()
    ));
    assert!(
        !holds(
            addr(Direction::Dst, IpVersion::V4, true, Values::One(net)),
            &pkt6()
        ),
        "a negated ip match does not hold for IPv6"
    );
    let other: IpNet = "10.9.0.0/16".parse().unwrap();
    assert!(holds(
        addr(
            Direction::Src,
            IpVersion::V4,
            false,
            Values::Set(vec![other, net])
        ),
        &pkt4()
    ));
    let v6: IpNet = "fd00::/64".parse().unwrap();
    assert!(holds(
        addr(Direction::Src, IpVersion::V6, false, Values::One(v6)),
        &pkt6()
    ));
    assert!(!holds(
        addr(Direction::Src, IpVersion::V6, false, Values::One(v6)),
        &pkt4()
    ));
}

fn dport(proto: L4Proto, negate: bool, values: Values<PortRange>) -> Match {
    Match::Port {
        dir: Direction::Dst,
        proto,
        negate,
        values,
    }
}

#[test]
fn port_matches_carry_their_protocol_dependency() {
    let p80 = Values::One(PortRange::single(80));
    assert!(holds(dport(L4Proto::Tcp, false, p80.clone()), &pkt4()));
    assert!(!holds(dport(L4Proto::Udp, false, p80.clone()), &pkt4()));
    assert!(
        !holds(dport(L4Proto::Udp, true, p80.clone()), &pkt4()),
        "udp dport != x never holds for TCP"
    );
    assert!(holds(
        dport(
            L4Proto::Tcp,
            false,
            Values::Set(vec![
                PortRange::single(1),
                PortRange {
                    first: 70,
                    last: 90
                }
            ])
        ),
        &pkt4()
    ));
    assert!(holds(
        Match::Port {
            dir: Direction::Src,
            proto: L4Proto::Tcp,
            negate: false,
            values: Values::One(PortRange::single(40000)),
        },
        &pkt4()
    ));
}

#[test]
fn l4proto_and_nfproto() {
    assert!(holds(
        Match::L4Proto {
            negate: false,
            proto: L4Proto::Tcp
        },
        &pkt4()
    ));
    assert!(holds(
        Match::L4Proto {
            negate: true,
            proto: L4Proto::Udp
        },
        &pkt4()
    ));
    assert!(holds(
        Match::Nfproto {
            version: IpVersion::V6
        },
        &pkt6()
    ));
    assert!(!holds(
        Match::Nfproto {
            version: IpVersion::V6
        },
        &pkt4()
    ));
}

#[test]
fn interface_names_compare_empty_when_absent() {
    let oif = |n: &str, negate| Match::Oifname {
        negate,
        values: Values::One(n.into()),
    };
    let iif = |n: &str, negate| Match::Iifname {
        negate,
        values: Values::One(n.into()),
    };
    assert!(holds(oif("eth0", false), &pkt4()));
    assert!(!holds(oif("lo", false), &pkt4()));
    assert!(holds(oif("lo", true), &pkt4()));
    assert!(
        !holds(iif("eth0", false), &pkt4()),
        "no input interface on output"
    );
    assert!(holds(iif("eth0", true), &pkt4()));
}

#[test]
fn owner_matches_never_hold_without_a_socket() {
    let uid = |negate, o| Match::SkUid {
        negate,
        values: Values::One(o),
    };
    let gid = |negate, o| Match::SkGid {
        negate,
        values: Values::One(o),
    };
    assert!(holds(uid(false, Owner::Id(1000)), &pkt4()));
    assert!(holds(uid(true, Owner::Id(1337)), &pkt4()));
    assert!(holds(gid(false, Owner::Range(900, 1100)), &pkt4()));
    assert!(
        !holds(gid(false, Owner::Name("app".into())), &pkt4()),
        "names match no id"
    );
    let incoming = Packet::incoming_tcp(
        "10.0.0.9".parse().unwrap(),
        "10.0.0.1".parse().unwrap(),
        80,
        "eth0",
    );
    assert!(!holds(uid(true, Owner::Id(1337)), &incoming));
    assert!(!holds(gid(true, Owner::Id(1337)), &incoming));
}

#[test]
fn mark_ct_mark_and_ct_state() {
    let mut p = pkt4();
    p.mark = 0x1f;
    p.ct_mark = 0x100;
    assert!(holds(
        Match::Mark {
            negate: false,
            mask: 0x0f,
            value: 0x0f
        },
        &p
    ));
    assert!(!holds(
        Match::Mark {
            negate: false,
            mask: u32::MAX,
            value: 0x0f
        },
        &p
    ));
    assert!(holds(
        Match::Mark {
            negate: true,
            mask: u32::MAX,
            value: 0x0f
        },
        &p
    ));
    assert!(holds(
        Match::CtMark {
            negate: false,
            mask: u32::MAX,
            value: 0x100
        },
        &p
    ));
    assert!(!holds(
        Match::CtMark {
            negate: true,
            mask: u32::MAX,
            value: 0x100
        },
        &p
    ));
    let est_rel = CtStates::ESTABLISHED.union(CtStates::RELATED);
    assert!(!holds(
        Match::CtState {
            negate: false,
            states: est_rel
        },
        &p
    ));
    assert!(holds(
        Match::CtState {
            negate: true,
            states: est_rel
        },
        &p
    ));
    p.ct_state = CtStates::RELATED;
    assert!(holds(
        Match::CtState {
            negate: false,
            states: est_rel
        },
        &p
    ));
}

#[test]
fn socket_transparent() {
    let mut p = pkt4();
    assert!(!holds(Match::SocketTransparent, &p));
    p.socket_transparent = true;
    assert!(holds(Match::SocketTransparent, &p));
}

#[test]
fn named_sets_are_looked_up() {
    let mut r = one(vec![
        when(
            addr(
                Direction::Dst,
                IpVersion::V4,
                false,
                Values::Named("dst".into()),
            ),
            vec![mark_set(1)],
        ),
        when(
            dport(L4Proto::Tcp, false, Values::Named("ports".into())),
            vec![Statement::CtZoneSet(2)],
        ),
        when(
            Match::Oifname {
                negate: false,
                values: Values::Named("ifs".into()),
            },
            vec![Statement::CtMarkSet(MarkValue::Value(3))],
        ),
        when(
            Match::SkUid {
                negate: true,
                values: Values::Named("uids".into()),
            },
            vec![verdict(Verdict::Drop)],
        ),
    ]);
    r.tables[0].sets = vec![
        Set {
            name: "dst".into(),
            key_type: SetKeyType::Ipv4Addr,
            interval: true,
            elements: vec![SetElement::Prefix("10.0.0.0/30".parse().unwrap())],
        },
        Set {
            name: "ports".into(),
            key_type: SetKeyType::InetService,
            interval: true,
            elements: vec![SetElement::Range(79, 81)],
        },
        Set {
            name: "ifs".into(),
            key_type: SetKeyType::Ifname,
            interval: false,
            elements: vec![SetElement::Name("eth0".into())],
        },
        Set {
            name: "uids".into(),
            key_type: SetKeyType::Uid,
            interval: false,
            elements: vec![SetElement::Range(1000, 1000)],
        },
    ];
    let o = out(&r, &pkt4());
    assert_eq!(
        (o.mark, o.ct_zone, o.ct_mark, o.verdict),
        (1, Some(2), 3, FinalVerdict::Accept)
    );
}

#[test]
fn mark_statements() {
    let mut p = pkt4();
    p.mark = 0xf0;
    p.ct_mark = 0x5;
    let o = out(
        &one(vec![v(vec![Statement::MarkSet(MarkValue::Bitwise {
            and: 0x0f,
            xor: 0x3,
        })])]),
        &p,
    );
    assert_eq!(o.mark, 0x3);
    let o = out(
        &one(vec![v(vec![Statement::MarkSet(MarkValue::FromCtMark)])]),
        &p,
    );
    assert_eq!(o.mark, 0x5);
    let o = out(
        &one(vec![v(vec![Statement::CtMarkSet(MarkValue::FromMark)])]),
        &p,
    );
    assert_eq!(o.ct_mark, 0xf0);
    let o = out(
        &one(vec![v(vec![Statement::CtMarkSet(MarkValue::Bitwise {
            and: 0xff,
            xor: 0x10,
        })])]),
        &p,
    );
    assert_eq!(o.ct_mark, 0x15);
    let o = out(
        &one(vec![v(vec![Statement::MarkSet(MarkValue::FromMark)])]),
        &p,
    );
    assert_eq!(o.mark, 0xf0);
}

#[test]
fn tproxy_records_and_the_rule_goes_on() {
    let r = rs(vec![table(
        Family::Inet,
        "m",
        vec![chain(
            "p",
            Some((ChainType::Filter, Hook::Prerouting, priority::MANGLE)),
            vec![v(vec![
                Statement::Tproxy {
                    version: Some(IpVersion::V4),
                    addr: None,
                    port: Some(15006),
                },
                mark_set(1337),
                Statement::Counter,
                Statement::Log {
                    prefix: Some("x".into()),
                },
                verdict(Verdict::Accept),
            ])],
        )],
    )]);
    let p = Packet::incoming_tcp(
        "10.0.0.9".parse().unwrap(),
        "10.0.0.1".parse().unwrap(),
        80,
        "eth0",
    );
    let o = eval(&r, &p, Hook::Prerouting).unwrap();
    assert_eq!(
        o.tproxy,
        Some(TproxyTarget {
            addr: None,
            port: Some(15006)
        })
    );
    assert_eq!(o.mark, 1337);
    assert_eq!(o.verdict, FinalVerdict::Accept);
}

#[test]
fn the_first_ct_zone_set_wins() {
    let r = one(vec![
        v(vec![Statement::CtZoneSet(1)]),
        v(vec![Statement::CtZoneSet(2)]),
    ]);
    assert_eq!(out(&r, &pkt4()).ct_zone, Some(1));
}

fn rules_of(trail: &[Step]) -> Vec<(String, String, usize, String)> {
    trail
        .iter()
        .filter_map(|s| match s {
            Step::Rule {
                table,
                chain,
                index,
                rule,
                ..
            } => Some((table.clone(), chain.clone(), *index, rule.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn traced_evaluation_reports_chains_entered_and_rules_matched() {
    let rs = crate::compile(&crate::CaptureConfig::sidecar());
    let app = Packet::local_tcp(
        1000,
        1000,
        "10.0.0.5".parse().unwrap(),
        "10.1.2.3".parse().unwrap(),
        8080,
        "eth0",
    );
    let t = eval_traced(&rs, &app, Hook::Output).unwrap();
    assert_eq!(t.outcome, eval(&rs, &app, Hook::Output).unwrap());
    assert_eq!(t.outcome.redirect, Some(15001));
    let rules = rules_of(&t.trail);
    let last = rules.last().expect("a rule matched");
    assert!(last.3.contains("redirect to :15001"), "{rules:?}");
    // The redirect rule is in the chain entered last, and that chain was jumped to.
    assert!(t.trail.iter().any(|s| matches!(s,
        Step::Chain { chain, .. } if *chain == last.1)));
    // Indexes point at the rule in its chain.
    let table = rs.tables.iter().find(|x| x.name == last.0).unwrap();
    let chain = table.chains.iter().find(|c| c.name == last.1).unwrap();
    assert_eq!(crate::render::render_rule(&chain.rules[last.2]), last.3);

    // The proxy's own connection: a rule that returns, no redirect.
    let proxy = Packet::local_tcp(
        1337,
        1337,
        "10.0.0.5".parse().unwrap(),
        "10.1.2.3".parse().unwrap(),
        8080,
        "eth0",
    );
    let t = eval_traced(&rs, &proxy, Hook::Output).unwrap();
    assert_eq!(t.outcome.redirect, None);
    let rules = rules_of(&t.trail);
    assert!(
        rules
            .iter()
            .any(|r| r.3.contains("skuid 1337") && r.3.contains("return")),
        "{rules:?}"
    );
    assert!(t.trail.iter().any(|s| matches!(s, Step::Policy { .. })));

    // Not a connection's first packet: the NAT chains are passed over, and say so.
    let mut est = app.clone();
    est.ct_state = CtStates::ESTABLISHED;
    let t = eval_traced(&rs, &est, Hook::Output).unwrap();
    assert!(t.trail.iter().any(|s| matches!(s, Step::NatSkipped { .. })));
    assert!(rules_of(&t.trail).is_empty());
    // Untraced evaluation collects nothing and agrees.
    assert_eq!(eval(&rs, &est, Hook::Output).unwrap(), t.outcome);
}
