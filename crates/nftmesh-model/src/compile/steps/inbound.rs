//! Inbound capture: prerouting sends TCP to `istio-inbound`, which hands the included ports to
//! the proxy's inbound capture port (through `istio-in-redirect` in `nat`, or in TPROXY mode
//! through `istio-divert`/`istio-tproxy` in `mangle`).

use super::parts::{
    counter, daddr, established, jump, loopbacks, port, ret, rule, tcp, tunnel_return,
};
use crate::compile::builder::{chain_names::*, Builder, MANGLE_TABLE, NAT_TABLE};
use crate::config::{CaptureConfig, InterceptionMode, PortSelection};
use crate::expr::{Direction, L4Proto, MarkValue, Match, Statement, Verdict};
use ipnet::IpNet;

/// The inbound steps; nothing when no inbound port is included.
pub(super) fn inbound(cfg: &CaptureConfig, b: &mut Builder, host_lo: IpNet) {
    let tproxy = cfg.mode == InterceptionMode::Tproxy;
    if cfg.inbound_ports == PortSelection::Ports(Vec::new()) {
        return;
    }
    let table = if tproxy { MANGLE_TABLE } else { NAT_TABLE };
    if tproxy {
        divert_and_tproxy(cfg, b, host_lo);
    }
    b.append(
        table,
        PREROUTING,
        rule(vec![tcp()], vec![counter(), jump(INBOUND)]),
    );
    if tproxy {
        // Not in Istio: its TPROXY chain lacks the tunnel-port return its NAT chain has.
        b.append(MANGLE_TABLE, INBOUND, tunnel_return(cfg));
    }
    match &cfg.inbound_ports {
        PortSelection::All => {
            if let Some(m) = port(
                Direction::Dst,
                L4Proto::Tcp,
                false,
                &cfg.inbound_ports_exclude,
            ) {
                b.append(table, INBOUND, rule(vec![tcp(), m], vec![counter(), ret()]));
            }
            capture(b, tproxy, None);
        }
        PortSelection::Ports(ports) => {
            if let Some(m) = port(Direction::Dst, L4Proto::Tcp, false, ports) {
                capture(b, tproxy, Some(m));
            }
        }
    }
}

/// TPROXY mode's `istio-divert` (mark and accept) and `istio-tproxy` (to the inbound capture
/// port, for every destination but the host's loopback).
fn divert_and_tproxy(cfg: &CaptureConfig, b: &mut Builder, host_lo: IpNet) {
    let mark_set = Statement::MarkSet(MarkValue::Value(cfg.tproxy_mark));
    b.append(
        MANGLE_TABLE,
        DIVERT,
        rule(vec![], vec![counter(), mark_set.clone()]),
    );
    b.append(
        MANGLE_TABLE,
        DIVERT,
        rule(vec![], vec![counter(), Statement::Verdict(Verdict::Accept)]),
    );
    for (version, lo) in loopbacks(cfg, host_lo) {
        b.append(
            MANGLE_TABLE,
            TPROXY,
            rule(
                vec![tcp(), daddr(true, lo)],
                vec![
                    Statement::Tproxy {
                        version: Some(version),
                        addr: None,
                        port: Some(cfg.inbound_capture_port),
                    },
                    mark_set.clone(),
                    counter(),
                    Statement::Verdict(Verdict::Accept),
                ],
            ),
        );
    }
}

/// Hand inbound TCP (to `ports` when given) to the proxy: in TPROXY mode established
/// connections through `istio-divert` and new ones through `istio-tproxy`, otherwise through
/// `istio-in-redirect`.
fn capture(b: &mut Builder, tproxy: bool, ports: Option<Match>) {
    let on_ports = |mut matches: Vec<Match>| {
        matches.extend(ports.clone());
        matches
    };
    if tproxy {
        b.append(
            MANGLE_TABLE,
            INBOUND,
            rule(
                on_ports(vec![tcp(), established()]),
                vec![counter(), jump(DIVERT)],
            ),
        );
        b.append(
            MANGLE_TABLE,
            INBOUND,
            rule(on_ports(vec![tcp()]), vec![counter(), jump(TPROXY)]),
        );
    } else {
        b.append(
            NAT_TABLE,
            INBOUND,
            rule(on_ports(vec![tcp()]), vec![counter(), jump(IN_REDIRECT)]),
        );
    }
}
