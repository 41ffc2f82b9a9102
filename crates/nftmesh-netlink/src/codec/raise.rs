//! [`Expr`] lists and set data read back from the kernel → the model: the inverse of
//! [`crate::codec::lower`]. Protocol dependencies `lower` (and `nft`) add are absorbed into the match
//! that needs them, so a dumped rule comes back in `nftmesh_model::canonical` form. Anything the model
//! has no word for is reported as unsupported by name.

use crate::codec::ir::{element_intervals, Expr};
use crate::codec::sys::*;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nftmesh_model::expr::{
    CtStates, Direction, IpVersion, L4Proto, MarkValue, Match, Owner, PortRange, Statement, Values,
    Verdict,
};
use nftmesh_model::ruleset::{Family, Rule, Set, SetElement, SetKeyType};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A set as dumped: type, flags and wire elements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetData {
    /// nft datatype id of the keys.
    pub key_type: u32,
    /// Key length in bytes.
    pub key_len: u32,
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// Elements: key and whether it ends an interval.
    pub elements: Vec<(Vec<u8>, bool)>,
}

/// Something in the kernel the model cannot express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported {name}: {detail}")]
pub struct Unsupported {
    /// The expression's kernel name (`meta`, `payload`, `numgen`, ...) or `set`.
    pub name: String,
    /// What about it.
    pub detail: String,
}

fn unsupported(name: &str, detail: impl Into<String>) -> Unsupported {
    Unsupported {
        name: name.to_string(),
        detail: detail.into(),
    }
}

fn ne_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

fn be_u16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

fn be_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

fn ip_of(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

fn ifname(b: &[u8]) -> String {
    let end = b.iter().position(|&x| x == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// `2^size - 1`, saturating at the full 128-bit space.
fn span(size: u32) -> u128 {
    if size >= 128 {
        u128::MAX
    } else {
        (1u128 << size) - 1
    }
}

/// The fewest prefixes covering exactly `[lo, hi]` of a `bits`-bit space.
fn cover(lo: u128, hi: u128, bits: u32) -> Vec<(u128, u8)> {
    let mut out = Vec::new();
    if lo > hi {
        return out;
    }
    let mut cur = lo;
    loop {
        // The largest aligned block starting at `cur` that ends within `hi`.
        let mut size = if cur == 0 {
            bits
        } else {
            cur.trailing_zeros().min(bits)
        };
        while size > 0 && cur.checked_add(span(size)).is_none_or(|last| last > hi) {
            size -= 1;
        }
        out.push((cur, (bits - size) as u8));
        let last = cur + span(size);
        if last >= hi {
            break;
        }
        cur = last + 1;
    }
    out
}

fn prefixes(lo: &[u8], hi: &[u8]) -> Option<Vec<IpNet>> {
    match (ip_of(lo)?, ip_of(hi)?) {
        (IpAddr::V4(a), IpAddr::V4(b)) => Some(
            cover(u128::from(u32::from(a)), u128::from(u32::from(b)), 32)
                .into_iter()
                .filter_map(|(n, p)| {
                    Ipv4Net::new(Ipv4Addr::from(n as u32), p)
                        .ok()
                        .map(IpNet::V4)
                })
                .collect(),
        ),
        (IpAddr::V6(a), IpAddr::V6(b)) => Some(
            cover(u128::from(a), u128::from(b), 128)
                .into_iter()
                .filter_map(|(n, p)| Ipv6Net::new(Ipv6Addr::from(n), p).ok().map(IpNet::V6))
                .collect(),
        ),
        _ => None,
    }
}

fn intervals(s: &SetData) -> Vec<(Vec<u8>, Vec<u8>)> {
    if s.flags & NFT_SET_INTERVAL != 0 {
        element_intervals(&s.elements)
    } else {
        s.elements
            .iter()
            .map(|(k, _)| (k.clone(), k.clone()))
            .collect()
    }
}

/// A named set of the kernel → the model's set.
pub fn raise_set(name: &str, s: &SetData) -> Result<Set, Unsupported> {
    let bad = |what: &str| unsupported("set", format!("{name}: {what}"));
    let key_type = match s.key_type {
        TYPE_IPADDR => SetKeyType::Ipv4Addr,
        TYPE_IP6ADDR => SetKeyType::Ipv6Addr,
        TYPE_INET_SERVICE => SetKeyType::InetService,
        TYPE_IFNAME => SetKeyType::Ifname,
        TYPE_UID => SetKeyType::Uid,
        TYPE_GID => SetKeyType::Gid,
        TYPE_MARK => SetKeyType::Mark,
        other => return Err(bad(&format!("key type {other}"))),
    };
    let mut elements = Vec::new();
    for (lo, hi) in intervals(s) {
        match key_type {
            SetKeyType::Ipv4Addr | SetKeyType::Ipv6Addr => elements.extend(
                prefixes(&lo, &hi)
                    .ok_or_else(|| bad("address of wrong length"))?
                    .into_iter()
                    .map(SetElement::Prefix),
            ),
            SetKeyType::InetService => {
                let (a, b) = be_u16(&lo)
                    .zip(be_u16(&hi))
                    .ok_or_else(|| bad("short port"))?;
                elements.push(SetElement::Range(u32::from(a), u32::from(b)));
            }
            SetKeyType::Ifname => elements.push(SetElement::Name(ifname(&lo))),
            SetKeyType::Uid | SetKeyType::Gid | SetKeyType::Mark => {
                let a = ne_u32(&lo).ok_or_else(|| bad("short id"))?;
                elements.push(SetElement::Range(a, a));
            }
        }
    }
    Ok(Set {
        name: name.to_string(),
        key_type,
        interval: s.flags & NFT_SET_INTERVAL != 0,
        elements,
    })
}

struct Raiser<'a> {
    family: Family,
    exprs: &'a [Expr],
    i: usize,
    sets: &'a HashMap<String, SetData>,
    nf: Option<IpVersion>,
    l4: Option<L4Proto>,
    matches: Vec<Match>,
    statements: Vec<Statement>,
}

/// One dumped rule → the model, in `nftmesh_model::canonical::canonical_rule` form. `sets` holds the table's sets
/// (anonymous ones included) by name.
pub fn raise_rule(
    family: Family,
    exprs: &[Expr],
    sets: &HashMap<String, SetData>,
    comment: Option<String>,
) -> Result<Rule, Unsupported> {
    let mut r = Raiser {
        family,
        exprs,
        i: 0,
        sets,
        nf: None,
        l4: None,
        matches: Vec::new(),
        statements: Vec::new(),
    };
    while r.i < exprs.len() {
        r.step()?;
    }
    Ok(Rule {
        // Kernel hash sets list their elements in no particular order.
        matches: r
            .matches
            .iter()
            .map(nftmesh_model::canonical::canonical_match)
            .collect(),
        statements: r.statements,
        comment,
    })
}

impl Raiser<'_> {
    fn peek(&self, k: usize) -> Option<&Expr> {
        self.exprs.get(self.i + k)
    }

    fn unsupported_here(&self) -> Unsupported {
        match self.peek(0) {
            Some(e) => unsupported(e.name(), format!("{e:?} at expression #{}", self.i)),
            None => unsupported("rule", "ends in the middle of a match"),
        }
    }

    fn cmp_at(&self, k: usize) -> Option<(u32, &[u8])> {
        match self.peek(k) {
            Some(Expr::Cmp {
                sreg: NFT_REG_1,
                op,
                data,
            }) => Some((*op, data.as_slice())),
            _ => None,
        }
    }

    fn set_values<T>(
        &self,
        set: &str,
        f: impl Fn(&[u8], &[u8]) -> Option<Vec<T>>,
    ) -> Result<Values<T>, Unsupported> {
        if !set.starts_with("__set") {
            return Ok(Values::Named(set.to_string()));
        }
        let data = self
            .sets
            .get(set)
            .ok_or_else(|| unsupported("lookup", format!("set {set} was not dumped")))?;
        let mut out = Vec::new();
        for (lo, hi) in intervals(data) {
            out.extend(f(&lo, &hi).ok_or_else(|| {
                unsupported("lookup", format!("elements of {set} do not fit the match"))
            })?);
        }
        Ok(Values::Set(out))
    }

    /// Values after a load: cmp, cmp gte+lte, range neq, or lookup. Returns (negate, values)
    /// and consumes the expressions. `one` converts equal-width bytes (first, last).
    fn values<T>(
        &mut self,
        one: impl Fn(&[u8], &[u8]) -> Option<Vec<T>>,
    ) -> Result<(bool, Values<T>), Unsupported> {
        let err = self.unsupported_here();
        if let (Some((NFT_CMP_GTE, a)), Some((NFT_CMP_LTE, b))) = (self.cmp_at(0), self.cmp_at(1)) {
            let v = one(a, b).and_then(|mut v| v.pop()).ok_or(err)?;
            self.i += 2;
            return Ok((false, Values::One(v)));
        }
        match self.peek(0) {
            Some(Expr::Cmp {
                sreg: NFT_REG_1,
                op,
                data,
            }) if *op == NFT_CMP_EQ || *op == NFT_CMP_NEQ => {
                let v = one(data, data).and_then(|mut v| v.pop()).ok_or(err)?;
                let neg = *op == NFT_CMP_NEQ;
                self.i += 1;
                Ok((neg, Values::One(v)))
            }
            Some(Expr::Range {
                sreg: NFT_REG_1,
                op: NFT_RANGE_NEQ,
                from,
                to,
            }) => {
                let v = one(from, to).and_then(|mut v| v.pop()).ok_or(err)?;
                self.i += 1;
                Ok((true, Values::One(v)))
            }
            Some(Expr::Lookup {
                sreg: NFT_REG_1,
                set,
                invert,
                ..
            }) => {
                let (set, invert) = (set.clone(), *invert);
                let v = self.set_values(&set, one)?;
                self.i += 1;
                Ok((invert, v))
            }
            _ => Err(err),
        }
    }

    fn step(&mut self) -> Result<(), Unsupported> {
        let e = self
            .peek(0)
            .cloned()
            .ok_or_else(|| self.unsupported_here())?;
        match e {
            Expr::Meta {
                key: NFT_META_NFPROTO,
                dreg: NFT_REG_1,
            } => {
                let Some((NFT_CMP_EQ, [v])) = self.cmp_at(1) else {
                    return Err(self.unsupported_here());
                };
                let version = match *v {
                    NFPROTO_IPV4 => IpVersion::V4,
                    NFPROTO_IPV6 => IpVersion::V6,
                    _ => return Err(self.unsupported_here()),
                };
                self.i += 2;
                let dep = matches!(
                    self.peek(0),
                    Some(Expr::Payload {
                        base: NFT_PAYLOAD_NETWORK_HEADER,
                        ..
                    })
                );
                if !dep {
                    self.matches.push(Match::Nfproto { version });
                }
                self.nf = Some(version);
            }
            Expr::Meta {
                key: NFT_META_L4PROTO,
                dreg: NFT_REG_1,
            } => self.l4proto()?,
            Expr::Payload {
                base: NFT_PAYLOAD_NETWORK_HEADER,
                offset: 9,
                len: 1,
                dreg: NFT_REG_1,
            } if self.family == Family::Ip => {
                // `ip protocol X`: nft's port dependency in `ip` tables, and what
                // iptables-restore-translate writes for `-p`. IPv4 has no extension headers, so
                // it holds exactly when `meta l4proto X` does; it is raised as that.
                self.l4proto()?
            }
            Expr::Payload {
                base: NFT_PAYLOAD_NETWORK_HEADER,
                offset,
                len,
                dreg: NFT_REG_1,
            } => self.addr(offset, len)?,
            Expr::Payload {
                base: NFT_PAYLOAD_TRANSPORT_HEADER,
                offset,
                len: 2,
                dreg: NFT_REG_1,
            } if offset == 0 || offset == 2 => {
                let proto = self.l4.ok_or_else(|| {
                    unsupported("payload", "port load without a protocol dependency")
                })?;
                self.i += 1;
                let (negate, values) = self.values(|a, b| {
                    let (a, b) = (be_u16(a)?, be_u16(b)?);
                    Some(vec![PortRange { first: a, last: b }])
                })?;
                let dir = if offset == 0 {
                    Direction::Src
                } else {
                    Direction::Dst
                };
                self.matches.push(Match::Port {
                    dir,
                    proto,
                    negate,
                    values,
                });
            }
            Expr::Meta {
                key,
                dreg: NFT_REG_1,
            } if key == NFT_META_IIFNAME || key == NFT_META_OIFNAME => {
                self.i += 1;
                let (negate, values) = self.values(|a, _| Some(vec![ifname(a)]))?;
                self.matches.push(if key == NFT_META_IIFNAME {
                    Match::Iifname { negate, values }
                } else {
                    Match::Oifname { negate, values }
                });
            }
            Expr::Meta {
                key,
                dreg: NFT_REG_1,
            } if key == NFT_META_SKUID || key == NFT_META_SKGID => {
                self.i += 1;
                let hton = matches!(
                    self.peek(0),
                    Some(Expr::Byteorder {
                        op: NFT_BYTEORDER_HTON,
                        ..
                    })
                );
                if hton {
                    self.i += 1;
                }
                let (negate, values) = self.values(|a, b| {
                    if hton {
                        let (a, b) = (be_u32(a)?, be_u32(b)?);
                        Some(vec![if a == b {
                            Owner::Id(a)
                        } else {
                            Owner::Range(a, b)
                        }])
                    } else {
                        Some(vec![Owner::Id(ne_u32(a)?)])
                    }
                })?;
                self.matches.push(if key == NFT_META_SKUID {
                    Match::SkUid { negate, values }
                } else {
                    Match::SkGid { negate, values }
                });
            }
            Expr::Meta {
                key: NFT_META_MARK,
                dreg: NFT_REG_1,
            }
            | Expr::Ct {
                key: NFT_CT_MARK,
                dreg: NFT_REG_1,
            } => {
                let is_meta = matches!(e, Expr::Meta { .. });
                self.mark(is_meta)?;
            }
            Expr::Ct {
                key: NFT_CT_STATE,
                dreg: NFT_REG_1,
            } => match (self.peek(1), self.cmp_at(2)) {
                (Some(Expr::Bitwise { mask, xor, .. }), Some((op, zero)))
                    if xor.iter().all(|b| *b == 0) && zero.iter().all(|b| *b == 0) =>
                {
                    let bits = ne_u32(mask).ok_or_else(|| self.unsupported_here())?;
                    let negate = op == NFT_CMP_EQ;
                    self.matches.push(Match::CtState {
                        negate,
                        states: CtStates(bits as u8),
                    });
                    self.i += 3;
                }
                (
                    Some(Expr::Cmp {
                        op: NFT_CMP_NEQ,
                        data,
                        ..
                    }),
                    _,
                ) => {
                    let bits = ne_u32(data).ok_or_else(|| self.unsupported_here())?;
                    self.matches.push(Match::CtState {
                        negate: true,
                        states: CtStates(bits as u8),
                    });
                    self.i += 2;
                }
                _ => return Err(self.unsupported_here()),
            },
            Expr::Socket {
                key: NFT_SOCKET_TRANSPARENT,
                dreg: NFT_REG_1,
            } => {
                let Some((NFT_CMP_EQ, [1])) = self.cmp_at(1) else {
                    return Err(self.unsupported_here());
                };
                self.matches.push(Match::SocketTransparent);
                self.i += 2;
            }
            Expr::Counter => {
                self.statements.push(Statement::Counter);
                self.i += 1;
            }
            Expr::Log { prefix } => {
                self.statements.push(Statement::Log { prefix });
                self.i += 1;
            }
            Expr::Immediate {
                dreg: NFT_REG_1,
                data,
            } => self.immediate(data)?,
            Expr::Redir {
                reg_proto_min: None,
                ..
            } => {
                self.statements.push(Statement::Redirect { port: None });
                self.i += 1;
            }
            Expr::Tproxy { .. } => self.tproxy(None, None)?,
            Expr::Verdict { code, chain } => {
                let v = match (code, chain) {
                    (NF_ACCEPT, _) => Verdict::Accept,
                    (NF_DROP, _) => Verdict::Drop,
                    (NFT_RETURN, _) => Verdict::Return,
                    (NFT_JUMP, Some(c)) => Verdict::Jump(c),
                    (NFT_GOTO, Some(c)) => Verdict::Goto(c),
                    _ => return Err(self.unsupported_here()),
                };
                self.statements.push(Statement::Verdict(v));
                self.i += 1;
            }
            _ => return Err(self.unsupported_here()),
        }
        Ok(())
    }

    /// A protocol load (`meta l4proto` or `ip protocol`) and its compare: a match, unless it is
    /// the dependency of the port match right after it.
    fn l4proto(&mut self) -> Result<(), Unsupported> {
        let Some((op, [p])) = self.cmp_at(1) else {
            return Err(self.unsupported_here());
        };
        if op != NFT_CMP_EQ && op != NFT_CMP_NEQ {
            return Err(self.unsupported_here());
        }
        let proto = L4Proto::from_number(*p);
        let negate = op == NFT_CMP_NEQ;
        self.i += 2;
        let dep = !negate
            && matches!(
                self.peek(0),
                Some(Expr::Payload {
                    base: NFT_PAYLOAD_TRANSPORT_HEADER,
                    ..
                })
            );
        if !dep {
            self.matches.push(Match::L4Proto { negate, proto });
        }
        if !negate {
            self.l4 = Some(proto);
        }
        Ok(())
    }

    fn addr(&mut self, offset: u32, len: u32) -> Result<(), Unsupported> {
        let version = match self.family {
            Family::Ip => IpVersion::V4,
            Family::Ip6 => IpVersion::V6,
            Family::Inet => self
                .nf
                .ok_or_else(|| unsupported("payload", "address load without nfproto dependency"))?,
        };
        let (full, dir) = match (version, offset) {
            (IpVersion::V4, 12) => (4, Direction::Src),
            (IpVersion::V4, 16) => (4, Direction::Dst),
            (IpVersion::V6, 8) => (16, Direction::Src),
            (IpVersion::V6, 24) => (16, Direction::Dst),
            _ => return Err(self.unsupported_here()),
        };
        if len == 0 || len > full {
            return Err(self.unsupported_here());
        }
        self.i += 1;
        let pad = |b: &[u8]| {
            let mut v = b.to_vec();
            v.resize(full as usize, 0);
            v
        };
        let (negate, values) = if len < full {
            // A shortened load: a prefix of len bytes.
            let Some((op, data)) = self.cmp_at(0) else {
                return Err(self.unsupported_here());
            };
            if op != NFT_CMP_EQ && op != NFT_CMP_NEQ {
                return Err(self.unsupported_here());
            }
            let ip = ip_of(&pad(data)).ok_or_else(|| self.unsupported_here())?;
            let net = IpNet::new(ip, (len * 8) as u8).map_err(|_| self.unsupported_here())?;
            self.i += 1;
            (op == NFT_CMP_NEQ, Values::One(net))
        } else if let Some(Expr::Bitwise { mask, xor, .. }) = self.peek(0).cloned() {
            let Some((op, data)) = self.cmp_at(1) else {
                return Err(self.unsupported_here());
            };
            let plen: u32 = mask.iter().map(|b| b.count_ones()).sum();
            let ip = ip_of(data).ok_or_else(|| self.unsupported_here())?;
            if xor.iter().any(|b| *b != 0) || (op != NFT_CMP_EQ && op != NFT_CMP_NEQ) {
                return Err(self.unsupported_here());
            }
            let net = IpNet::new(ip, plen as u8).map_err(|_| self.unsupported_here())?;
            self.i += 2;
            (op == NFT_CMP_NEQ, Values::One(net))
        } else {
            self.values(|a, b| {
                if a == b {
                    let ip = ip_of(a)?;
                    Some(vec![IpNet::new(ip, (a.len() * 8) as u8).ok()?])
                } else {
                    prefixes(a, b)
                }
            })?
        };
        self.matches.push(Match::Addr {
            dir,
            version,
            negate,
            values,
        });
        Ok(())
    }

    fn mark(&mut self, is_meta: bool) -> Result<(), Unsupported> {
        // A statement: [load own] [bitwise] set.
        let set_target = |e: Option<&Expr>| match e {
            Some(Expr::MetaSet {
                key: NFT_META_MARK, ..
            }) => Some(true),
            Some(Expr::CtSet {
                key: NFT_CT_MARK, ..
            }) => Some(false),
            _ => None,
        };
        if let Some(to_meta) = set_target(self.peek(1)) {
            let v = if is_meta {
                MarkValue::FromMark
            } else {
                MarkValue::FromCtMark
            };
            self.push_mark_set(to_meta, v);
            self.i += 2;
            return Ok(());
        }
        if let (Some(Expr::Bitwise { mask, xor, .. }), Some(to_meta)) =
            (self.peek(1).cloned(), set_target(self.peek(2)))
        {
            let and = ne_u32(&mask).ok_or_else(|| self.unsupported_here())?;
            let xor = ne_u32(&xor).ok_or_else(|| self.unsupported_here())?;
            self.push_mark_set(to_meta, MarkValue::Bitwise { and, xor });
            self.i += 3;
            return Ok(());
        }
        // A match: [bitwise mask] cmp.
        let (mask, k) = match self.peek(1) {
            Some(Expr::Bitwise { mask, xor, .. }) if xor.iter().all(|b| *b == 0) => {
                (ne_u32(mask).ok_or_else(|| self.unsupported_here())?, 2)
            }
            _ => (u32::MAX, 1),
        };
        let Some((op, data)) = self.cmp_at(k) else {
            return Err(self.unsupported_here());
        };
        if op != NFT_CMP_EQ && op != NFT_CMP_NEQ {
            return Err(self.unsupported_here());
        }
        let value = ne_u32(data).ok_or_else(|| self.unsupported_here())?;
        let negate = op == NFT_CMP_NEQ;
        self.matches.push(if is_meta {
            Match::Mark {
                negate,
                mask,
                value,
            }
        } else {
            Match::CtMark {
                negate,
                mask,
                value,
            }
        });
        self.i += k + 1;
        Ok(())
    }

    fn push_mark_set(&mut self, to_meta: bool, v: MarkValue) {
        self.statements.push(if to_meta {
            Statement::MarkSet(v)
        } else {
            Statement::CtMarkSet(v)
        });
    }

    fn immediate(&mut self, data: Vec<u8>) -> Result<(), Unsupported> {
        match self.peek(1).cloned() {
            Some(Expr::MetaSet {
                key: NFT_META_MARK, ..
            })
            | Some(Expr::CtSet {
                key: NFT_CT_MARK, ..
            }) => {
                let v = MarkValue::Value(ne_u32(&data).ok_or_else(|| self.unsupported_here())?);
                let to_meta = matches!(self.peek(1), Some(Expr::MetaSet { .. }));
                self.push_mark_set(to_meta, v);
                self.i += 2;
            }
            Some(Expr::CtSet {
                key: NFT_CT_ZONE, ..
            }) => {
                let z = data
                    .get(..2)
                    .map(|b| u16::from_ne_bytes([b[0], b[1]]))
                    .ok_or_else(|| self.unsupported_here())?;
                self.statements.push(Statement::CtZoneSet(z));
                self.i += 2;
            }
            Some(Expr::Redir {
                reg_proto_min: Some(NFT_REG_1),
                ..
            }) => {
                let p = be_u16(&data).ok_or_else(|| self.unsupported_here())?;
                self.statements.push(Statement::Redirect { port: Some(p) });
                self.i += 2;
            }
            Some(Expr::Tproxy { .. }) => {
                self.i += 1;
                self.tproxy(Some((NFT_REG_1, data)), None)?;
            }
            Some(Expr::Immediate {
                dreg: NFT_REG_2,
                data: d2,
            }) if matches!(self.peek(2), Some(Expr::Tproxy { .. })) => {
                self.i += 2;
                self.tproxy(Some((NFT_REG_1, data)), Some((NFT_REG_2, d2)))?;
            }
            _ => return Err(self.unsupported_here()),
        }
        Ok(())
    }

    fn tproxy(
        &mut self,
        r1: Option<(u32, Vec<u8>)>,
        r2: Option<(u32, Vec<u8>)>,
    ) -> Result<(), Unsupported> {
        let Some(Expr::Tproxy {
            family,
            reg_addr,
            reg_port,
        }) = self.peek(0).cloned()
        else {
            return Err(self.unsupported_here());
        };
        let reg = |r: Option<u32>| -> Option<Vec<u8>> {
            let r = r?;
            [&r1, &r2]
                .into_iter()
                .flatten()
                .find(|(n, _)| *n == r)
                .map(|(_, d)| d.clone())
        };
        let addr = match reg_addr {
            Some(_) => Some(
                reg(reg_addr)
                    .and_then(|d| ip_of(&d))
                    .ok_or_else(|| self.unsupported_here())?,
            ),
            None => None,
        };
        let port = match reg_port {
            Some(_) => Some(
                reg(reg_port)
                    .and_then(|d| be_u16(&d))
                    .ok_or_else(|| self.unsupported_here())?,
            ),
            None => None,
        };
        let version = match (family as u8, self.family) {
            (NFPROTO_IPV4, Family::Inet) => Some(IpVersion::V4),
            (NFPROTO_IPV6, Family::Inet) => Some(IpVersion::V6),
            _ => None,
        };
        self.statements.push(Statement::Tproxy {
            version,
            addr,
            port,
        });
        self.i += 1;
        Ok(())
    }
}

#[cfg(test)]
mod cover_tests {
    use super::cover;

    #[test]
    fn covers_full_spaces_and_odd_ranges() {
        assert_eq!(cover(0, u128::MAX, 128), vec![(0, 0)]);
        assert_eq!(cover(0, u128::from(u32::MAX), 32), vec![(0, 0)]);
        assert_eq!(cover(1, 6, 32), vec![(1, 32), (2, 31), (4, 31), (6, 32)]);
        assert_eq!(cover(10, 10, 32), vec![(10, 32)]);
        assert_eq!(cover(u128::MAX, u128::MAX, 128), vec![(u128::MAX, 128)]);
        assert!(cover(5, 4, 32).is_empty());
    }
}

#[cfg(test)]
mod dependency_tests {
    use super::raise_rule;
    use crate::codec::lower::lower_rule;
    use nftmesh_model::canonical::canonical_rule;
    use nftmesh_model::expr::{Direction, L4Proto, Match, PortRange, Values};
    use nftmesh_model::ruleset::{Family, Rule};
    use std::collections::HashMap;

    #[test]
    fn a_repeated_protocol_match_before_a_port_has_one_idempotent_canonical_form() {
        let tcp = Match::L4Proto {
            negate: false,
            proto: L4Proto::Tcp,
        };
        let port = Match::Port {
            dir: Direction::Src,
            proto: L4Proto::Tcp,
            negate: false,
            values: Values::One(PortRange::single(1)),
        };
        for family in [Family::Inet, Family::Ip] {
            let rule = Rule::new(vec![tcp.clone(), tcp.clone(), port.clone()], vec![]);
            let lowered = lower_rule(family, &rule, &mut 0).unwrap();
            let raised = raise_rule(family, &lowered.exprs, &HashMap::new(), None).unwrap();
            // The dump canonicalizes what it raises; the form must be idempotent for that.
            let want = canonical_rule(family, &rule);
            assert_eq!(canonical_rule(family, &raised), want, "{family:?}");
            assert_eq!(
                canonical_rule(family, &want),
                want,
                "{family:?}: idempotent"
            );
            assert_eq!(want.matches, vec![port.clone()]);
        }
    }
}
