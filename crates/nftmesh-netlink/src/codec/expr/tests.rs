//! The size a built expression says it takes is what libnftnl writes, for every kind and for
//! the shortest and longest values and names each carries.

use super::*;
use crate::codec::nftnl::MsgWriter;
use crate::codec::sys::{NFPROTO_INET, NLM_F_CREATE};

/// Which variant `e` is, so that the samples below are known to cover every one.
fn variant(e: &Expr) -> usize {
    match e {
        Expr::Meta { .. } => 0,
        Expr::MetaSet { .. } => 1,
        Expr::Ct { .. } => 2,
        Expr::CtSet { .. } => 3,
        Expr::Payload { .. } => 4,
        Expr::Cmp { .. } => 5,
        Expr::Range { .. } => 6,
        Expr::Bitwise { .. } => 7,
        Expr::Byteorder { .. } => 8,
        Expr::Lookup { .. } => 9,
        Expr::Immediate { .. } => 10,
        Expr::Verdict { .. } => 11,
        Expr::Counter => 12,
        Expr::Log { .. } => 13,
        Expr::Redir { .. } => 14,
        Expr::Tproxy { .. } => 15,
        Expr::Nat { .. } => 16,
        Expr::Socket { .. } => 17,
        // Never encoded: refused before anything is built.
        Expr::Unknown { .. } => 18,
    }
}

fn samples() -> Vec<Expr> {
    let name = |n: usize| "s".repeat(n);
    let mut out = vec![
        Expr::Meta { key: 1, dreg: 1 },
        Expr::MetaSet { key: 3, sreg: 1 },
        Expr::Ct { key: 0, dreg: 1 },
        Expr::CtSet { key: 3, sreg: 1 },
        Expr::Payload {
            base: 1,
            offset: 12,
            len: 4,
            dreg: 1,
        },
        Expr::Byteorder {
            sreg: 1,
            dreg: 1,
            op: 0,
            len: 4,
            size: 2,
        },
        Expr::Counter,
        Expr::Log { prefix: None },
        Expr::Redir {
            reg_proto_min: None,
            flags: 0,
        },
        Expr::Redir {
            reg_proto_min: Some(1),
            flags: 4,
        },
        Expr::Tproxy {
            family: 2,
            reg_addr: None,
            reg_port: Some(1),
        },
        Expr::Tproxy {
            family: 10,
            reg_addr: Some(1),
            reg_port: Some(2),
        },
        Expr::Nat {
            kind: 1,
            family: 2,
            reg_addr_min: None,
        },
        Expr::Nat {
            kind: 0,
            family: 2,
            reg_addr_min: Some(1),
        },
        Expr::Socket { key: 1, dreg: 1 },
        Expr::Verdict {
            code: 1,
            chain: None,
        },
    ];
    for n in [1, 2, 3, 4, 5, bounds::VALUE_MAX] {
        let v = vec![7u8; n];
        out.push(Expr::Cmp {
            sreg: 1,
            op: 0,
            data: v.clone(),
        });
        out.push(Expr::Range {
            sreg: 1,
            op: 0,
            from: v.clone(),
            to: v.clone(),
        });
        out.push(Expr::Bitwise {
            sreg: 1,
            dreg: 1,
            len: n as u32,
            mask: v.clone(),
            xor: v.clone(),
        });
        out.push(Expr::Immediate { dreg: 1, data: v });
    }
    for n in [1, 2, 3, 4, 5, bounds::NAME_MAX] {
        out.push(Expr::Lookup {
            sreg: 1,
            set: name(n),
            set_id: None,
            invert: false,
        });
        out.push(Expr::Lookup {
            sreg: 1,
            set: name(n),
            set_id: Some(3),
            invert: true,
        });
        out.push(Expr::Verdict {
            code: -3,
            chain: Some(name(n)),
        });
    }
    for n in [0, 1, 2, 3, bounds::LOG_PREFIX_MAX] {
        out.push(Expr::Log {
            prefix: Some(name(n)),
        });
    }
    out
}

#[test]
fn every_kind_takes_the_bytes_its_builder_counted() {
    let samples = samples();
    let mut seen: Vec<usize> = samples.iter().map(variant).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, (0..18).collect::<Vec<_>>(), "a variant has no sample");
    for e in &samples {
        let built = encode(e).unwrap_or_else(|err| panic!("{e:?}: {err}"));
        let expected = bounds::rule_message_len("t", "c", &[built.encoded_len()], None).unwrap();
        let mut w = MsgWriter::new();
        w.rule(NLM_F_CREATE, NFPROTO_INET, "t", "c", vec![built], None, 1)
            .unwrap();
        assert_eq!(w.out.len(), expected, "{e:?}");
    }
}

#[test]
fn an_unknown_expression_is_refused_before_anything_is_built() {
    let e = Expr::Unknown {
        name: "quota".into(),
        raw: vec![0; 8],
    };
    assert!(matches!(encode(&e), Err(BuildError::Unsupported(n)) if n == "quota"));
}
