//! DNS capture: `istio-output-dns` redirects DNS (to every server, or to the configured ones)
//! to the DNS capture port, and in `raw` splits DNS over UDP into conntrack zones.

use super::parts::{
    addr, counter, dport, enabled, jump, port, proxy_owner_matches, redirect, rule, servers, tcp,
    DNS_PORT,
};
use crate::compile::builder::{chain_names::*, Builder, NAT_TABLE, RAW_TABLE};
use crate::config::{CaptureConfig, DNS_CAPTURE_PORT};
use crate::expr::{Direction, IpVersion, L4Proto, Match, Statement};

/// Send DNS from `nat` and `raw` output to `istio-output-dns` and redirect it there.
pub(super) fn dns_capture(cfg: &CaptureConfig, b: &mut Builder) {
    b.append(
        RAW_TABLE,
        OUTPUT,
        rule(vec![], vec![counter(), jump(OUTPUT_DNS)]),
    );
    b.append(
        NAT_TABLE,
        OUTPUT_CHAIN,
        rule(vec![], vec![counter(), jump(OUTPUT_DNS)]),
    );
    for proto in [L4Proto::Tcp, L4Proto::Udp] {
        if cfg.dns.capture_all {
            let mut matches = vec![dport(proto, false, &[DNS_PORT])];
            if proto == L4Proto::Tcp {
                matches.insert(0, tcp());
            }
            b.append(
                NAT_TABLE,
                OUTPUT_DNS,
                rule(matches, vec![counter(), redirect(DNS_CAPTURE_PORT)]),
            );
            continue;
        }
        for version in [IpVersion::V4, IpVersion::V6] {
            if let Some(v) = servers(cfg, version).filter(|_| enabled(cfg, version)) {
                b.append(
                    NAT_TABLE,
                    OUTPUT_DNS,
                    rule(
                        vec![
                            addr(Direction::Dst, false, v),
                            dport(proto, false, &[DNS_PORT]),
                        ],
                        vec![counter(), redirect(DNS_CAPTURE_PORT)],
                    ),
                );
            }
        }
    }
    dns_conntrack_zones(cfg, b);
}

/// Split DNS over UDP into conntrack zones: zone 1 between the agent and upstream servers,
/// zone 2 between applications and the agent.
fn dns_conntrack_zones(cfg: &CaptureConfig, b: &mut Builder) {
    for owner in proxy_owner_matches(cfg) {
        b.append(
            RAW_TABLE,
            OUTPUT_DNS,
            rule(
                vec![udp(Direction::Dst, DNS_PORT), owner.clone()],
                vec![counter(), Statement::CtZoneSet(1)],
            ),
        );
        b.append(
            RAW_TABLE,
            OUTPUT_DNS,
            rule(
                vec![udp(Direction::Src, DNS_CAPTURE_PORT), owner],
                vec![counter(), Statement::CtZoneSet(2)],
            ),
        );
    }
    b.append(
        RAW_TABLE,
        PREROUTING,
        rule(vec![], vec![counter(), jump(INBOUND)]),
    );
    if cfg.dns.capture_all {
        zone_all_dns(b);
    } else {
        zone_dns_to_servers(cfg, b);
    }
}

/// `udp sport PORT` or `udp dport PORT`.
fn udp(dir: Direction, p: u16) -> Match {
    port(dir, L4Proto::Udp, false, &[p]).unwrap_or(tcp())
}

/// With every DNS server captured: DNS out in zone 2, replies in zone 1.
fn zone_all_dns(b: &mut Builder) {
    b.append(
        RAW_TABLE,
        OUTPUT_DNS,
        rule(
            vec![udp(Direction::Dst, DNS_PORT)],
            vec![counter(), Statement::CtZoneSet(2)],
        ),
    );
    b.append(
        RAW_TABLE,
        INBOUND,
        rule(
            vec![udp(Direction::Src, DNS_PORT)],
            vec![counter(), Statement::CtZoneSet(1)],
        ),
    );
}

/// With the configured servers captured: DNS to them in zone 2, their replies in zone 1.
fn zone_dns_to_servers(cfg: &CaptureConfig, b: &mut Builder) {
    for version in [IpVersion::V4, IpVersion::V6] {
        let Some(v) = servers(cfg, version).filter(|_| enabled(cfg, version)) else {
            continue;
        };
        b.append(
            RAW_TABLE,
            OUTPUT_DNS,
            rule(
                vec![
                    udp(Direction::Dst, DNS_PORT),
                    addr(Direction::Dst, false, v.clone()),
                ],
                vec![counter(), Statement::CtZoneSet(2)],
            ),
        );
        b.append(
            RAW_TABLE,
            INBOUND,
            rule(
                vec![
                    udp(Direction::Src, DNS_PORT),
                    addr(Direction::Src, false, v),
                ],
                vec![counter(), Statement::CtZoneSet(1)],
            ),
        );
    }
}
