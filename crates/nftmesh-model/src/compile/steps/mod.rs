//! The steps of Istio's generator, in its order, producing typed rules.
//!
//! [`run`] lists the steps in the order Istio's generator takes them (the order of rules in a
//! chain follows from it); the first steps are here, the others in one module per part of the
//! layout: `inbound` (capture into the proxy's inbound port), `outbound` (the `istio-output`
//! chain), `dns` (DNS capture and its conntrack zones) and `tproxy` (the marks of TPROXY mode).
//! `parts` holds the small constructors they share.

mod dns;
mod inbound;
mod outbound;
mod parts;
mod tproxy;

use super::builder::{chain_names::*, Builder, MANGLE_TABLE, NAT_TABLE};
use crate::config::{CaptureConfig, InterceptionMode};
use crate::expr::{CtStates, Match, Statement, Verdict};
use ipnet::IpNet;
use parts::{counter, iif, jump, oif, redirect, ret, rule, tcp, tunnel_return};

/// Write the rules of `cfg` into `b`, step by step in Istio's order.
pub(crate) fn run(cfg: &CaptureConfig, b: &mut Builder) {
    let dns = cfg.dns_in_effect();
    let host_lo = IpNet::V4(cfg.host_ipv4_loopback_cidr);

    exclude_interfaces(cfg, b);
    virtual_interface_returns(cfg, b);
    if cfg.drop_invalid {
        drop_invalid(b);
    }
    redirect_chains(cfg, b);
    inbound::inbound(cfg, b, host_lo);
    outbound::output_start(cfg, b);
    outbound::proxy_owners(cfg, b, dns, host_lo);
    outbound::owner_groups(cfg, b);
    if dns {
        dns::dns_capture(cfg, b);
    }
    outbound::excludes(cfg, b, host_lo);
    outbound::ports_include(cfg, b);
    outbound::cidrs_include(cfg, b);
    if cfg.mode == InterceptionMode::Tproxy {
        tproxy::tproxy_marks(cfg, b, host_lo);
    }
}

/// Let traffic on excluded interfaces through, in `nat` (and in TPROXY mode `mangle`).
fn exclude_interfaces(cfg: &CaptureConfig, b: &mut Builder) {
    let mut tables = vec![NAT_TABLE];
    if cfg.mode == InterceptionMode::Tproxy {
        tables.push(MANGLE_TABLE);
    }
    for table in tables {
        for name in &cfg.exclude_interfaces {
            b.append(
                table,
                PREROUTING,
                rule(vec![iif(name)], vec![counter(), ret()]),
            );
            b.append(table, OUTPUT, rule(vec![oif(name)], vec![counter(), ret()]));
        }
    }
}

/// Put a return for each rerouted virtual interface first in `nat` prerouting (the outbound
/// include step later inserts its redirects before them).
fn virtual_interface_returns(cfg: &CaptureConfig, b: &mut Builder) {
    for name in &cfg.reroute_virtual_interfaces {
        b.insert(
            NAT_TABLE,
            PREROUTING,
            0,
            rule(vec![iif(name)], vec![counter(), ret()]),
        );
    }
}

/// Drop TCP packets conntrack finds invalid, through the `istio-drop` chain.
fn drop_invalid(b: &mut Builder) {
    b.append(
        MANGLE_TABLE,
        PREROUTING,
        rule(
            vec![
                tcp(),
                Match::CtState {
                    negate: false,
                    states: CtStates::INVALID,
                },
            ],
            vec![counter(), jump(DROP)],
        ),
    );
    b.append(
        MANGLE_TABLE,
        DROP,
        rule(vec![], vec![counter(), Statement::Verdict(Verdict::Drop)]),
    );
}

/// The tunnel port's return in `nat` inbound, and the two redirect chains: outbound to the
/// proxy port, inbound to the inbound capture port.
fn redirect_chains(cfg: &CaptureConfig, b: &mut Builder) {
    b.append(NAT_TABLE, INBOUND, tunnel_return(cfg));
    b.append(
        NAT_TABLE,
        REDIRECT,
        rule(vec![tcp()], vec![counter(), redirect(cfg.proxy_port)]),
    );
    b.append(
        NAT_TABLE,
        IN_REDIRECT,
        rule(
            vec![tcp()],
            vec![counter(), redirect(cfg.inbound_capture_port)],
        ),
    );
}
