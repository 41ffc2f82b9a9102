//! Three-way equivalence on every Istio case, packet by packet: the xtables interpreter on
//! Istio's iptables golden ≡ the model's evaluator on its translation ≡ the evaluator on
//! `compile(config)` of the same case.
//!
//! The first equivalence is exact. The second holds except where Istio's two generators
//! themselves disagree (nftmesh's compiler follows Istio's nftables generator; see
//! `docs/iptables-vs-nftables.md`): every such packet must fall in one of the documented
//! classes below, and every class must be seen, so the list cannot go stale.

use nftmesh_test_support as support;

use nftmesh_iptables::{interpret, parse_trace, translate_all};
use nftmesh_model::eval::{FinalVerdict, Outcome};
use nftmesh_model::expr::{CtStates, IpVersion, L4Proto};
use nftmesh_model::{compile, eval, Hook, InterceptionMode, Packet};
use std::collections::BTreeMap;
use support::cases::{cases, TEST_GROUPS};
use support::corpus::{dims, every_packet};

/// A documented difference between Istio's iptables and nftables generators.
struct Known {
    name: &'static str,
    holds: fn(&Ctx, Hook, &Packet, &Outcome, &Outcome) -> bool,
}

struct Ctx {
    has_v6_part: bool,
    drop_invalid: bool,
    tproxy: bool,
}

const KNOWN: [Known; 3] = [
    Known {
        // With IPv6 off, istio-iptables writes no ip6tables rules; the nftables generator's
        // `inet` tables capture IPv6 anyway.
        name: "ipv6-off: only the inet tables capture IPv6",
        holds: |c, _, p, _, _| !c.has_v6_part && p.version() == IpVersion::V6,
    },
    Known {
        // `-m conntrack --ctstate INVALID -j ISTIO_DROP` vs `meta l4proto tcp ct state invalid`.
        name: "drop-invalid: iptables drops invalid packets of every protocol, nftables TCP only",
        holds: |c, h, p, a, b| {
            c.drop_invalid
                && h == Hook::Prerouting
                && p.ct_state == CtStates::INVALID
                && p.l4proto != L4Proto::Tcp
                && a.verdict == FinalVerdict::Drop
                && b.verdict == FinalVerdict::Accept
        },
    },
    Known {
        // iptables returns 15008 only in the nat ISTIO_INBOUND chain; the mangle (TPROXY) path
        // has no such rule, so new connections are tproxied and established ones marked
        // (ISTIO_DIVERT). The nftables generator skips 15008 in TPROXY mode too.
        name: "tproxy: iptables diverts the tunnel port 15008 (tproxy, or the mark of ISTIO_DIVERT), nftables does not",
        holds: |c, h, p, a, b| {
            c.tproxy
                && h == Hook::Prerouting
                && p.l4proto == L4Proto::Tcp
                && p.dport == 15008
                && ((a.tproxy.is_some() && b.tproxy.is_none()) || (a.mark != b.mark && b.mark == p.mark))
        },
    },
];

#[test]
fn istio_goldens_interpreter_translation_and_compiler_agree() {
    let mut seen: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut unexplained = Vec::new();
    let mut checked = 0;
    for case in cases() {
        let path = support::conformance_dir()
            .join("iptables")
            .join(format!("{}.golden", case.name));
        let Ok(text) = std::fs::read_to_string(&path) else {
            // Istio has an nftables golden for this case but no iptables one.
            continue;
        };
        checked += 1;
        let trace = parse_trace(&text).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let groups = |n: &str| TEST_GROUPS.iter().find(|(g, _)| *g == n).map(|(_, id)| *id);
        let mut parts = trace.parts();
        for p in &mut parts {
            let unknown = p.resolve_owners(&|_| None, &groups);
            assert!(
                unknown.is_empty(),
                "{}: unknown owners {unknown:?}",
                case.name
            );
        }
        let translated = translate_all(&parts).unwrap();
        let cfg = case.config();
        let compiled = compile(&cfg);
        let ctx = Ctx {
            has_v6_part: trace.v6.is_some(),
            drop_invalid: cfg.drop_invalid,
            tproxy: cfg.mode == InterceptionMode::Tproxy,
        };
        let ids: Vec<u32> = TEST_GROUPS
            .iter()
            .map(|(_, id)| *id)
            .chain([1, 2, 3, 4, 888])
            .collect();
        let d = dims(&parts, &ids);
        let mut n = 0usize;
        for (hook, p) in &every_packet(&d, 0x5eed) {
            let hook = *hook;
            n += 1;
            let a = interpret(&parts, p, hook).unwrap();
            let b = eval(&translated, p, hook).unwrap();
            assert_eq!(
                a, b,
                "{}: interpreter vs translation at {hook:?} for {p:?}",
                case.name
            );
            let c = eval(&compiled, p, hook).unwrap();
            if a == c {
                continue;
            }
            match KNOWN.iter().find(|k| (k.holds)(&ctx, hook, p, &a, &c)) {
                Some(k) => {
                    let v = seen.entry(k.name).or_default();
                    if v.last() != Some(&case.name) {
                        v.push(case.name);
                    }
                }
                None => unexplained.push(format!(
                    "{}: {hook:?} {p:?}\n  iptables: {a:?}\n  compiled: {c:?}",
                    case.name
                )),
            }
        }
        assert!(n > 20_000, "{}: corpus of {n} packets", case.name);
    }
    assert_eq!(checked, 27, "27 iptables goldens");
    assert!(
        unexplained.is_empty(),
        "{} packets where Istio's iptables golden and our compiler differ, unexplained; first:\n{}",
        unexplained.len(),
        unexplained
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    for k in &KNOWN {
        let cases = seen.get(k.name).cloned().unwrap_or_default();
        eprintln!("{}: {}", k.name, cases.join(", "));
        assert!(
            !cases.is_empty(),
            "documented difference never seen: {}",
            k.name
        );
    }
}
