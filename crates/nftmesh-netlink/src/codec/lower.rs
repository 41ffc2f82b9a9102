//! Model → kernel expressions, emitting exactly the bytecode `nft` emits for the same text
//! (checked against `nft --debug=netlink`), so `nft list ruleset` prints our rules as it prints
//! its own.
//!
//! Protocol dependencies are added the way `nft` adds them: an `ip`/`ip6` match in an `inet`
//! table is preceded by `meta nfproto`, a `tcp`/`udp` port match by `meta l4proto` (by
//! `ip protocol` in an `ip` table), unless an earlier match of the rule already established it.

use crate::codec::ir::{interval_elements, Expr, WireSet};
use crate::codec::sys::*;
use ipnet::IpNet;
use nftmesh_model::expr::{
    Direction, IpVersion, L4Proto, MarkValue, Match, Owner, Statement, Values, Verdict,
};
use nftmesh_model::ruleset::{Family, Rule};
use std::net::IpAddr;

/// Something the kernel cannot be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} cannot be encoded: {why}")]
pub struct LowerError {
    /// The match or statement, rendered as nft text.
    pub what: String,
    /// Why.
    pub why: &'static str,
}

/// A rule lowered to expressions plus the anonymous sets it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoweredRule {
    /// The expressions in order.
    pub exprs: Vec<Expr>,
    /// Anonymous sets to create in the same batch, before the rule.
    pub sets: Vec<WireSet>,
}

struct Ctx<'a> {
    family: Family,
    l4: Option<L4Proto>,
    nf: Option<IpVersion>,
    next_set_id: &'a mut u32,
    out: Vec<Expr>,
    sets: Vec<WireSet>,
}

/// Lower one rule of a table of `family`. `next_set_id` numbers anonymous sets in the batch.
pub fn lower_rule(
    family: Family,
    rule: &Rule,
    next_set_id: &mut u32,
) -> Result<LoweredRule, LowerError> {
    let mut cx = Ctx {
        family,
        l4: None,
        nf: None,
        next_set_id,
        out: Vec::new(),
        sets: Vec::new(),
    };
    for m in &rule.matches {
        cx.lower_match(m)?;
    }
    for s in &rule.statements {
        cx.lower_statement(s)?;
    }
    Ok(LoweredRule {
        exprs: cx.out,
        sets: cx.sets,
    })
}

fn cmp_op(negate: bool) -> u32 {
    if negate {
        NFT_CMP_NEQ
    } else {
        NFT_CMP_EQ
    }
}

fn err(what: impl Into<String>, why: &'static str) -> LowerError {
    LowerError {
        what: what.into(),
        why,
    }
}

use nftmesh_model::limits::PORT_SET_EXACT_MAX;

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

fn prefix_interval(n: &IpNet) -> (Vec<u8>, Vec<u8>) {
    let n = n.trunc();
    (addr_bytes(n.network()), addr_bytes(n.broadcast()))
}

/// Interface name as the kernel compares it: IFNAMSIZ bytes, zero padded.
pub fn ifname_bytes(name: &str) -> Result<Vec<u8>, LowerError> {
    if name.len() >= IFNAMSIZ || name.contains('\0') {
        return Err(err(
            format!("interface {name:?}"),
            "names are at most 15 bytes without NUL",
        ));
    }
    let mut v = name.as_bytes().to_vec();
    v.resize(IFNAMSIZ, 0);
    Ok(v)
}

impl Ctx<'_> {
    fn push(&mut self, e: Expr) {
        self.out.push(e);
    }

    fn load_meta(&mut self, key: u32) {
        self.push(Expr::Meta {
            key,
            dreg: NFT_REG_1,
        });
    }

    fn cmp(&mut self, op: u32, data: Vec<u8>) {
        self.push(Expr::Cmp {
            sreg: NFT_REG_1,
            op,
            data,
        });
    }

    fn new_set(
        &mut self,
        key_type: u32,
        key_len: u32,
        interval: bool,
        elements: Vec<(Vec<u8>, bool)>,
    ) -> (String, u32) {
        let id = *self.next_set_id;
        *self.next_set_id += 1;
        let mut flags = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT;
        if interval {
            flags |= NFT_SET_INTERVAL;
        }
        let name = "__set%d".to_string();
        self.sets.push(WireSet {
            name: name.clone(),
            id,
            flags,
            key_type,
            key_len,
            elements,
        });
        (name, id)
    }

    fn lookup(&mut self, set: String, set_id: Option<u32>, invert: bool) {
        self.push(Expr::Lookup {
            sreg: NFT_REG_1,
            set,
            set_id,
            invert,
        });
    }

    fn nfproto(&mut self, v: IpVersion) {
        if self.family == Family::Inet && self.nf != Some(v) {
            self.load_meta(NFT_META_NFPROTO);
            self.cmp(NFT_CMP_EQ, vec![nfproto_of(v)]);
            self.nf = Some(v);
        }
    }

    fn l4(&mut self, p: L4Proto) {
        if self.l4 == Some(p) {
            return;
        }
        if self.family == Family::Ip {
            self.push(Expr::Payload {
                base: NFT_PAYLOAD_NETWORK_HEADER,
                offset: 9,
                len: 1,
                dreg: NFT_REG_1,
            });
        } else {
            self.load_meta(NFT_META_L4PROTO);
        }
        self.cmp(NFT_CMP_EQ, vec![p.number()]);
        self.l4 = Some(p);
    }

    fn lower_match(&mut self, m: &Match) -> Result<(), LowerError> {
        let text = || nftmesh_model::render::render_match(m);
        match m {
            Match::Nfproto { version } => {
                self.load_meta(NFT_META_NFPROTO);
                self.cmp(NFT_CMP_EQ, vec![nfproto_of(*version)]);
                self.nf = Some(*version);
            }
            Match::L4Proto { negate, proto } => {
                self.load_meta(NFT_META_L4PROTO);
                self.cmp(cmp_op(*negate), vec![proto.number()]);
                if !negate {
                    self.l4 = Some(*proto);
                }
            }
            Match::Addr {
                dir,
                version,
                negate,
                values,
            } => {
                let full: u32 = if *version == IpVersion::V4 { 4 } else { 16 };
                let offset = match (version, dir) {
                    (IpVersion::V4, Direction::Src) => 12,
                    (IpVersion::V4, Direction::Dst) => 16,
                    (IpVersion::V6, Direction::Src) => 8,
                    (IpVersion::V6, Direction::Dst) => 24,
                };
                let check = |n: &IpNet| {
                    if IpVersion::of_net(n) == *version {
                        Ok(())
                    } else {
                        Err(err(text(), "prefix of the other IP version"))
                    }
                };
                if self.family == Family::Ip && *version == IpVersion::V6
                    || self.family == Family::Ip6 && *version == IpVersion::V4
                {
                    return Err(err(text(), "address of the other family in this table"));
                }
                self.nfproto(*version);
                let payload = |len| Expr::Payload {
                    base: NFT_PAYLOAD_NETWORK_HEADER,
                    offset,
                    len,
                    dreg: NFT_REG_1,
                };
                match values {
                    Values::One(n) => {
                        check(n)?;
                        let n = n.trunc();
                        let plen = u32::from(n.prefix_len());
                        let bytes = addr_bytes(n.network());
                        if plen == full * 8 {
                            self.push(payload(full));
                            self.cmp(cmp_op(*negate), bytes);
                        } else if plen % 8 == 0 && plen > 0 {
                            self.push(payload(plen / 8));
                            self.cmp(cmp_op(*negate), bytes[..(plen / 8) as usize].to_vec());
                        } else {
                            self.push(payload(full));
                            self.push(Expr::Bitwise {
                                sreg: NFT_REG_1,
                                dreg: NFT_REG_1,
                                len: full,
                                mask: addr_bytes(n.netmask()),
                                xor: vec![0; full as usize],
                            });
                            self.cmp(cmp_op(*negate), bytes);
                        }
                    }
                    Values::Set(list) => {
                        list.iter().try_for_each(check)?;
                        // Only host addresses: a hash set (constant-time lookup), as nft makes
                        // it; any shorter prefix needs an interval set.
                        let interval = list.iter().any(|n| n.prefix_len() != n.max_prefix_len());
                        let els = if interval {
                            interval_elements(
                                list.iter().map(prefix_interval).collect(),
                                full as usize,
                            )
                        } else {
                            let mut keys: Vec<Vec<u8>> =
                                list.iter().map(|n| addr_bytes(n.addr())).collect();
                            keys.sort();
                            keys.dedup();
                            keys.into_iter().map(|k| (k, false)).collect()
                        };
                        let kt = if *version == IpVersion::V4 {
                            TYPE_IPADDR
                        } else {
                            TYPE_IP6ADDR
                        };
                        self.push(payload(full));
                        let (name, id) = self.new_set(kt, full, interval, els);
                        self.lookup(name, Some(id), *negate);
                    }
                    Values::Named(name) => {
                        self.push(payload(full));
                        self.lookup(name.clone(), None, *negate);
                    }
                }
            }
            Match::Port {
                dir,
                proto,
                negate,
                values,
            } => {
                if !matches!(proto, L4Proto::Tcp | L4Proto::Udp) {
                    return Err(err(text(), "ports exist for tcp and udp only"));
                }
                self.l4(*proto);
                self.push(Expr::Payload {
                    base: NFT_PAYLOAD_TRANSPORT_HEADER,
                    offset: if *dir == Direction::Src { 0 } else { 2 },
                    len: 2,
                    dreg: NFT_REG_1,
                });
                let be = |p: u16| p.to_be_bytes().to_vec();
                match values {
                    Values::One(r) => self.range_or_cmp(*negate, be(r.first), be(r.last)),
                    Values::Set(list) => {
                        let distinct: std::collections::BTreeSet<_> = list.iter().collect();
                        let interval = distinct.len() > PORT_SET_EXACT_MAX
                            || list.iter().any(|r| r.first != r.last);
                        let els = if interval {
                            interval_elements(
                                list.iter().map(|r| (be(r.first), be(r.last))).collect(),
                                2,
                            )
                        } else {
                            list.iter().map(|r| (be(r.first), false)).collect()
                        };
                        let (name, id) = self.new_set(TYPE_INET_SERVICE, 2, interval, els);
                        self.lookup(name, Some(id), *negate);
                    }
                    Values::Named(name) => self.lookup(name.clone(), None, *negate),
                }
            }
            Match::Iifname { negate, values } | Match::Oifname { negate, values } => {
                let key = if matches!(m, Match::Iifname { .. }) {
                    NFT_META_IIFNAME
                } else {
                    NFT_META_OIFNAME
                };
                self.load_meta(key);
                match values {
                    Values::One(n) => {
                        let b = ifname_bytes(n)?;
                        self.cmp(cmp_op(*negate), b);
                    }
                    Values::Set(list) => {
                        let els = list
                            .iter()
                            .map(|n| ifname_bytes(n).map(|b| (b, false)))
                            .collect::<Result<Vec<_>, _>>()?;
                        let (name, id) = self.new_set(TYPE_IFNAME, IFNAMSIZ as u32, false, els);
                        self.lookup(name, Some(id), *negate);
                    }
                    Values::Named(name) => self.lookup(name.clone(), None, *negate),
                }
            }
            Match::SkUid { negate, values } | Match::SkGid { negate, values } => {
                let (key, kt) = if matches!(m, Match::SkUid { .. }) {
                    (NFT_META_SKUID, TYPE_UID)
                } else {
                    (NFT_META_SKGID, TYPE_GID)
                };
                self.load_meta(key);
                let id_of = |o: &Owner| match o {
                    Owner::Id(i) => Ok((*i, *i)),
                    Owner::Range(a, b) => Ok((*a, *b)),
                    Owner::Name(_) => Err(err(text(), "owner names must be resolved to ids first")),
                };
                match values {
                    Values::One(o) => {
                        let (a, b) = id_of(o)?;
                        if a == b {
                            self.cmp(cmp_op(*negate), a.to_ne_bytes().to_vec());
                        } else {
                            self.hton4();
                            self.range_or_cmp(
                                *negate,
                                a.to_be_bytes().to_vec(),
                                b.to_be_bytes().to_vec(),
                            );
                        }
                    }
                    Values::Set(list) => {
                        let ids = list.iter().map(id_of).collect::<Result<Vec<_>, _>>()?;
                        let interval = ids.iter().any(|(a, b)| a != b);
                        let els = if interval {
                            self.hton4();
                            interval_elements(
                                ids.iter()
                                    .map(|(a, b)| {
                                        (a.to_be_bytes().to_vec(), b.to_be_bytes().to_vec())
                                    })
                                    .collect(),
                                4,
                            )
                        } else {
                            ids.iter()
                                .map(|(a, _)| (a.to_ne_bytes().to_vec(), false))
                                .collect()
                        };
                        let (name, id) = self.new_set(kt, 4, interval, els);
                        self.lookup(name, Some(id), *negate);
                    }
                    Values::Named(name) => self.lookup(name.clone(), None, *negate),
                }
            }
            Match::Mark {
                negate,
                mask,
                value,
            }
            | Match::CtMark {
                negate,
                mask,
                value,
            } => {
                if matches!(m, Match::Mark { .. }) {
                    self.load_meta(NFT_META_MARK);
                } else {
                    self.push(Expr::Ct {
                        key: NFT_CT_MARK,
                        dreg: NFT_REG_1,
                    });
                }
                if *mask != u32::MAX {
                    self.bitwise4(*mask, 0);
                }
                self.cmp(cmp_op(*negate), value.to_ne_bytes().to_vec());
            }
            Match::CtState { negate, states } => {
                self.push(Expr::Ct {
                    key: NFT_CT_STATE,
                    dreg: NFT_REG_1,
                });
                let single = states.0.count_ones() == 1;
                if *negate && single {
                    self.cmp(NFT_CMP_NEQ, u32::from(states.0).to_ne_bytes().to_vec());
                } else {
                    self.bitwise4(u32::from(states.0), 0);
                    let op = if *negate { NFT_CMP_EQ } else { NFT_CMP_NEQ };
                    self.cmp(op, 0u32.to_ne_bytes().to_vec());
                }
            }
            Match::SocketTransparent => {
                self.push(Expr::Socket {
                    key: NFT_SOCKET_TRANSPARENT,
                    dreg: NFT_REG_1,
                });
                self.cmp(NFT_CMP_EQ, vec![1]);
            }
        }
        Ok(())
    }

    fn hton4(&mut self) {
        self.push(Expr::Byteorder {
            sreg: NFT_REG_1,
            dreg: NFT_REG_1,
            op: NFT_BYTEORDER_HTON,
            len: 4,
            size: 4,
        });
    }

    fn bitwise4(&mut self, mask: u32, xor: u32) {
        self.push(Expr::Bitwise {
            sreg: NFT_REG_1,
            dreg: NFT_REG_1,
            len: 4,
            mask: mask.to_ne_bytes().to_vec(),
            xor: xor.to_ne_bytes().to_vec(),
        });
    }

    /// A single value (`first == last`) or an inclusive range, as `nft` encodes them.
    fn range_or_cmp(&mut self, negate: bool, first: Vec<u8>, last: Vec<u8>) {
        if first == last {
            self.cmp(cmp_op(negate), first);
        } else if negate {
            self.push(Expr::Range {
                sreg: NFT_REG_1,
                op: NFT_RANGE_NEQ,
                from: first,
                to: last,
            });
        } else {
            self.cmp(NFT_CMP_GTE, first);
            self.cmp(NFT_CMP_LTE, last);
        }
    }

    fn mark_value(&mut self, own_is_meta: bool, v: &MarkValue) {
        let load_own = |cx: &mut Self| {
            if own_is_meta {
                cx.load_meta(NFT_META_MARK)
            } else {
                cx.push(Expr::Ct {
                    key: NFT_CT_MARK,
                    dreg: NFT_REG_1,
                })
            }
        };
        match v {
            MarkValue::Value(x) => self.push(Expr::Immediate {
                dreg: NFT_REG_1,
                data: x.to_ne_bytes().to_vec(),
            }),
            MarkValue::Bitwise { and, xor } => {
                load_own(self);
                self.bitwise4(*and, *xor);
            }
            MarkValue::FromMark => self.load_meta(NFT_META_MARK),
            MarkValue::FromCtMark => self.push(Expr::Ct {
                key: NFT_CT_MARK,
                dreg: NFT_REG_1,
            }),
        }
    }

    fn lower_statement(&mut self, s: &Statement) -> Result<(), LowerError> {
        match s {
            Statement::Counter => self.push(Expr::Counter),
            Statement::Log { prefix } => self.push(Expr::Log {
                prefix: prefix.clone(),
            }),
            Statement::MarkSet(v) => {
                self.mark_value(true, v);
                self.push(Expr::MetaSet {
                    key: NFT_META_MARK,
                    sreg: NFT_REG_1,
                });
            }
            Statement::CtMarkSet(v) => {
                self.mark_value(false, v);
                self.push(Expr::CtSet {
                    key: NFT_CT_MARK,
                    sreg: NFT_REG_1,
                });
            }
            Statement::CtZoneSet(z) => {
                self.push(Expr::Immediate {
                    dreg: NFT_REG_1,
                    data: z.to_ne_bytes().to_vec(),
                });
                self.push(Expr::CtSet {
                    key: NFT_CT_ZONE,
                    sreg: NFT_REG_1,
                });
            }
            Statement::Redirect { port } => match port {
                Some(p) => {
                    self.push(Expr::Immediate {
                        dreg: NFT_REG_1,
                        data: p.to_be_bytes().to_vec(),
                    });
                    self.push(Expr::Redir {
                        reg_proto_min: Some(NFT_REG_1),
                        flags: NF_NAT_RANGE_PROTO_SPECIFIED,
                    });
                }
                None => self.push(Expr::Redir {
                    reg_proto_min: None,
                    flags: 0,
                }),
            },
            Statement::Tproxy {
                version,
                addr,
                port,
            } => {
                let family = match (version, self.family) {
                    (Some(v), _) => u32::from(nfproto_of(*v)),
                    (None, Family::Ip) => u32::from(NFPROTO_IPV4),
                    (None, Family::Ip6) => u32::from(NFPROTO_IPV6),
                    (None, Family::Inet) => {
                        return Err(err(
                            nftmesh_model::render::render_statement(s),
                            "tproxy in an inet table needs ip or ip6",
                        ))
                    }
                };
                let mut reg = NFT_REG_1;
                let mut reg_addr = None;
                let mut reg_port = None;
                if let Some(a) = addr {
                    self.push(Expr::Immediate {
                        dreg: reg,
                        data: addr_bytes(*a),
                    });
                    reg_addr = Some(reg);
                    reg = NFT_REG_2;
                }
                if let Some(p) = port {
                    self.push(Expr::Immediate {
                        dreg: reg,
                        data: p.to_be_bytes().to_vec(),
                    });
                    reg_port = Some(reg);
                }
                self.push(Expr::Tproxy {
                    family,
                    reg_addr,
                    reg_port,
                });
            }
            Statement::Verdict(v) => {
                let (code, chain) = match v {
                    Verdict::Accept => (NF_ACCEPT, None),
                    Verdict::Drop => (NF_DROP, None),
                    Verdict::Return => (NFT_RETURN, None),
                    Verdict::Jump(c) => (NFT_JUMP, Some(c.clone())),
                    Verdict::Goto(c) => (NFT_GOTO, Some(c.clone())),
                };
                self.push(Expr::Verdict { code, chain });
            }
        }
        Ok(())
    }
}

/// `NFPROTO_*` of an IP version.
pub fn nfproto_of(v: IpVersion) -> u8 {
    match v {
        IpVersion::V4 => NFPROTO_IPV4,
        IpVersion::V6 => NFPROTO_IPV6,
    }
}

/// Lower a named set of the model to its kernel form, numbered `id` within the batch.
///
/// Interval sets hold prefixes and port ranges; uid, gid and mark sets hold single values
/// (the kernel keeps them in host byte order, which does not order as intervals).
pub fn lower_set(set: &nftmesh_model::ruleset::Set, id: u32) -> Result<WireSet, LowerError> {
    use nftmesh_model::ruleset::{SetElement, SetKeyType};
    let what = || format!("set {} ({})", set.name, set.key_type.keyword());
    let (key_type, key_len) = match set.key_type {
        SetKeyType::Ipv4Addr => (TYPE_IPADDR, 4),
        SetKeyType::Ipv6Addr => (TYPE_IP6ADDR, 16),
        SetKeyType::InetService => (TYPE_INET_SERVICE, 2),
        SetKeyType::Ifname => (TYPE_IFNAME, IFNAMSIZ as u32),
        SetKeyType::Uid => (TYPE_UID, 4),
        SetKeyType::Gid => (TYPE_GID, 4),
        SetKeyType::Mark => (TYPE_MARK, 4),
    };
    let host_order = matches!(
        set.key_type,
        SetKeyType::Uid | SetKeyType::Gid | SetKeyType::Mark
    );
    if set.interval && (host_order || set.key_type == SetKeyType::Ifname) {
        return Err(err(what(), "interval sets hold addresses and ports only"));
    }
    let mut ivs = Vec::new();
    for e in &set.elements {
        let iv = match (set.key_type, e) {
            (SetKeyType::Ipv4Addr, SetElement::Prefix(n @ IpNet::V4(_)))
            | (SetKeyType::Ipv6Addr, SetElement::Prefix(n @ IpNet::V6(_))) => prefix_interval(n),
            (SetKeyType::InetService, SetElement::Range(a, b)) if *a <= *b && *b <= 0xffff => (
                (*a as u16).to_be_bytes().to_vec(),
                (*b as u16).to_be_bytes().to_vec(),
            ),
            (SetKeyType::Ifname, SetElement::Name(n)) => {
                let b = ifname_bytes(n)?;
                (b.clone(), b)
            }
            (_, SetElement::Range(a, b)) if host_order && a == b => {
                (a.to_ne_bytes().to_vec(), a.to_ne_bytes().to_vec())
            }
            (_, other) => return Err(err(what(), element_mismatch(other))),
        };
        if !set.interval && iv.0 != iv.1 {
            return Err(err(what(), "a range or prefix needs an interval set"));
        }
        ivs.push(iv);
    }
    let mut flags = 0;
    let elements = if set.interval {
        flags |= NFT_SET_INTERVAL;
        interval_elements(ivs, key_len as usize)
    } else {
        let mut keys: Vec<Vec<u8>> = ivs.into_iter().map(|(a, _)| a).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter().map(|k| (k, false)).collect()
    };
    Ok(WireSet {
        name: set.name.clone(),
        id,
        flags,
        key_type,
        key_len,
        elements,
    })
}

fn element_mismatch(e: &nftmesh_model::ruleset::SetElement) -> &'static str {
    use nftmesh_model::ruleset::SetElement;
    match e {
        SetElement::Prefix(_) => "an address element does not match the key type",
        SetElement::Range(..) => {
            "a number element does not match the key type (or is out of range)"
        }
        SetElement::Name(_) => "a name element does not match the key type",
    }
}
