//! The netlink backend against the kernel. Every test works inside fresh network namespaces it
//! creates (a thread that unshares its network namespace); `nft` is the oracle.

use nftmesh_test_support as support;

use nftmesh::model::canonical::canonical_ruleset;
use nftmesh::model::config::CaptureConfig;
use nftmesh::model::expr::{Statement, Verdict};
use nftmesh::model::ruleset::{Family, Rule, Ruleset};
use nftmesh::model::{compile, render};
use nftmesh::netlink::netns::{run_in, run_in_new};
use nftmesh::netlink::{Connection, NetlinkError, Object};

use std::process::Command;
use support::cases::cases;

/// Why kernel tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    support::kernel_unavailable()
}

macro_rules! require_kernel {
    () => {
        if let Some(why) = unavailable() {
            support::skip(&why);
            return;
        }
    };
}

/// `nft list ruleset` in the calling thread's network namespace.
fn list() -> String {
    support::run_here("nft", &["list", "ruleset"], "")
}

/// `nft -f -` of `script` in the calling thread's network namespace.
fn nft_load(script: &str) {
    support::run_here("nft", &["-f", "-"], script);
}

/// What `nft -f` of our rendering of `rs` lists, in a fresh namespace.
fn oracle(rs: &Ruleset) -> String {
    let text = render(rs);
    run_in_new(move || {
        nft_load(&text);
        list()
    })
    .expect("netns")
}

fn sidecar() -> Ruleset {
    compile(&CaptureConfig::sidecar())
}

fn tproxy() -> Ruleset {
    let mut c = CaptureConfig::sidecar();
    c.mode = nftmesh::model::config::InterceptionMode::Tproxy;
    compile(&c)
}

#[test]
fn every_istio_case_applied_over_netlink_lists_like_nft_loading_our_render() {
    require_kernel!();
    let mut failures = Vec::new();
    for case in cases() {
        let rs = compile(&case.config());
        let want = oracle(&rs);
        let rs2 = rs.clone();
        let got = run_in_new(move || {
            let mut conn = Connection::open().expect("open");
            conn.apply(&rs2).map(|r| (r, list()))
        })
        .expect("netns");
        match got {
            Ok((report, listing)) => {
                assert_eq!(
                    report.attempts, 1,
                    "{}: no concurrent writer, one attempt",
                    case.name
                );
                if listing != want {
                    failures.push(format!(
                        "{}:\n--- nft -f\n{want}\n--- netlink\n{listing}",
                        case.name
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: apply failed: {e}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 28 cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn applying_the_same_ruleset_twice_changes_nothing() {
    require_kernel!();
    let rs = sidecar();
    let (first, second) = run_in_new(move || {
        let mut conn = Connection::open().unwrap();
        conn.apply(&rs).unwrap();
        let a = list();
        conn.apply(&rs).unwrap();
        (a, list())
    })
    .unwrap();
    assert_eq!(first, second);
    assert!(first.contains("redirect to :15001"), "{first}");
}

#[test]
fn a_batch_whose_last_rule_is_rejected_leaves_the_previous_ruleset_and_names_that_rule() {
    require_kernel!();
    let before_rs = sidecar();
    let mut bad = tproxy();
    let t = &mut bad.tables[0];
    let last_chain = t.chains.len() - 1;
    let chain_name = t.chains[last_chain].name.clone();
    t.chains[last_chain].rules.push(Rule {
        matches: vec![],
        statements: vec![Statement::Verdict(Verdict::Jump("NO_SUCH_CHAIN".into()))],
        comment: None,
    });
    let index = t.chains[last_chain].rules.len() - 1;
    let table = format!("{} {}", t.family.keyword(), t.name);
    let (before, err, after) = run_in_new(move || {
        let mut conn = Connection::open().unwrap();
        conn.apply(&before_rs).unwrap();
        let before = list();
        let err = conn
            .apply(&bad)
            .expect_err("the jump target does not exist");
        (before, err, list())
    })
    .unwrap();
    assert_eq!(before, after, "a failed batch changed the ruleset");
    match err {
        NetlinkError::Rejected { object, errno, .. } => {
            assert_eq!(errno, libc::ENOENT);
            assert_eq!(
                object,
                Object::Rule {
                    table,
                    chain: chain_name,
                    index,
                    text: "jump NO_SUCH_CHAIN".into()
                }
            );
        }
        other => panic!("expected a rejected rule, got {other}"),
    }
}

#[test]
fn replacing_a_ruleset_leaves_exactly_the_new_one_and_keeps_base_chains_hooked() {
    require_kernel!();
    let (a, b) = (sidecar(), tproxy());
    let want_b = oracle(&b);
    let (a2, b2) = (a.clone(), b.clone());
    let (listing, before, after) = run_in_new(move || {
        let mut conn = Connection::open().unwrap();
        conn.apply(&a2).unwrap();
        let handles = |conn: &mut Connection| {
            let mut out = Vec::new();
            for t in &a2.tables {
                for c in conn.chains(t.family, &t.name).unwrap() {
                    if c.hook.is_some() {
                        out.push((t.name.clone(), c.name, c.handle));
                    }
                }
            }
            out.sort();
            out
        };
        let before = handles(&mut conn);
        conn.apply(&b2).unwrap();
        let after = handles(&mut conn);
        (list(), before, after)
    })
    .unwrap();
    // Tables only A has stay (apply manages the tables it is given), so compare B's tables.
    let only_b: Vec<&str> = want_b.lines().collect();
    for t in &b.tables {
        let header = format!("table {} {} {{", t.family.keyword(), t.name);
        assert!(listing.contains(&header), "{header} missing:\n{listing}");
    }
    assert!(!before.is_empty());
    for (table, chain, handle) in &before {
        if let Some(x) = after.iter().find(|(t, c, _)| t == table && c == chain) {
            assert_eq!(x.2, *handle, "base chain {table} {chain} was re-created");
        }
    }
    let in_both = before
        .iter()
        .filter(|(t, c, _)| after.iter().any(|x| &x.0 == t && &x.1 == c))
        .count();
    assert!(
        in_both > 0,
        "A and B share base chains: {before:?} {after:?}"
    );
    let a_only_tables = a.tables.iter().all(|ta| {
        b.tables
            .iter()
            .any(|tb| tb.name == ta.name && tb.family == ta.family)
    });
    if a_only_tables {
        assert_eq!(
            listing.lines().collect::<Vec<_>>(),
            only_b,
            "replace did not leave exactly B"
        );
    }
}

#[test]
fn cleanup_removes_only_our_tables() {
    require_kernel!();
    let rs = sidecar();
    let ours: Vec<(Family, String)> = rs
        .tables
        .iter()
        .map(|t| (t.family, t.name.clone()))
        .collect();
    let other = "table inet other {\n\tchain c {\n\t\ttype filter hook input priority filter; policy accept;\n\t\ttcp dport 22 accept\n\t}\n}\n";
    let (with_other, deleted, after, again) = run_in_new(move || {
        nft_load(other);
        let only_other = list();
        let mut conn = Connection::open().unwrap();
        conn.apply(&rs).unwrap();
        let deleted = conn.delete_tables(&ours).unwrap();
        assert_eq!(deleted, ours.len());
        let after = list();
        let again = conn.delete_tables(&ours).unwrap();
        (only_other, deleted, after, again)
    })
    .unwrap();
    assert!(deleted >= 1, "nothing deleted");
    assert_eq!(after, with_other, "cleanup touched the foreign table");
    assert_eq!(again, 0, "a second cleanup finds nothing");
}

#[test]
fn ten_thousand_cidrs_and_two_thousand_rules_apply_in_one_batch() {
    require_kernel!();
    let mut c = CaptureConfig::sidecar();
    c.outbound_cidrs_exclude = (0..10_000u32)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap())
        .collect();
    let mut rs = compile(&c);
    let t = &mut rs.tables[0];
    let chain = t
        .chains
        .iter_mut()
        .find(|c| c.base.is_none())
        .expect("a regular chain");
    for p in 0..2_000u16 {
        chain.rules.push(Rule {
            matches: vec![nftmesh::model::expr::Match::Port {
                dir: nftmesh::model::expr::Direction::Dst,
                proto: nftmesh::model::expr::L4Proto::Tcp,
                negate: false,
                values: nftmesh::model::expr::Values::One(nftmesh::model::expr::PortRange::single(
                    20_000 + p,
                )),
            }],
            statements: vec![Statement::Verdict(Verdict::Return)],
            comment: None,
        });
    }
    let want = oracle(&rs);
    let (report, got) = run_in_new(move || {
        let mut conn = Connection::open().unwrap();
        let r = conn.apply(&rs).unwrap();
        (r, list())
    })
    .unwrap();
    assert!(report.messages > 2_000, "{report:?}");
    assert!(
        got == want,
        "large ruleset lists differently ({} vs {} bytes)",
        got.len(),
        want.len()
    );
}

#[test]
fn two_writers_end_in_exactly_one_of_their_states() {
    require_kernel!();
    let (a, b) = (sidecar(), tproxy());
    let (la, lb) = (oracle(&a), oracle(&b));
    let both_tables: Vec<(Family, String)> = a
        .tables
        .iter()
        .chain(b.tables.iter())
        .map(|t| (t.family, t.name.clone()))
        .collect();
    let result = run_in_new(move || {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        let path = std::path::PathBuf::from(format!("/proc/self/task/{tid}/ns/net"));
        let writer = |rs: Ruleset, path: std::path::PathBuf| {
            std::thread::spawn(move || {
                run_in(&path, move || {
                    let mut conn = Connection::open().unwrap();
                    for _ in 0..100 {
                        conn.apply(&rs).unwrap();
                    }
                })
                .unwrap()
            })
        };
        let h1 = writer(a, path.clone());
        let h2 = writer(b, path);
        h1.join().unwrap();
        h2.join().unwrap();
        let mut conn = Connection::open().unwrap();
        let listing = list();
        conn.delete_tables(&both_tables).unwrap();
        listing
    })
    .unwrap();
    // Each writer only writes its own tables; the final listing must equal one writer's
    // ruleset applied last over the other's: check that every table is whole, never a mix.
    // A table is compared as its set of chains: a chain one writer deleted and the other
    // re-created is listed last, and listing order means nothing to the kernel.
    let tables = |l: &str| -> Vec<String> {
        l.split("\ntable ")
            .map(|t| {
                let t = t.trim_start_matches("table ").trim();
                let mut blocks: Vec<String> = Vec::new();
                // Chain blocks only: no blank lines, no closing brace of the table.
                for line in t.lines().filter(|l| !l.trim().is_empty() && *l != "}") {
                    if line.starts_with("\tchain ") || blocks.is_empty() {
                        blocks.push(String::new());
                    }
                    if let Some(b) = blocks.last_mut() {
                        b.push_str(line.trim_end());
                        b.push('\n');
                    }
                }
                let head = blocks.remove(0);
                blocks.sort();
                head + &blocks.concat()
            })
            .collect()
    };
    let (ta, tb, tr) = (tables(&la), tables(&lb), tables(&result));
    for t in &tr {
        assert!(
            ta.contains(t) || tb.contains(t),
            "a table is a mix of both writers:\n{t}"
        );
    }
}

#[test]
fn without_cap_net_admin_the_error_is_the_typed_permission_error() {
    require_kernel!();
    let err = run_in_new(|| {
        drop_all_capabilities_of_this_thread();
        let mut conn = match Connection::open() {
            Ok(c) => c,
            Err(e) => return e,
        };
        conn.apply(&sidecar())
            .expect_err("must fail without CAP_NET_ADMIN")
    })
    .unwrap();
    assert!(err.is_permission(), "got {err}");
    assert!(err.to_string().contains("CAP_NET_ADMIN"), "{err}");
}

fn drop_all_capabilities_of_this_thread() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let hdr = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: capset with a v3 header and two data words, as capset(2) documents; it changes
    // only the calling thread's capabilities.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &hdr as *const Header, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

fn table_ids(rs: &Ruleset) -> Vec<(Family, String)> {
    rs.tables
        .iter()
        .map(|t| (t.family, t.name.clone()))
        .collect()
}

#[test]
fn dump_after_apply_equals_what_was_applied_for_every_istio_case() {
    require_kernel!();
    let mut failures = Vec::new();
    for case in cases() {
        let rs = compile(&case.config());
        let ids = table_ids(&rs);
        let rs2 = rs.clone();
        let dumped = run_in_new(move || {
            let mut conn = Connection::open().unwrap();
            conn.apply(&rs2)?;
            conn.dump_ruleset(&ids)
        })
        .unwrap();
        match dumped {
            Ok(d) if d == canonical_ruleset(&rs) => {}
            Ok(d) => failures.push(format!(
                "{}:\n--- applied\n{}\n--- dumped\n{}",
                case.name,
                render(&canonical_ruleset(&rs)),
                render(&d)
            )),
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 28 cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn an_expression_the_model_lacks_dumps_as_a_typed_unsupported_error() {
    require_kernel!();
    let script = "table inet weird {\n\tchain c {\n\t\tcounter accept\n\t\tnumgen inc mod 2 0 drop\n\t}\n}\n";
    let err = run_in_new(move || {
        nft_load(script);
        Connection::open()
            .unwrap()
            .dump_ruleset(&[(Family::Inet, "weird".into())])
    })
    .unwrap()
    .expect_err("numgen is not in the model");
    match &err {
        NetlinkError::Unsupported { name, object, .. } => {
            assert_eq!(name, "numgen");
            match object.as_ref() {
                Object::Rule { chain, index, .. } => assert_eq!((chain.as_str(), *index), ("c", 1)),
                other => panic!("{other:?}"),
            }
        }
        other => panic!("expected Unsupported, got {other}"),
    }
    assert!(err.to_string().contains("numgen"), "{err}");
}

#[test]
fn tproxy_routing_is_installed_idempotently_read_back_and_removed() {
    require_kernel!();
    use nftmesh::netlink::routes::{Routing, RoutingState, TproxyRouting};
    let r = TproxyRouting::sidecar(1337, 133, true);
    let (empty, after, after_twice, ip_rules, ip6_routes, removed) = run_in_new(move || {
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success());
        let mut rt = Routing::open().unwrap();
        let empty = rt.state(&r).unwrap();
        rt.ensure(&r).unwrap();
        let after = rt.state(&r).unwrap();
        rt.ensure(&r).unwrap();
        let after_twice = rt.state(&r).unwrap();
        let out = |args: &[&str]| {
            String::from_utf8(Command::new("ip").args(args).output().unwrap().stdout).unwrap()
        };
        let ip_rules = out(&["rule", "show"]) + &out(&["-6", "rule", "show"]);
        let ip6_routes = out(&["-6", "route", "show", "table", "133"])
            + &out(&["route", "show", "table", "133"]);
        rt.remove(&r).unwrap();
        (
            empty,
            after,
            after_twice,
            ip_rules,
            ip6_routes,
            rt.state(&r).unwrap(),
        )
    })
    .unwrap();
    assert_eq!(empty, RoutingState::default());
    let full = RoutingState {
        rules: vec![4, 6],
        local_routes: vec![4, 6],
        loopback_v6: true,
    };
    assert_eq!(after, full);
    assert_eq!(after_twice, full);
    assert_eq!(
        ip_rules.matches("fwmark 0x539 lookup 133").count(),
        2,
        "one rule per family, no duplicates:\n{ip_rules}"
    );
    assert_eq!(
        ip6_routes.matches("local default dev lo").count(),
        2,
        "{ip6_routes}"
    );
    assert_eq!(removed, RoutingState::default());
}

#[test]
fn netns_runs_work_inside_the_namespace_and_never_moves_the_caller() {
    require_kernel!();
    use nftmesh::netlink::netns::Netns;
    let own = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let (inner, seen) = run_in_new(|| {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        let ns = Netns::new(format!("/proc/self/task/{tid}/ns/net"));
        let inner = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let seen = ns
            .run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap())
            .unwrap();
        (inner, seen)
    })
    .unwrap();
    assert_ne!(inner, own, "the fresh namespace is another one");
    assert_eq!(seen, inner, "work ran in the namespace given by path");
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        own,
        "caller moved"
    );
    let missing = Netns::new("/var/run/netns/nftmesh-no-such-ns")
        .run(|| ())
        .unwrap_err();
    assert!(
        missing.to_string().contains("nftmesh-no-such-ns"),
        "{missing}"
    );
}

#[test]
fn a_chain_whose_hook_or_priority_changes_is_recreated_in_the_same_transaction() {
    require_kernel!();
    use nftmesh::model::ruleset::{BaseChain, Chain, ChainType, Hook, Policy, Table};
    let ruleset = |hook, priority, kind| {
        let mut t = Table::new(Family::Inet, "nftmesh-rehook");
        t.chains.push(Chain {
            name: "c".into(),
            base: Some(BaseChain {
                kind,
                hook,
                priority,
                policy: Policy::Accept,
            }),
            rules: vec![Rule {
                matches: vec![],
                statements: vec![Statement::Counter],
                comment: None,
            }],
        });
        Ruleset { tables: vec![t] }
    };
    let steps = [
        ruleset(Hook::Output, 0, ChainType::Filter),
        ruleset(Hook::Output, -10, ChainType::Filter),
        ruleset(Hook::Input, -10, ChainType::Filter),
        ruleset(Hook::Output, -100, ChainType::Nat),
    ];
    let wants: Vec<String> = steps.iter().map(oracle).collect();
    let got = run_in_new(move || {
        let mut conn = Connection::open().unwrap();
        steps
            .iter()
            .map(|rs| conn.apply(rs).map(|_| list()).map_err(|e| e.to_string()))
            .collect::<Vec<_>>()
    })
    .unwrap();
    for (i, (g, w)) in got.into_iter().zip(wants).enumerate() {
        assert_eq!(g.expect("apply"), w, "step {i}");
    }
}

#[test]
fn a_replace_after_a_foreign_commit_rereads_the_state_and_ends_exact() {
    require_kernel!();
    let a = sidecar();
    let want = canonical_ruleset(&a);
    let ids = table_ids(&a);
    let (steady, after_foreign, dumped) = run_in_new(move || {
        let mut conn = Connection::open().unwrap();
        conn.apply(&a).unwrap();
        // Our own previous commit: the batch goes out on the remembered state, first try.
        let steady = conn.apply(&a).unwrap().attempts;
        // Someone else commits (a stale chain in our table): the remembered generation is
        // refused by the kernel, the state is read again, and the stale chain goes.
        nft_load("add chain inet istio-proxy-nat istio-foreign\n");
        let after_foreign = conn.apply(&a).unwrap().attempts;
        (steady, after_foreign, conn.dump_ruleset(&ids).unwrap())
    })
    .unwrap();
    assert_eq!(steady, 1);
    assert_eq!(after_foreign, 2);
    assert_eq!(dumped, want);
}

#[test]
fn large_anonymous_port_and_host_sets_apply_and_dump_back() {
    require_kernel!();
    use nftmesh::model::expr::{Direction, IpVersion, L4Proto, Match, PortRange, Values};
    use nftmesh::model::ruleset::{Chain, ChainType, Hook, Table};
    // 2 000 single ports (pairs of neighbours, so an interval set merges them) and 2 000 host
    // addresses: an interval set for the ports, a hash set for the addresses.
    let ports: Vec<PortRange> = (0..2000u16)
        .map(|i| PortRange::single(10000 + 3 * (i / 2) + i % 2))
        .collect();
    let hosts = (0..2000u32)
        .map(|i| {
            ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(
                0x0a00_0000 + 2 * i,
            )))
        })
        .collect();
    let mut t = Table::new(Family::Inet, "nftmesh-large");
    let mut c = Chain::base("out", ChainType::Filter, Hook::Output, 0);
    c.rules.push(Rule::new(
        vec![
            Match::Addr {
                dir: Direction::Dst,
                version: IpVersion::V4,
                negate: true,
                values: Values::Set(hosts),
            },
            Match::Port {
                dir: Direction::Dst,
                proto: L4Proto::Tcp,
                negate: false,
                values: Values::Set(ports),
            },
        ],
        vec![Statement::Verdict(Verdict::Accept)],
    ));
    t.chains.push(c);
    let rs = Ruleset { tables: vec![t] };
    let (want, ids) = (canonical_ruleset(&rs), table_ids(&rs));
    let dumped = run_in_new(move || {
        let mut conn = Connection::open().unwrap();
        conn.apply(&rs).unwrap();
        conn.dump_ruleset(&ids).unwrap()
    })
    .unwrap();
    assert_eq!(dumped, want);
}

#[test]
fn a_conversation_recorded_from_the_kernel_replays_without_it() {
    require_kernel!();
    use nftmesh::netlink::transport::{kernel_socket, Recording, Replay};
    // Recorded: an apply of the sidecar capture, a dump of its table and a failing apply (a
    // chain that jumps to a chain that is not there), against the kernel of a fresh namespace.
    let tables = [(Family::Inet, "istio-proxy-nat".to_string())];
    let mut broken = sidecar();
    broken.tables[0].chains[0].rules.push(Rule::new(
        vec![],
        vec![Statement::Verdict(Verdict::Jump("nowhere".into()))],
    ));
    let (script, port, report, live, refused) = {
        let (tables, broken) = (tables.clone(), broken.clone());
        run_in_new(move || {
            let socket = kernel_socket().expect("socket");
            let rec = Recording::new(socket);
            let log = rec.exchanges();
            let mut conn = Connection::over(Box::new(rec), 1000);
            let report = conn.apply(&sidecar()).expect("apply");
            let live = conn.dump_ruleset(&tables).expect("dump");
            let refused = conn
                .apply(&broken)
                .expect_err("a jump to no chain")
                .to_string();
            let port = conn.port_id();
            let script = log.lock().unwrap().clone();
            (script, port, report, live, refused)
        })
        .expect("netns")
    };
    assert_eq!(canonical_ruleset(&live), canonical_ruleset(&sidecar()));
    assert!(refused.contains("nowhere"), "{refused}");
    // Played back on this thread, in the machine's namespace but without touching it: the
    // same bytes are sent, the same answers read.
    let mut conn = Connection::over(Box::new(Replay::new(script, port)), 1000);
    assert_eq!(conn.apply(&sidecar()).unwrap(), report);
    assert_eq!(conn.dump_ruleset(&tables).unwrap(), live);
    assert_eq!(conn.apply(&broken).unwrap_err().to_string(), refused);
}
