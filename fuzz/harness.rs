//! The fuzz targets' bodies, shared by `fuzz/fuzz_targets/*` (libFuzzer) and by
//! `tests/fuzz_regressions.rs`, which replays every committed reproducer and seed in CI.
//! A panic anywhere here is a bug: bad input must give a typed error.

use nftmesh::iptables::{parse, parse_trace, translate};
use nftmesh::model::config::{CaptureConfig, GroupNames, IstioSettings};
use nftmesh::model::expr::IpVersion;
use nftmesh::model::ruleset::Family;
use nftmesh::model::{compile, render};
use nftmesh::netlink::{decode, raise, wire};
use std::collections::HashMap;

/// iptables-save text: parse as IPv4, IPv6 and as an Istio trace. What parses prints back to
/// text that parses to the same rules, and translates or is refused with a typed error.
pub fn iptables(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for family in [IpVersion::V4, IpVersion::V6] {
        if let Ok(rs) = parse(text, family) {
            let printed = rs.to_string();
            let again = parse(&printed, family)
                .unwrap_or_else(|e| panic!("printed text does not parse: {e}\n{printed}"));
            assert_eq!(again.to_string(), printed, "print → parse → print");
            if let Ok(nft) = translate(&rs) {
                let _ = render(&nft);
            }
        }
    }
    let _ = parse_trace(text);
}

/// A JSON capture config: it loads or is refused; what loads compiles and renders.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = CaptureConfig::from_json(text) {
        if cfg.validate().is_ok() {
            let _ = render(&compile(&cfg));
        }
    }
}

/// Istio's list syntax (ports, CIDRs, uids, groups, interfaces): the input's lines fill the
/// settings' string fields in order; the result converts to a config or is refused.
pub fn istio_lists(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n').map(str::to_string);
    let mut s = IstioSettings::default();
    let fields: [&mut String; 19] = [
        &mut s.proxy_port,
        &mut s.inbound_capture_port,
        &mut s.inbound_tunnel_port,
        &mut s.proxy_uid,
        &mut s.proxy_gid,
        &mut s.inbound_interception_mode,
        &mut s.inbound_tproxy_mark,
        &mut s.inbound_tproxy_route_table,
        &mut s.inbound_ports,
        &mut s.inbound_ports_exclude,
        &mut s.outbound_ports_include,
        &mut s.outbound_ports_exclude,
        &mut s.outbound_ip_ranges_include,
        &mut s.outbound_ip_ranges_exclude,
        &mut s.owner_groups_include,
        &mut s.owner_groups_exclude,
        &mut s.exclude_interfaces,
        &mut s.kube_virt_interfaces,
        &mut s.dns_servers,
    ];
    for f in fields {
        match lines.next() {
            Some(l) => *f = l,
            None => break,
        }
    }
    let flags = data.first().copied().unwrap_or(0);
    s.redirect_dns = flags & 1 != 0;
    s.capture_all_dns = flags & 2 != 0;
    s.drop_invalid = flags & 4 != 0;
    s.ipv6 = flags & 8 != 0;
    if let Ok(mut cfg) = s.to_config() {
        let db = |n: &str| (n.len() < 4).then_some(n.len() as u32 + 100);
        if cfg.resolve_groups(&db, GroupNames::Strict).is_ok() && cfg.validate().is_ok() {
            let _ = render(&compile(&cfg));
        }
    }
}

/// Arbitrary bytes as a kernel reply to a rule dump: netlink messages → attributes → rule
/// expressions → the model; and the whole input as one expression list.
pub fn netlink_reply(data: &[u8]) {
    let family = match data.first().map(|b| b % 3) {
        Some(0) => Family::Ip,
        Some(1) => Family::Ip6,
        _ => Family::Inet,
    };
    let body = data.get(1..).unwrap_or(&[]);
    let sets = HashMap::new();
    let raise_all = |exprs: &[u8]| {
        if let Ok(list) = decode::decode_exprs(exprs) {
            let _ = raise::raise_rule(family, &list, &sets, None);
        }
    };
    raise_all(body);
    if let Ok(msgs) = wire::messages(body) {
        for m in msgs {
            let _ = wire::error_payload(m.payload);
            let Some(area) = m.payload.get(4..) else {
                continue;
            };
            if let Ok(at) = wire::attrs(area) {
                for (ty, v) in &at {
                    let _ = wire::string(v);
                    let _ = (wire::be32(v), wire::be64(v));
                    if *ty == nftmesh::netlink::sys::NFTA_RULE_EXPRESSIONS {
                        raise_all(v);
                    }
                    if let Some(c) = decode::comment_of(v) {
                        assert!(!c.contains('\0'));
                    }
                }
            }
        }
    }
}
