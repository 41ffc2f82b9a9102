//! Trace events built attribute by attribute as the kernel's `nf_tables_trace.c` writes them
//! (`nft_trace_notify`: table, chain, rule handle, type, verdict, id, headers, interfaces,
//! mark, nfproto), then parsed.

use super::*;

use crate::codec::wire::testing::attr;

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// An IPv4 TCP SYN 10.77.0.1:40000 -> 10.77.0.2:8080: 20 bytes of IP header, 20 of TCP.
fn syn_headers() -> (Vec<u8>, Vec<u8>) {
    let mut ip = vec![0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&[10, 77, 0, 1, 10, 77, 0, 2]);
    let mut tcp = 40000u16.to_be_bytes().to_vec();
    tcp.extend_from_slice(&8080u16.to_be_bytes());
    tcp.extend_from_slice(&[0; 9]);
    tcp.push(0x02);
    tcp.extend_from_slice(&[0; 6]);
    (ip, tcp)
}

fn rule_event(verdict: Option<(i32, Option<&str>)>) -> Vec<u8> {
    let mut p = vec![NFPROTO_INET, 0, 0, 0];
    p.extend(attr(NFTA_TRACE_TABLE, &cstr("istio-proxy-nat")));
    p.extend(attr(NFTA_TRACE_CHAIN, &cstr("istio-redirect")));
    p.extend(attr(NFTA_TRACE_RULE_HANDLE, &7u64.to_be_bytes()));
    p.extend(attr(NFTA_TRACE_TYPE, &3u32.to_be_bytes()));
    if let Some((code, chain)) = verdict {
        let mut v = attr(NFTA_VERDICT_CODE, &(code as u32).to_be_bytes());
        if let Some(c) = chain {
            v.extend(attr(NFTA_VERDICT_CHAIN, &cstr(c)));
        }
        p.extend(attr(NFTA_TRACE_VERDICT | 0x8000, &v));
    }
    p.extend(attr(NFTA_TRACE_ID, &0xdead_beefu32.to_be_bytes()));
    let (ip, tcp) = syn_headers();
    p.extend(attr(NFTA_TRACE_NETWORK_HEADER, &ip));
    p.extend(attr(NFTA_TRACE_TRANSPORT_HEADER, &tcp));
    p.extend(attr(NFTA_TRACE_OIF, &2u32.to_be_bytes()));
    p.extend(attr(NFTA_TRACE_MARK, &0x539u32.to_be_bytes()));
    // NFTA_TRACE_NFPROTO (15): NFPROTO_IPV4.
    p.extend(attr(15, &2u32.to_be_bytes()));
    p
}

#[test]
fn a_rule_event_gives_place_verdict_and_packet() {
    let e = TraceEvent::parse(&rule_event(Some((NF_ACCEPT, None)))).unwrap();
    assert_eq!(e.id, 0xdead_beef);
    assert_eq!(e.family, Some(Family::Inet));
    assert_eq!(e.kind, TraceKind::Rule);
    assert_eq!(
        (e.table.as_str(), e.chain.as_str()),
        ("istio-proxy-nat", "istio-redirect")
    );
    assert_eq!(e.handle, Some(7));
    assert_eq!(e.verdict, Some(TraceVerdict::Accept));
    assert_eq!((e.oif, e.iif, e.mark), (Some(2), None, Some(0x539)));
    let p = e.packet.unwrap();
    assert_eq!(p.to_string(), "tcp 10.77.0.1:40000 -> 10.77.0.2:8080 [syn]");
}

#[test]
fn verdicts_with_chains_and_unknown_codes_survive() {
    let jump = TraceEvent::parse(&rule_event(Some((NFT_JUMP, Some("istio-output"))))).unwrap();
    assert_eq!(
        jump.verdict,
        Some(TraceVerdict::Jump("istio-output".into()))
    );
    assert_eq!(jump.verdict.unwrap().to_string(), "jump istio-output");
    let odd = TraceEvent::parse(&rule_event(Some((-77, None)))).unwrap();
    assert_eq!(odd.verdict, Some(TraceVerdict::Other(-77)));
    let none = TraceEvent::parse(&rule_event(None)).unwrap();
    assert_eq!(none.verdict, None);
}

#[test]
fn ipv6_udp_headers_are_read() {
    let mut ip = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    ip.extend_from_slice(&"fd00:77::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    ip.extend_from_slice(&"fd00:77::3".parse::<std::net::Ipv6Addr>().unwrap().octets());
    let udp = [0x9c, 0x40, 0, 53, 0, 8, 0, 0];
    let p = TracedPacket::parse(&ip, Some(&udp)).unwrap();
    assert_eq!(p.to_string(), "udp [fd00:77::1]:40000 -> [fd00:77::3]:53");
    assert_eq!(TracedPacket::parse(&ip[..39], Some(&udp)), None);
    assert_eq!(TracedPacket::parse(&[], None), None);
    // No transport header: addresses only.
    assert_eq!(TracedPacket::parse(&ip, None).unwrap().dport, None);
}

#[test]
fn malformed_events_are_errors_never_panics() {
    let good = rule_event(Some((NF_ACCEPT, None)));
    for len in 0..good.len() {
        let _ = TraceEvent::parse(&good[..len]);
    }
    assert!(TraceEvent::parse(&[1, 0]).is_err());
    // Without an id or type: refused, naming what is missing.
    let mut p = vec![NFPROTO_INET, 0, 0, 0];
    p.extend(attr(NFTA_TRACE_TYPE, &3u32.to_be_bytes()));
    assert!(TraceEvent::parse(&p).unwrap_err().contains("id"));
    for bytes in crate::codec::wire::testing::garbage(0x9e37_79b9, 300) {
        let _ = TraceEvent::parse(&bytes);
        let _ = TraceEvent::parse_all(&bytes);
    }
}

#[test]
fn a_buffer_of_messages_yields_only_the_trace_events() {
    let payload = rule_event(Some((NF_ACCEPT, None)));
    let mut buf = Vec::new();
    for ty in [crate::codec::nftnl::msg_type(NFT_MSG_TRACE), NLMSG_DONE] {
        let len = 16 + payload.len();
        buf.extend_from_slice(&(len as u32).to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&[0; 10]);
        buf.extend_from_slice(&payload);
    }
    let events = TraceEvent::parse_all(&buf).unwrap();
    assert_eq!(events.len(), 1);
}
