//! Every kind of object that grows with its input, once at the kernel's limit and once one
//! over: the encoder takes the first, and the kernel (in a fresh network namespace) commits
//! it, so nftmesh's limit is no stricter than the kernel's; the second is a typed error
//! naming the object and the limit, returned before anything is sent, and the ruleset
//! applied before it stays as it was.

use nftmesh_test_support as support;

use nftmesh::model::compile;
use nftmesh::model::config::CaptureConfig;
use nftmesh::model::expr::{Match, Owner, PortRange, Statement, Values, Verdict};
use nftmesh::model::limits::{COMMENT_MAX, IFNAME_MAX, LOG_PREFIX_MAX, NAME_MAX};
use nftmesh::model::ruleset::{
    Chain, ChainType, Family, Hook, Rule, Ruleset, Set, SetElement, SetKeyType, Table,
};
use nftmesh::netlink::bounds::Limit;
use nftmesh::netlink::netns::run_in_new;
use nftmesh::netlink::{Connection, NetlinkError, Object};
use nftmesh::netlink::{LiveState, Transaction};

/// How the over-the-limit variant must be refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// `NetlinkError::TooLarge` with this limit.
    TooLarge(Limit),
    /// `NetlinkError::Lower` (the match has no encoding: e.g. an interface name the kernel
    /// cannot compare).
    Lower,
}

struct Case {
    what: &'static str,
    at: Ruleset,
    over: Ruleset,
    refusal: Refusal,
}

const TABLE: &str = "nftmesh-limits";

fn s(n: usize, c: char) -> String {
    std::iter::repeat_n(c, n).collect()
}

/// One table with an output base chain holding `rule`, plus `extra` chains and `sets`.
fn table_with(rule: Rule, extra: Vec<Chain>, sets: Vec<Set>) -> Ruleset {
    let mut t = Table::new(Family::Inet, TABLE);
    let mut c = Chain::base("out", ChainType::Filter, Hook::Output, 0);
    c.rules.push(rule);
    t.chains.push(c);
    t.chains.extend(extra);
    t.sets = sets;
    Ruleset { tables: vec![t] }
}

fn rule_with(matches: Vec<Match>, statements: Vec<Statement>) -> Ruleset {
    table_with(Rule::new(matches, statements), vec![], vec![])
}

fn mark(i: u32) -> Match {
    Match::Mark {
        negate: false,
        mask: u32::MAX,
        value: i,
    }
}

fn iif(name: String) -> Match {
    Match::Iifname {
        negate: false,
        values: Values::One(name),
    }
}

fn regular(name: String) -> Chain {
    Chain {
        name,
        base: None,
        rules: vec![],
    }
}

fn named_set(name: &str, key_type: SetKeyType, elements: Vec<SetElement>) -> Set {
    Set {
        name: name.to_string(),
        key_type,
        interval: false,
        elements,
    }
}

fn cases() -> Vec<Case> {
    // The over variants name a chain or set they do not declare, so that the check of the
    // jump, goto or lookup itself refuses them (a declaration over the limit is refused as a
    // chain or set name, above).
    let verdict = |v: Verdict, name: String, declare: bool| {
        let chains = if declare { vec![regular(name)] } else { vec![] };
        table_with(
            Rule::new(vec![], vec![Statement::Verdict(v)]),
            chains,
            vec![],
        )
    };
    let jump = |n: usize| verdict(Verdict::Jump(s(n, 'j')), s(n, 'j'), n <= NAME_MAX);
    let goto = |n: usize| verdict(Verdict::Goto(s(n, 'g')), s(n, 'g'), n <= NAME_MAX);
    let chain_name =
        |n: usize| table_with(Rule::new(vec![], vec![]), vec![regular(s(n, 'c'))], vec![]);
    let table_name = |n: usize| {
        let mut t = Table::new(Family::Inet, s(n, 't'));
        t.chains.push(regular("c".into()));
        Ruleset { tables: vec![t] }
    };
    let set_name = |n: usize| {
        let name = s(n, 's');
        let m = Match::SkUid {
            negate: false,
            values: Values::Named(name.clone()),
        };
        let set = named_set(&name, SetKeyType::Uid, vec![SetElement::Range(1, 1)]);
        table_with(Rule::new(vec![m], vec![]), vec![], vec![set])
    };
    let lookup = |n: usize| {
        let m = Match::SkGid {
            negate: false,
            values: Values::Named(s(n, 'l')),
        };
        let sets = if n <= NAME_MAX {
            vec![named_set(
                &s(n, 'l'),
                SetKeyType::Gid,
                vec![SetElement::Range(7, 7)],
            )]
        } else {
            vec![]
        };
        table_with(Rule::new(vec![m], vec![]), vec![], sets)
    };
    let comment = |n: usize| {
        let mut r = Rule::new(vec![], vec![Statement::Counter]);
        r.comment = Some(s(n, 'x'));
        table_with(r, vec![], vec![])
    };
    let log = |n: usize| {
        rule_with(
            vec![],
            vec![Statement::Log {
                prefix: Some(s(n, 'p')),
            }],
        )
    };
    // 63 two-expression matches and a counter: 127 expressions; two counters: 128, 129.
    let exprs = |counters: usize| {
        rule_with(
            (0..63).map(mark).collect(),
            vec![Statement::Counter; counters],
        )
    };
    let ifname_set = |n: usize| {
        let m = Match::Oifname {
            negate: false,
            values: Values::Set(vec!["lo".into(), s(n, 'i')]),
        };
        rule_with(vec![m], vec![])
    };
    let ifname_element = |n: usize| {
        let m = Match::Iifname {
            negate: false,
            values: Values::Named("ifs".into()),
        };
        let set = named_set("ifs", SetKeyType::Ifname, vec![SetElement::Name(s(n, 'e'))]);
        table_with(Rule::new(vec![m], vec![]), vec![], vec![set])
    };
    use Limit::*;
    vec![
        Case {
            what: "expressions per rule",
            at: exprs(2),
            over: exprs(3),
            refusal: Refusal::TooLarge(Expressions),
        },
        Case {
            what: "table name",
            at: table_name(NAME_MAX),
            over: table_name(NAME_MAX + 1),
            refusal: Refusal::TooLarge(Name { what: "table" }),
        },
        Case {
            what: "chain name",
            at: chain_name(NAME_MAX),
            over: chain_name(NAME_MAX + 1),
            refusal: Refusal::TooLarge(Name { what: "chain" }),
        },
        Case {
            what: "jump target",
            at: jump(NAME_MAX),
            over: jump(NAME_MAX + 1),
            refusal: Refusal::TooLarge(Name {
                what: "jump target chain",
            }),
        },
        Case {
            what: "goto target",
            at: goto(NAME_MAX),
            over: goto(NAME_MAX + 1),
            refusal: Refusal::TooLarge(Name {
                what: "jump target chain",
            }),
        },
        Case {
            what: "lookup of a named set",
            at: lookup(NAME_MAX),
            over: lookup(NAME_MAX + 1),
            refusal: Refusal::TooLarge(Name { what: "set" }),
        },
        Case {
            what: "named set",
            at: set_name(NAME_MAX),
            over: set_name(NAME_MAX + 1),
            refusal: Refusal::TooLarge(Name { what: "set" }),
        },
        Case {
            what: "comment",
            at: comment(COMMENT_MAX),
            over: comment(COMMENT_MAX + 1),
            refusal: Refusal::TooLarge(Comment),
        },
        Case {
            what: "log prefix",
            at: log(LOG_PREFIX_MAX),
            over: log(LOG_PREFIX_MAX + 1),
            refusal: Refusal::TooLarge(LogPrefix),
        },
        Case {
            what: "iifname",
            at: rule_with(vec![iif(s(IFNAME_MAX, 'n'))], vec![]),
            over: rule_with(vec![iif(s(IFNAME_MAX + 1, 'n'))], vec![]),
            refusal: Refusal::Lower,
        },
        Case {
            what: "oifname set element",
            at: ifname_set(IFNAME_MAX),
            over: ifname_set(IFNAME_MAX + 1),
            refusal: Refusal::Lower,
        },
        Case {
            what: "ifname element of a named set",
            at: ifname_element(IFNAME_MAX),
            over: ifname_element(IFNAME_MAX + 1),
            refusal: Refusal::Lower,
        },
    ]
}

fn check_refusal(what: &str, err: &NetlinkError, refusal: Refusal) {
    match (err, refusal) {
        (
            NetlinkError::TooLarge {
                limit, size, max, ..
            },
            Refusal::TooLarge(want),
        ) => {
            assert_eq!(*limit, want, "{what}: {err}");
            assert_eq!(*size, max + 1, "{what}: one over: {err}");
            assert_eq!(*max, want.max(), "{what}: {err}");
        }
        (NetlinkError::Lower { .. }, Refusal::Lower) => {}
        _ => panic!("{what}: expected {refusal:?}, got {err}"),
    }
    let text = err.to_string();
    assert!(text.contains("nothing was applied"), "{what}: {text}");
}

#[test]
fn each_limit_is_taken_at_and_refused_one_over_before_anything_is_encoded() {
    for c in cases() {
        Transaction::plan(&c.at, &LiveState::default(), None, 1)
            .unwrap_or_else(|e| panic!("{}: at the limit: {e}", c.what));
        let err = match Transaction::plan(&c.over, &LiveState::default(), None, 1) {
            Ok(_) => panic!("{}: one over the limit was encoded", c.what),
            Err(e) => e,
        };
        check_refusal(c.what, &err, c.refusal);
    }
}

#[test]
fn an_error_names_the_rule_by_table_chain_index_and_text() {
    let err = match Transaction::plan(&cases()[0].over, &LiveState::default(), None, 1) {
        Ok(_) => panic!("129 expressions encoded"),
        Err(e) => e,
    };
    let NetlinkError::TooLarge { object, .. } = &err else {
        panic!("{err}")
    };
    let Object::Rule {
        table,
        chain,
        index,
        text,
    } = object.as_ref()
    else {
        panic!("{err}")
    };
    assert_eq!(
        (table.as_str(), chain.as_str(), *index),
        ("inet nftmesh-limits", "out", 0)
    );
    assert!(text.starts_with("meta mark 0x0 meta mark 0x1"), "{text}");
    assert_eq!(
        err.to_string().split(": ").last(),
        Some("129 expressions in one rule, the limit is 128; nothing was applied")
    );
}

/// Large sets are split over messages; anonymous sets of every growable key type take
/// 70 000 elements, as many as the kernel is given.
#[test]
fn huge_anonymous_sets_encode_over_several_messages_and_read_back() {
    let ports: Vec<PortRange> = (1..=60_000).map(PortRange::single).collect();
    let uids: Vec<Owner> = (0..70_000).map(Owner::Id).collect();
    let rs = rule_with(
        vec![
            Match::Port {
                dir: nftmesh::model::expr::Direction::Dst,
                proto: nftmesh::model::expr::L4Proto::Tcp,
                negate: false,
                values: Values::Set(ports),
            },
            Match::SkUid {
                negate: true,
                values: Values::Set(uids),
            },
        ],
        vec![Statement::Counter],
    );
    let batch = Transaction::plan(&rs, &LiveState::default(), None, 1).expect("encodes");
    assert!(batch.messages > 10, "{} messages", batch.messages);
    let back = batch.read_back().expect("reads back");
    assert_eq!(back, nftmesh::model::canonical::canonical_ruleset(&rs));
}

#[test]
fn the_kernel_commits_every_object_at_the_limit_and_one_over_changes_nothing() {
    if let Some(why) = support::kernel_unavailable() {
        support::skip(&why);
        return;
    }
    let outcome = run_in_new(|| {
        let mut conn = Connection::open().expect("open");
        let base = compile(&CaptureConfig::sidecar());
        let mut failures = Vec::new();
        for c in cases() {
            let mut at = base.clone();
            at.tables.extend(c.at.tables.clone());
            if let Err(e) = conn.apply(&at) {
                failures.push(format!(
                    "{}: the kernel refused it at the limit: {e}",
                    c.what
                ));
                continue;
            }
            let ids: Vec<(Family, String)> = at
                .tables
                .iter()
                .map(|t| (t.family, t.name.clone()))
                .collect();
            let before = conn.dump_ruleset(&ids).expect("dump");
            let mut over = base.clone();
            over.tables.extend(c.over.tables.clone());
            match conn.apply(&over) {
                Ok(_) => failures.push(format!("{}: one over was applied", c.what)),
                Err(e) => check_refusal(c.what, &e, c.refusal),
            }
            let after = conn.dump_ruleset(&ids).expect("dump");
            if before != after {
                failures.push(format!("{}: the refused apply changed the ruleset", c.what));
            }
            let extra: Vec<(Family, String)> =
                c.at.tables
                    .iter()
                    .map(|t| (t.family, t.name.clone()))
                    .collect();
            conn.delete_tables(&extra).expect("clean up");
        }
        // Listing by a name over the limit is refused too, before a request is sent.
        match conn.chains(Family::Inet, &s(NAME_MAX + 1, 't')) {
            Err(NetlinkError::TooLarge { .. }) => {}
            other => failures.push(format!("listing by a 256-byte name: {other:?}")),
        }
        failures
    })
    .expect("netns");
    assert!(outcome.is_empty(), "{}", outcome.join("\n"));
}

/// A ruleset the kernel would silently merge (two chains, sets or tables of one name) or whose
/// name it cannot hold (empty) is refused as a whole, naming the table.
#[test]
fn duplicate_and_empty_names_are_refused_before_anything_is_encoded() {
    use nftmesh::netlink::bounds::BuildError;
    let two_chains = table_with(
        Rule::new(vec![], vec![]),
        vec![regular("out".into())],
        vec![],
    );
    let set = || named_set("s", SetKeyType::Mark, vec![]);
    let two_sets = table_with(Rule::new(vec![], vec![]), vec![], vec![set(), set()]);
    let mut two_tables = rule_with(vec![], vec![]);
    two_tables.tables.push(two_tables.tables[0].clone());
    let empty_chain = table_with(
        Rule::new(vec![], vec![]),
        vec![regular(String::new())],
        vec![],
    );
    for (what, rs, want) in [
        ("two chains", two_chains, "a second chain named \"out\""),
        ("two sets", two_sets, "a second set named \"s\""),
        (
            "two tables",
            two_tables,
            "a second table named \"nftmesh-limits\"",
        ),
        ("an empty chain name", empty_chain, "chain name is empty"),
    ] {
        let err = match Transaction::plan(&rs, &LiveState::default(), None, 1) {
            Ok(_) => panic!("{what} encoded"),
            Err(e) => e,
        };
        assert!(
            matches!(
                &err,
                NetlinkError::Encode {
                    source: BuildError::Duplicate { .. } | BuildError::Empty { .. },
                    ..
                }
            ),
            "{what}: {err}"
        );
        assert!(err.to_string().contains(want), "{what}: {err}");
    }
}
