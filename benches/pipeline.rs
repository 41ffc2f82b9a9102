//! The pure pipeline and the read-back path, at scale: compile Istio's capture with N excluded
//! CIDRs and N excluded outbound ports (N = 10, 100, 1 000, 10 000), encode it into one batch,
//! translate Istio's 27 iptables goldens, and (in a private network namespace) apply a
//! 10 000-CIDR capture and dump + decode it back.
//!
//! `cargo bench --bench pipeline`; compare medians within one run.

use nftmesh_test_support::skip;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use nftmesh::iptables::{parse_trace, translate_all};
use nftmesh::model::compile;
use nftmesh::model::config::IstioSettings;
use nftmesh::netlink::Connection;
use nftmesh::netlink::Transaction;
use std::net::Ipv4Addr;

const SIZES: [usize; 4] = [10, 100, 1000, 10000];

/// Istio's settings with outbound capture of everything, `n` excluded /32s that never merge and
/// `n` excluded outbound ports.
fn settings(n: usize) -> IstioSettings {
    let cidrs: Vec<String> = (0..n as u32)
        .map(|i| format!("{}/32", Ipv4Addr::from(0xAC10_0000u32 + 2 * i)))
        .collect();
    let ports: Vec<String> = (0..n).map(|i| (20000 + 2 * i).to_string()).collect();
    IstioSettings {
        proxy_gid: "1337".into(),
        inbound_ports: "*".into(),
        outbound_ip_ranges_include: "*".into(),
        outbound_ip_ranges_exclude: cidrs.join(","),
        outbound_ports_exclude: ports.join(","),
        ..IstioSettings::default()
    }
}

fn goldens() -> Vec<String> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/istio/sidecar/iptables"
    );
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("goldens")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "golden"))
        .collect();
    v.sort();
    v.iter()
        .map(|p| std::fs::read_to_string(p).expect("golden"))
        .collect()
}

fn pure(c: &mut Criterion) {
    let mut g = c.benchmark_group("compile");
    for n in SIZES {
        let s = settings(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &s, |b, s| {
            b.iter(|| compile(&s.to_config().expect("config")).rule_count())
        });
    }
    g.finish();
    let mut g = c.benchmark_group("encode_batch");
    for n in SIZES {
        let rs = compile(&settings(n).to_config().expect("config"));
        g.bench_with_input(BenchmarkId::from_parameter(n), &rs, |b, rs| {
            b.iter(|| {
                Transaction::plan(rs, &Default::default(), None, 1)
                    .expect("plan")
                    .bytes
                    .len()
            })
        });
    }
    g.finish();
    let texts = goldens();
    c.bench_function("translate_27_istio_goldens", |b| {
        b.iter(|| {
            texts
                .iter()
                .map(|t| {
                    translate_all(&parse_trace(t).expect("parse").parts())
                        .expect("translate")
                        .rule_count()
                })
                .sum::<usize>()
        })
    });
}

fn kernel(c: &mut Criterion) {
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        skip::skip(&format!("cannot create a network namespace: {e}"));
        return;
    }
    let big = compile(&settings(10000).to_config().expect("config"));
    let ids: Vec<_> = big
        .tables
        .iter()
        .map(|t| (t.family, t.name.clone()))
        .collect();
    let mut conn = Connection::open().expect("netlink socket");
    conn.apply(&big).expect("apply");
    let mut g = c.benchmark_group("kernel");
    g.sample_size(20);
    // 10 000 excluded CIDRs only (no ports): the "10 000-CIDR set".
    let mut only_cidrs = settings(10000);
    only_cidrs.outbound_ports_exclude = String::new();
    let cidrs = compile(&only_cidrs.to_config().expect("config"));
    let mut other = Connection::open().expect("netlink socket");
    other.apply(&cidrs).expect("apply");
    g.bench_function("apply_10000_cidrs_replace_in_place", |b| {
        b.iter(|| other.apply(&cidrs).expect("apply").messages)
    });
    g.bench_function("apply_10000_cidrs_and_ports_replace_in_place", |b| {
        b.iter(|| conn.apply(&big).expect("apply").messages)
    });
    g.bench_function("dump_and_decode_10000_cidrs_and_ports", |b| {
        b.iter(|| conn.dump_ruleset(&ids).expect("dump").rule_count())
    });
    g.finish();
}

criterion_group!(benches, pure, kernel);
criterion_main!(benches);
