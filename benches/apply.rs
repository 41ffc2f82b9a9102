//! Apply cost, with the two costs the design separates measured apart: a transaction on a
//! kept-open netfilter socket versus opening and closing a socket (the kernel's RCU wait on
//! close). Runs in a network namespace of its own (the bench process unshares first).
//!
//! `cargo bench --bench apply`; compare medians within one run.

use nftmesh_test_support::skip;

use criterion::{criterion_group, criterion_main, Criterion};
use nftmesh::model::config::CaptureConfig;
use nftmesh::model::{compile, render};
use nftmesh::netlink::Connection;

fn enter_private_netns() -> bool {
    match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        Ok(()) => true,
        Err(e) => {
            skip::skip(&format!("cannot create a network namespace: {e}"));
            false
        }
    }
}

fn bench(c: &mut Criterion) {
    if !enter_private_netns() {
        return;
    }
    let a = compile(&CaptureConfig::sidecar());
    let mut b_cfg = CaptureConfig::sidecar();
    b_cfg.inbound_capture_port = 15007;
    let b = compile(&b_cfg);
    let mut conn = Connection::open().expect("netlink socket");
    conn.apply(&a).expect("first apply");

    let mut g = c.benchmark_group("apply");
    let mut flip = false;
    g.bench_function("replace_in_place_kept_open_socket", |bench| {
        bench.iter(|| {
            flip = !flip;
            conn.apply(if flip { &b } else { &a }).expect("apply")
        })
    });
    g.bench_function("open_and_close_socket_only", |bench| {
        bench.iter(|| drop(Connection::open().expect("socket")))
    });
    g.bench_function("replace_with_fresh_socket_each_time", |bench| {
        bench.iter(|| {
            flip = !flip;
            Connection::open()
                .expect("socket")
                .apply(if flip { &b } else { &a })
                .expect("apply")
        })
    });
    g.bench_function("plan_batch_only_no_kernel", |bench| {
        bench.iter(|| {
            nftmesh::netlink::Transaction::plan(&a, &Default::default(), None, 1)
                .expect("plan")
                .bytes
                .len()
        })
    });
    g.bench_function("render_nft_text_only", |bench| {
        bench.iter(|| render(&a).len())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
