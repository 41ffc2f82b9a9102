//! Round trip through the kernel for random rulesets built from the model's types: what
//! `apply` sends, `dump_ruleset` reads back equal (in canonical form). Runs in one fresh
//! network namespace with one kept-open connection.

use nftmesh_test_support as support;

use nftmesh::model::canonical::canonical_ruleset;
use nftmesh::model::expr::{
    Direction, IpVersion, L4Proto, Match, PortRange, Statement, Values, Verdict,
};
use nftmesh::model::ruleset::{
    BaseChain, Chain, ChainType, Family, Hook, Policy, Rule, Ruleset, Table,
};
use nftmesh::netlink::netns::run_in_new;
use nftmesh::netlink::{Connection, NetlinkError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::strategies::a_ruleset;

#[test]
fn random_rulesets_dump_back_as_applied() {
    if let Some(why) = support::netns::oracle_unavailable() {
        support::skip(&why);
        return;
    }
    let outcome = run_in_new(|| {
        let conn = std::cell::RefCell::new(Connection::open().expect("open"));
        let mut runner = TestRunner::new(Config {
            cases: 256,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&a_ruleset(), |rs| {
                let ids = vec![(Family::Inet, "nftmesh-roundtrip".to_string())];
                match conn.borrow_mut().apply(&rs) {
                    Ok(_) => {}
                    // The model allows what this kernel may refuse (none expected here).
                    Err(e @ NetlinkError::Lower { .. }) => {
                        return Err(TestCaseError::reject(e.to_string()))
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("apply: {e}"))),
                }
                let dumped = conn
                    .borrow_mut()
                    .dump_ruleset(&ids)
                    .map_err(|e| TestCaseError::fail(format!("dump: {e}")))?;
                prop_assert_eq!(dumped, canonical_ruleset(&rs));
                Ok(())
            })
            .map_err(|e| e.to_string())
    })
    .expect("netns");
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

#[test]
fn named_sets_of_every_key_type_apply_and_dump_back() {
    use nftmesh::model::ruleset::{Set, SetElement, SetKeyType};
    if let Some(why) = support::netns::oracle_unavailable() {
        support::skip(&why);
        return;
    }
    let mut t = Table::new(Family::Inet, "nftmesh-sets");
    let set = |name: &str, key_type, interval, elements| Set {
        name: name.into(),
        key_type,
        interval,
        elements,
    };
    t.sets = vec![
        set(
            "v4",
            SetKeyType::Ipv4Addr,
            true,
            vec![
                SetElement::Prefix("10.0.0.0/8".parse().unwrap()),
                SetElement::Prefix("192.168.1.7/32".parse().unwrap()),
            ],
        ),
        set(
            "v6",
            SetKeyType::Ipv6Addr,
            true,
            vec![SetElement::Prefix("fd00::/8".parse().unwrap())],
        ),
        set(
            "ports",
            SetKeyType::InetService,
            true,
            vec![SetElement::Range(22, 22), SetElement::Range(8000, 8080)],
        ),
        set(
            "ifs",
            SetKeyType::Ifname,
            false,
            vec![
                SetElement::Name("eth0".into()),
                SetElement::Name("lo".into()),
            ],
        ),
        set(
            "uids",
            SetKeyType::Uid,
            false,
            vec![SetElement::Range(0, 0), SetElement::Range(1337, 1337)],
        ),
        set(
            "gids",
            SetKeyType::Gid,
            false,
            vec![SetElement::Range(5, 5)],
        ),
        set(
            "marks",
            SetKeyType::Mark,
            false,
            vec![SetElement::Range(0x539, 0x539)],
        ),
    ];
    let rules = vec![
        Rule {
            matches: vec![Match::Addr {
                dir: Direction::Dst,
                version: IpVersion::V4,
                negate: false,
                values: named("v4"),
            }],
            statements: vec![Statement::Verdict(Verdict::Return)],
            comment: None,
        },
        Rule {
            matches: vec![Match::Addr {
                dir: Direction::Src,
                version: IpVersion::V6,
                negate: true,
                values: named("v6"),
            }],
            statements: vec![Statement::Counter],
            comment: None,
        },
        Rule {
            matches: vec![Match::Port {
                dir: Direction::Dst,
                proto: L4Proto::Tcp,
                negate: false,
                values: named("ports"),
            }],
            statements: vec![Statement::Verdict(Verdict::Accept)],
            comment: Some("ports".into()),
        },
        Rule {
            matches: vec![
                Match::Oifname {
                    negate: false,
                    values: named("ifs"),
                },
                Match::SkUid {
                    negate: true,
                    values: named("uids"),
                },
                Match::SkGid {
                    negate: false,
                    values: named("gids"),
                },
            ],
            statements: vec![Statement::Verdict(Verdict::Drop)],
            comment: None,
        },
    ];
    t.chains.push(Chain {
        name: "output".into(),
        base: Some(BaseChain {
            kind: ChainType::Filter,
            hook: Hook::Output,
            priority: 0,
            policy: Policy::Accept,
        }),
        rules,
    });
    let rs = Ruleset { tables: vec![t] };
    let rs2 = rs.clone();
    let dumped = run_in_new(move || {
        let mut conn = Connection::open().unwrap();
        conn.apply(&rs2).unwrap();
        // Apply again: named sets are replaced in place, not duplicated.
        conn.apply(&rs2).unwrap();
        conn.dump_ruleset(&[(Family::Inet, "nftmesh-sets".into())])
            .unwrap()
    })
    .unwrap();
    assert_eq!(dumped, canonical_ruleset(&rs));
}

fn named<T>(n: &str) -> Values<T> {
    Values::Named(n.to_string())
}

/// Found by `random_rulesets_dump_back_as_applied`: a rule with `meta l4proto tcp` twice before
/// `tcp sport 1`, applied over a ruleset whose same rule had the protocol match once.
#[test]
fn a_repeated_protocol_match_dumps_back_after_an_in_place_replace() {
    if let Some(why) = support::netns::oracle_unavailable() {
        support::skip(&why);
        return;
    }
    let tcp = Match::L4Proto {
        negate: false,
        proto: L4Proto::Tcp,
    };
    let port = Match::Port {
        dir: Direction::Src,
        proto: L4Proto::Tcp,
        negate: false,
        values: Values::One(PortRange::single(1)),
    };
    let ruleset = |matches: Vec<Match>| {
        let mut t = Table::new(Family::Inet, "nftmesh-roundtrip");
        t.chains.push(Chain::regular("sub"));
        let mut out = Chain::base("output", ChainType::Filter, Hook::Output, -150);
        out.rules.push(Rule::new(matches, vec![]));
        t.chains.push(out);
        Ruleset { tables: vec![t] }
    };
    let ids = vec![(Family::Inet, "nftmesh-roundtrip".to_string())];
    let seq = [
        vec![tcp.clone(), tcp.clone(), port.clone()],
        vec![tcp.clone(), port.clone()],
        vec![port.clone()],
        vec![tcp.clone(), tcp.clone(), port.clone()],
    ];
    let got = run_in_new(move || {
        let mut conn = Connection::open().unwrap();
        seq.iter()
            .map(|m| {
                let rs = ruleset(m.clone());
                conn.apply(&rs).unwrap();
                (conn.dump_ruleset(&ids).unwrap(), canonical_ruleset(&rs))
            })
            .collect::<Vec<_>>()
    })
    .unwrap();
    for (k, (dumped, want)) in got.iter().enumerate() {
        assert_eq!(dumped, want, "step {k}");
    }
}

/// `snat ip to` and `snat ip6 to` in a nat postrouting chain (Istio ambient's host rule, with
/// its named probe sets) apply and dump back as applied.
#[test]
fn snat_to_an_address_after_a_named_set_lookup_applies_and_dumps_back() {
    use nftmesh::model::ruleset::{ChainType, Set, SetKeyType};
    if let Some(why) = support::netns::oracle_unavailable() {
        support::skip(&why);
        return;
    }
    let v4: std::net::IpAddr = "169.254.7.127".parse().unwrap();
    let v6: std::net::IpAddr = "e9ac:1e77:90ca:399f:4d6d:ece2:2f9b:3164".parse().unwrap();
    let mut t = Table::new(Family::Inet, "nftmesh-snat");
    for (name, key_type, elem) in [
        ("probes-v4", SetKeyType::Ipv4Addr, "10.0.0.7/32"),
        ("probes-v6", SetKeyType::Ipv6Addr, "fd00::7/128"),
    ] {
        t.sets.push(Set {
            name: name.into(),
            key_type,
            interval: false,
            elements: vec![nftmesh::model::ruleset::SetElement::Prefix(
                elem.parse().unwrap(),
            )],
        });
    }
    let mut c = Chain::base("postrouting", ChainType::Nat, Hook::Postrouting, 100);
    for (version, set, addr) in [
        (IpVersion::V4, "probes-v4", v4),
        (IpVersion::V6, "probes-v6", v6),
    ] {
        c.rules.push(Rule::new(
            vec![
                Match::L4Proto {
                    negate: false,
                    proto: L4Proto::Tcp,
                },
                Match::Addr {
                    dir: Direction::Dst,
                    version,
                    negate: false,
                    values: Values::Named(set.into()),
                },
            ],
            vec![
                Statement::Counter,
                Statement::Snat {
                    version: Some(version),
                    addr,
                },
            ],
        ));
    }
    t.chains.push(c);
    let rs = Ruleset { tables: vec![t] };
    let (dumped, listing) = run_in_new(move || {
        let mut conn = Connection::open().unwrap();
        conn.apply(&rs).unwrap();
        let dumped = conn
            .dump_ruleset(&[(Family::Inet, "nftmesh-snat".into())])
            .unwrap();
        (dumped, support::run_here("nft", &["list", "ruleset"], ""))
    })
    .unwrap();
    assert!(listing.contains("snat ip to 169.254.7.127"), "{listing}");
    assert!(
        listing.contains("snat ip6 to e9ac:1e77:90ca:399f:4d6d:ece2:2f9b:3164"),
        "{listing}"
    );
    let rules = &dumped.tables[0].chains[0].rules;
    assert_eq!(rules.len(), 2);
    assert_eq!(
        rules[1].statements[1],
        Statement::Snat {
            version: Some(IpVersion::V6),
            addr: v6
        }
    );
}
