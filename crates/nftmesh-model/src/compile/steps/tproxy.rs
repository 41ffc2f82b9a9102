//! TPROXY mode's marks: connections the proxy accepted through TPROXY keep the mark in
//! conntrack so their replies route back to it, and `istio-inbound` in `mangle` lets marked,
//! passthrough and proxy-to-pod traffic through.

use super::parts::{
    counter, daddr, iif, loopbacks, mark, oif, proxy_owner_matches, ret, rule, saddr, tcp,
    v4_inbound_passthrough, v6_inbound_passthrough,
};
use crate::compile::builder::{chain_names::*, Builder, MANGLE_TABLE};
use crate::config::{CaptureConfig, OUTBOUND_MARK};
use crate::expr::{MarkValue, Match, Statement};
use ipnet::IpNet;

/// The TPROXY mode steps, after all others.
pub(super) fn tproxy_marks(cfg: &CaptureConfig, b: &mut Builder, host_lo: IpNet) {
    let m = cfg.tproxy_mark;
    b.append(
        MANGLE_TABLE,
        PREROUTING,
        rule(
            vec![tcp(), mark(false, m)],
            vec![counter(), Statement::CtMarkSet(MarkValue::FromMark)],
        ),
    );
    b.append(
        MANGLE_TABLE,
        OUTPUT,
        rule(
            vec![oif("lo"), tcp(), mark(false, m)],
            vec![counter(), ret()],
        ),
    );
    mark_proxy_to_pod(cfg, b, host_lo);
    b.append(
        MANGLE_TABLE,
        OUTPUT,
        rule(
            vec![
                tcp(),
                Match::CtMark {
                    negate: false,
                    mask: u32::MAX,
                    value: m,
                },
            ],
            vec![counter(), Statement::MarkSet(MarkValue::FromCtMark)],
        ),
    );
    inbound_returns(cfg, b);
}

/// Mark the proxy's own traffic over `lo` to the pod (not to the host's loopback) with the
/// outbound mark.
fn mark_proxy_to_pod(cfg: &CaptureConfig, b: &mut Builder, host_lo: IpNet) {
    for owner in proxy_owner_matches(cfg) {
        for (_, lo) in loopbacks(cfg, host_lo) {
            b.append(
                MANGLE_TABLE,
                OUTPUT,
                rule(
                    vec![oif("lo"), tcp(), daddr(true, lo), owner.clone()],
                    vec![
                        counter(),
                        Statement::MarkSet(MarkValue::Value(OUTBOUND_MARK)),
                    ],
                ),
            );
        }
    }
}

/// First in `mangle`'s `istio-inbound`: return marked TCP, TCP from the inbound passthrough
/// source over `lo`, and TCP over `lo` without the outbound mark.
fn inbound_returns(cfg: &CaptureConfig, b: &mut Builder) {
    b.insert(
        MANGLE_TABLE,
        INBOUND,
        0,
        rule(
            vec![tcp(), mark(false, cfg.tproxy_mark)],
            vec![counter(), ret()],
        ),
    );
    b.insert(
        MANGLE_TABLE,
        INBOUND,
        1,
        rule(
            vec![iif("lo"), tcp(), saddr(v4_inbound_passthrough())],
            vec![counter(), ret()],
        ),
    );
    if cfg.ipv6 {
        b.insert(
            MANGLE_TABLE,
            INBOUND,
            1,
            rule(
                vec![iif("lo"), tcp(), saddr(v6_inbound_passthrough())],
                vec![counter(), ret()],
            ),
        );
    }
    b.insert(
        MANGLE_TABLE,
        INBOUND,
        2,
        rule(
            vec![iif("lo"), tcp(), mark(true, OUTBOUND_MARK)],
            vec![counter(), ret()],
        ),
    );
}
