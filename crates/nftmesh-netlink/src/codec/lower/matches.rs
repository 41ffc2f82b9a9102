//! Matches lowered to expressions: addresses, ports, interfaces, owners, marks, states.

use super::*;

impl Ctx<'_> {
    pub(super) fn lower_match(&mut self, m: &Match) -> Result<(), LowerError> {
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

    pub(super) fn hton4(&mut self) {
        self.push(Expr::Byteorder {
            sreg: NFT_REG_1,
            dreg: NFT_REG_1,
            op: NFT_BYTEORDER_HTON,
            len: 4,
            size: 4,
        });
    }

    pub(super) fn bitwise4(&mut self, mask: u32, xor: u32) {
        self.push(Expr::Bitwise {
            sreg: NFT_REG_1,
            dreg: NFT_REG_1,
            len: 4,
            mask: mask.to_ne_bytes().to_vec(),
            xor: xor.to_ne_bytes().to_vec(),
        });
    }

    /// A single value (`first == last`) or an inclusive range, as `nft` encodes them.
    pub(super) fn range_or_cmp(&mut self, negate: bool, first: Vec<u8>, last: Vec<u8>) {
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
}
