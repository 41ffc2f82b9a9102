//! Statements raised from their expressions: marks set, immediates, tproxy.

use super::*;

impl Raiser<'_> {
    pub(super) fn push_mark_set(&mut self, to_meta: bool, v: MarkValue) {
        self.statements.push(if to_meta {
            Statement::MarkSet(v)
        } else {
            Statement::CtMarkSet(v)
        });
    }

    pub(super) fn immediate(&mut self, data: Vec<u8>) -> Result<(), Unsupported> {
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
            Some(Expr::Nat {
                kind: NFT_NAT_SNAT,
                family,
                reg_addr_min: Some(NFT_REG_1),
            }) => {
                let addr = ip_of(&data).ok_or_else(|| self.unsupported_here())?;
                let version = match (family as u8, self.family) {
                    (NFPROTO_IPV4, Family::Inet) => Some(IpVersion::V4),
                    (NFPROTO_IPV6, Family::Inet) => Some(IpVersion::V6),
                    (NFPROTO_IPV4, Family::Ip) | (NFPROTO_IPV6, Family::Ip6) => None,
                    _ => return Err(self.unsupported_here()),
                };
                if version.is_some_and(|v| IpVersion::of(addr) != v) {
                    return Err(self.unsupported_here());
                }
                self.statements.push(Statement::Snat { version, addr });
                self.i += 2;
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

    pub(super) fn tproxy(
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
