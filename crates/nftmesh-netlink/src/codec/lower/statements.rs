//! Statements lowered to expressions: counters, logs, marks set, NAT, tproxy, verdicts.

use super::*;

impl Ctx<'_> {
    pub(super) fn mark_value(&mut self, own_is_meta: bool, v: &MarkValue) {
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

    pub(super) fn lower_statement(&mut self, s: &Statement) -> Result<(), LowerError> {
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
            Statement::Snat { version, addr } => {
                let table_version = match self.family {
                    Family::Ip => Some(IpVersion::V4),
                    Family::Ip6 => Some(IpVersion::V6),
                    Family::Inet => None,
                };
                let wrong_family = version.zip(table_version).is_some_and(|(v, t)| v != t)
                    || table_version.is_some_and(|t| IpVersion::of(*addr) != t)
                    || version.is_some_and(|v| IpVersion::of(*addr) != v);
                if wrong_family {
                    return Err(err(
                        nftmesh_model::render::render_statement(s),
                        "the address must be of the snat's and the table's family",
                    ));
                }
                let family = match (version, self.family) {
                    (Some(v), _) => u32::from(nfproto_of(*v)),
                    (None, Family::Ip) => u32::from(NFPROTO_IPV4),
                    (None, Family::Ip6) => u32::from(NFPROTO_IPV6),
                    (None, Family::Inet) => {
                        return Err(err(
                            nftmesh_model::render::render_statement(s),
                            "snat in an inet table needs ip or ip6",
                        ))
                    }
                };
                self.push(Expr::Immediate {
                    dreg: NFT_REG_1,
                    data: addr_bytes(*addr),
                });
                self.push(Expr::Nat {
                    kind: NFT_NAT_SNAT,
                    family,
                    reg_addr_min: Some(NFT_REG_1),
                });
            }
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
