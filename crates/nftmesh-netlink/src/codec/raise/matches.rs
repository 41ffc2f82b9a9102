//! Matches raised from their expressions: protocols, addresses, marks.

use super::*;

impl Raiser<'_> {
    /// A protocol load (`meta l4proto` or `ip protocol`) and its compare: a match, unless it is
    /// the dependency of the port match right after it.
    pub(super) fn l4proto(&mut self) -> Result<(), Unsupported> {
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

    pub(super) fn addr(&mut self, offset: u32, len: u32) -> Result<(), Unsupported> {
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

    pub(super) fn mark(&mut self, is_meta: bool) -> Result<(), Unsupported> {
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
}
