//! The fuzz targets' bodies, shared by `fuzz/fuzz_targets/*` (libFuzzer) and by
//! `tests/pure_fuzz_regressions.rs`, which replays every committed reproducer and seed in CI.
//! A panic anywhere here is a bug: bad input must give a typed error.

use nftmesh::iptables::{parse, parse_trace, translate};
use nftmesh::model::config::{CaptureConfig, GroupNames, IstioSettings};
use nftmesh::model::expr::IpVersion;
use nftmesh::model::ruleset::{Family, Ruleset};
use nftmesh::model::{compile, render};
use nftmesh::netlink::readback;

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
/// expressions → the model; and the whole input as one expression list. Either is read or
/// refused with a typed error.
pub fn netlink_reply(data: &[u8]) {
    let family = match data.first().map(|b| b % 3) {
        Some(0) => Family::Ip,
        Some(1) => Family::Ip6,
        _ => Family::Inet,
    };
    let body = data.get(1..).unwrap_or(&[]);
    if let Err(e) = readback::rule_from_expressions(family, body) {
        let _ = e.to_string();
    }
    // Trace events (`nftmesh trace`) are kernel messages too: parsed or refused, never a panic.
    let _ = nftmesh::netlink::trace::TraceEvent::parse(body);
    if let Ok(events) = nftmesh::netlink::trace::TraceEvent::parse_all(body) {
        for e in events {
            let _ = e.packet.map(|p| p.to_string());
            let _ = e.verdict.map(|v| v.to_string());
        }
    }
    match readback::rules_from_dump(family, body) {
        Ok(rules) => {
            for r in rules {
                if let Some(c) = &r.comment {
                    assert!(!c.contains('\0'));
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Arbitrary rulesets (JSON when the input starts with `{`, else built from the bytes by
/// [`ruleset_from_bytes`]: very long rules, long names, huge sets) → lower → encode. The
/// encoder either refuses with a typed error or writes a transaction whose every message
/// parses and decodes (a `Malformed` read-back is a failure), and which reads back as the
/// input's canonical form or is refused by the raiser with a typed error.
pub fn encode(data: &[u8]) {
    use nftmesh::model::canonical::canonical_ruleset;
    use nftmesh::netlink::{LiveState, Transaction};
    let rs: Ruleset = if data.first() == Some(&b'{') {
        match serde_json::from_slice(data) {
            Ok(rs) => rs,
            Err(_) => return,
        }
    } else {
        ruleset_from_bytes(data)
    };
    let tx = match Transaction::plan(&rs, &LiveState::default(), None, 1) {
        Ok(tx) => tx,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(tx.objects.len(), tx.messages, "one object per message");
    let rules = tx
        .objects
        .iter()
        .filter(|(_, o)| matches!(o, nftmesh::netlink::Object::Rule { .. }))
        .count();
    assert!(rules >= rs.rule_count(), "every rule has a message");
    match tx.read_back() {
        Ok(back) => assert_eq!(back, canonical_ruleset(&rs), "read back"),
        Err(e @ nftmesh::netlink::NetlinkError::Malformed { .. }) => {
            panic!("an encoded transaction does not parse: {e}")
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Bytes → a ruleset of one table whose shape the bytes choose: how many chains, rules,
/// matches and statements, which kinds, how long every name and how large every set
/// (a length byte over 0xf0 picks a size at or over a kernel limit).
pub fn ruleset_from_bytes(data: &[u8]) -> Ruleset {
    use ipnet::IpNet;
    use nftmesh::model::expr::{
        CtStates, Direction, L4Proto, MarkValue, Match, Owner, PortRange, Statement, Values,
        Verdict,
    };
    use nftmesh::model::ruleset::{
        BaseChain, Chain, ChainType, Hook, Policy, Rule, Set, SetElement, SetKeyType, Table,
    };
    struct Bytes<'a>(&'a [u8], usize);
    impl Bytes<'_> {
        fn u8(&mut self) -> u8 {
            let b = self.0.get(self.1).copied().unwrap_or(0);
            self.1 += 1;
            b
        }
        fn u32(&mut self) -> u32 {
            u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
        }
        fn done(&self) -> bool {
            self.1 >= self.0.len()
        }
        /// A size: small mostly, at or around a limit when the byte is high.
        fn size(&mut self) -> usize {
            match self.u8() {
                b @ 0..=0xef => usize::from(b % 24),
                0xf0 => 15,
                0xf1 => 16,
                0xf2 => 127,
                0xf3 => 128,
                0xf4 => 129,
                0xf5 => 255,
                0xf6 => 256,
                0xf7 => 64,
                0xf8 => 65,
                0xf9 => 1000,
                0xfa => 5000,
                _ => 12_000,
            }
        }
        fn name(&mut self) -> String {
            let n = self.size().min(5000);
            let c = char::from(b'a' + self.u8() % 26);
            std::iter::repeat_n(c, n).collect()
        }
        fn list<T>(&mut self, f: impl Fn(&mut Self, usize) -> T) -> Vec<T> {
            let n = self.size();
            (0..n).map(|i| f(self, i)).collect()
        }
        fn values<T>(&mut self, f: impl Fn(&mut Self, usize) -> T) -> Values<T> {
            match self.u8() % 3 {
                0 => Values::One(f(self, 0)),
                1 => Values::Set(self.list(f)),
                _ => Values::Named(self.name()),
            }
        }
    }
    let mut b = Bytes(data, 0);
    let families = [Family::Inet, Family::Ip, Family::Ip6];
    let family = families[usize::from(b.u8() % 3)];
    let v4 =
        |x: u32, p: u8| IpNet::new(std::net::Ipv4Addr::from(x).into(), p % 33).map(|n| n.trunc());
    let mut table = Table::new(family, {
        let n = b.name();
        if n.is_empty() {
            "t".into()
        } else {
            n
        }
    });
    for _ in 0..b.u8() % 3 {
        let name = b.name();
        let (key_type, interval) = match b.u8() % 4 {
            0 => (SetKeyType::Ipv4Addr, true),
            1 => (SetKeyType::InetService, false),
            2 => (SetKeyType::Ifname, false),
            _ => (SetKeyType::Mark, false),
        };
        let elements = b.list(|b, i| match key_type {
            SetKeyType::Ipv4Addr => SetElement::Prefix(
                v4(b.u32().wrapping_add((i as u32).wrapping_mul(256)), 24).unwrap_or_default(),
            ),
            SetKeyType::Ifname => SetElement::Name(b.name()),
            _ => {
                let x = (i as u32).wrapping_mul(7) ^ u32::from(b.u8());
                SetElement::Range(x, x)
            }
        });
        table.sets.push(Set {
            name,
            key_type,
            interval,
            elements,
        });
    }
    let chains = 1 + usize::from(b.u8() % 3);
    for ci in 0..chains {
        let base = (ci == 0).then_some(BaseChain {
            kind: ChainType::Filter,
            hook: Hook::Output,
            priority: 0,
            policy: Policy::Accept,
        });
        let mut chain = Chain {
            name: if ci == 0 { "c".into() } else { b.name() },
            base,
            rules: Vec::new(),
        };
        while !b.done() && chain.rules.len() < 8 {
            let mut rule = Rule::new(Vec::new(), Vec::new());
            let count = b.size();
            for i in 0..count {
                let negate = b.u8() & 1 != 0;
                let m = match b.u8() % 10 {
                    0 => Match::L4Proto {
                        negate,
                        proto: L4Proto::Tcp,
                    },
                    1 => Match::Addr {
                        dir: Direction::Dst,
                        version: nftmesh::model::expr::IpVersion::V4,
                        negate,
                        values: b.values(|b, i| {
                            v4(b.u32().wrapping_add((i as u32).wrapping_mul(65536)), 16)
                                .unwrap_or_default()
                        }),
                    },
                    2 => Match::Port {
                        dir: Direction::Dst,
                        proto: L4Proto::Tcp,
                        negate,
                        values: b.values(|_, i| PortRange::single(1 + (i % 65535) as u16)),
                    },
                    3 => Match::Iifname {
                        negate,
                        values: b.values(|b, _| b.name()),
                    },
                    4 => Match::SkUid {
                        negate,
                        values: b.values(|_, i| Owner::Id(i as u32)),
                    },
                    5 => Match::Mark {
                        negate,
                        mask: b.u32(),
                        value: i as u32,
                    },
                    6 => Match::CtMark {
                        negate,
                        mask: u32::MAX,
                        value: b.u32(),
                    },
                    7 => Match::CtState {
                        negate,
                        states: CtStates(b.u8() | 1),
                    },
                    8 => Match::Oifname {
                        negate,
                        values: b.values(|b, _| b.name()),
                    },
                    _ => Match::SocketTransparent,
                };
                rule.matches.push(m);
            }
            for _ in 0..b.u8() % 4 {
                let s = match b.u8() % 7 {
                    0 => Statement::Counter,
                    1 => Statement::Log {
                        prefix: Some(b.name()),
                    },
                    2 => Statement::MarkSet(MarkValue::Value(b.u32())),
                    3 => Statement::CtMarkSet(MarkValue::FromMark),
                    4 => Statement::Verdict(Verdict::Jump(b.name())),
                    5 => Statement::Verdict(Verdict::Goto(b.name())),
                    _ => Statement::Verdict(Verdict::Accept),
                };
                rule.statements.push(s);
            }
            if b.u8() & 1 != 0 {
                rule.comment = Some(b.name());
            }
            chain.rules.push(rule);
        }
        table.chains.push(chain);
    }
    Ruleset {
        tables: vec![table],
    }
}
