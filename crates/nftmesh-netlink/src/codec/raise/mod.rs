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

mod matches;
mod sets;
mod statements;

pub use sets::raise_set;
use sets::{intervals, prefixes};
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
