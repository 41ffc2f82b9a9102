//! The kernel's expression language (registers, loads, compares, lookups) as a Rust enum: the
//! meeting point of the model and the wire. [`crate::codec::lower`] turns matches and statements into
//! it, [`crate::codec::nftnl`] encodes it through libnftnl, [`crate::codec::wire`] decodes dumped bytes back into
//! it and [`crate::codec::raise`] turns it back into the model.

/// One nf_tables expression, as the kernel runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta load KEY => reg`.
    Meta {
        /// `NFT_META_*`.
        key: u32,
        /// Destination register.
        dreg: u32,
    },
    /// `meta set KEY with reg`.
    MetaSet {
        /// `NFT_META_*`.
        key: u32,
        /// Source register.
        sreg: u32,
    },
    /// `ct load KEY => reg`.
    Ct {
        /// `NFT_CT_*`.
        key: u32,
        /// Destination register.
        dreg: u32,
    },
    /// `ct set KEY with reg`.
    CtSet {
        /// `NFT_CT_*`.
        key: u32,
        /// Source register.
        sreg: u32,
    },
    /// `payload load LEN @ BASE + OFFSET => reg`.
    Payload {
        /// `NFT_PAYLOAD_*_HEADER`.
        base: u32,
        /// Byte offset in that header.
        offset: u32,
        /// Bytes loaded.
        len: u32,
        /// Destination register.
        dreg: u32,
    },
    /// `cmp OP reg DATA`.
    Cmp {
        /// Source register.
        sreg: u32,
        /// `NFT_CMP_*`.
        op: u32,
        /// Compared bytes.
        data: Vec<u8>,
    },
    /// `range OP reg FROM TO`.
    Range {
        /// Source register.
        sreg: u32,
        /// `NFT_RANGE_*`.
        op: u32,
        /// Lower bound (inclusive).
        from: Vec<u8>,
        /// Upper bound (inclusive).
        to: Vec<u8>,
    },
    /// `bitwise reg = (reg & MASK) ^ XOR`.
    Bitwise {
        /// Source register.
        sreg: u32,
        /// Destination register.
        dreg: u32,
        /// Bytes processed.
        len: u32,
        /// And-mask.
        mask: Vec<u8>,
        /// Xor value.
        xor: Vec<u8>,
    },
    /// `byteorder reg = hton(reg, SIZE, LEN)`.
    Byteorder {
        /// Source register.
        sreg: u32,
        /// Destination register.
        dreg: u32,
        /// `NFT_BYTEORDER_*`.
        op: u32,
        /// Bytes processed.
        len: u32,
        /// Word size.
        size: u32,
    },
    /// `lookup reg set NAME`.
    Lookup {
        /// Source register.
        sreg: u32,
        /// The set's name (kernel-assigned for anonymous sets).
        set: String,
        /// The set's id within the batch that created it.
        set_id: Option<u32>,
        /// Whether the lookup is negated.
        invert: bool,
    },
    /// `immediate reg DATA`.
    Immediate {
        /// Destination register.
        dreg: u32,
        /// The value.
        data: Vec<u8>,
    },
    /// `immediate reg 0 VERDICT`.
    Verdict {
        /// `NF_*` / `NFT_*` verdict code.
        code: i32,
        /// Target chain of jump/goto.
        chain: Option<String>,
    },
    /// `counter`.
    Counter,
    /// `log [prefix]`.
    Log {
        /// Log prefix.
        prefix: Option<String>,
    },
    /// `redir [proto_min reg] flags`.
    Redir {
        /// Register holding the port.
        reg_proto_min: Option<u32>,
        /// `NF_NAT_RANGE_*` flags.
        flags: u32,
    },
    /// `tproxy FAMILY [addr reg] [port reg]`.
    Tproxy {
        /// `NFPROTO_*`.
        family: u32,
        /// Register holding the address.
        reg_addr: Option<u32>,
        /// Register holding the port.
        reg_port: Option<u32>,
    },
    /// `nat TYPE FAMILY addr_min reg`: source or destination NAT to the address in a register.
    Nat {
        /// `NFT_NAT_SNAT` or `NFT_NAT_DNAT`.
        kind: u32,
        /// `NFPROTO_*`.
        family: u32,
        /// Register holding the address.
        reg_addr_min: Option<u32>,
    },
    /// `socket load KEY => reg`.
    Socket {
        /// `NFT_SOCKET_*`.
        key: u32,
        /// Destination register.
        dreg: u32,
    },
    /// An expression nftmesh does not model, kept with its raw attribute bytes.
    Unknown {
        /// Its kernel name (`fib`, `nat`, ...).
        name: String,
        /// Its `NFTA_EXPR_DATA` payload.
        raw: Vec<u8>,
    },
}

impl Expr {
    /// The kernel name of the expression.
    pub fn name(&self) -> &str {
        match self {
            Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Ct { .. } | Expr::CtSet { .. } => "ct",
            Expr::Payload { .. } => "payload",
            Expr::Cmp { .. } => "cmp",
            Expr::Range { .. } => "range",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Byteorder { .. } => "byteorder",
            Expr::Lookup { .. } => "lookup",
            Expr::Immediate { .. } | Expr::Verdict { .. } => "immediate",
            Expr::Counter => "counter",
            Expr::Log { .. } => "log",
            Expr::Redir { .. } => "redir",
            Expr::Tproxy { .. } => "tproxy",
            Expr::Socket { .. } => "socket",
            Expr::Nat { .. } => "nat",
            Expr::Unknown { name, .. } => name,
        }
    }
}

/// A set as the kernel stores it: keys of fixed length, intervals as start/end elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireSet {
    /// The set's name; anonymous sets use `__set%d` and the kernel picks the number.
    pub name: String,
    /// Id within the batch, referenced by lookups.
    pub id: u32,
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// nft's datatype id of the keys.
    pub key_type: u32,
    /// Key length in bytes.
    pub key_len: u32,
    /// Elements: key bytes and whether it ends an interval.
    pub elements: Vec<(Vec<u8>, bool)>,
}

/// Intervals of big-endian keys → wire elements as `nft` writes them: a leading end element
/// at zero when the first interval does not start there, then start (and end+1) per interval.
/// Overlapping and adjacent intervals are merged first.
pub fn interval_elements(mut ivs: Vec<(Vec<u8>, Vec<u8>)>, key_len: usize) -> Vec<(Vec<u8>, bool)> {
    ivs.sort();
    let mut merged: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (a, b) in ivs {
        if let Some(last) = merged.last_mut() {
            let touches = match increment(&last.1) {
                Some(next) => a <= next,
                None => true,
            };
            if touches {
                if b > last.1 {
                    last.1 = b;
                }
                continue;
            }
        }
        merged.push((a, b));
    }
    let zero = vec![0u8; key_len];
    let mut out = Vec::new();
    if merged.first().is_some_and(|(a, _)| *a != zero) {
        out.push((zero, true));
    }
    for (a, b) in merged {
        out.push((a, false));
        if let Some(end) = increment(&b) {
            out.push((end, true));
        }
    }
    out
}

/// Wire elements of an interval set → inclusive intervals of big-endian keys.
pub fn element_intervals(elements: &[(Vec<u8>, bool)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut sorted: Vec<&(Vec<u8>, bool)> = elements.iter().collect();
    sorted.sort_by(|x, y| x.0.cmp(&y.0).then(y.1.cmp(&x.1)));
    let mut out = Vec::new();
    let mut open: Option<&Vec<u8>> = None;
    for (key, is_end) in sorted {
        match (open, *is_end) {
            (Some(start), true) => {
                if let Some(last) = decrement(key) {
                    out.push((start.clone(), last));
                }
                open = None;
            }
            (None, false) => open = Some(key),
            (Some(start), false) => {
                // A start without end before the next start: the previous interval is a
                // single element in a non-interval encoding; keep it as a point.
                out.push((start.clone(), start.clone()));
                open = Some(key);
            }
            (None, true) => {}
        }
    }
    if let Some(start) = open {
        out.push((start.clone(), vec![0xff; start.len()]));
    }
    out
}

/// Big-endian `x + 1`, or `None` on overflow.
pub fn increment(x: &[u8]) -> Option<Vec<u8>> {
    let mut v = x.to_vec();
    for b in v.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return Some(v);
        }
    }
    None
}

/// Big-endian `x - 1`, or `None` on underflow.
pub fn decrement(x: &[u8]) -> Option<Vec<u8>> {
    let mut v = x.to_vec();
    for b in v.iter_mut().rev() {
        if *b == 0 {
            *b = 0xff;
        } else {
            *b -= 1;
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_encode_like_nft_and_decode_back() {
        // nft --debug=netlink for `ip daddr { 10.0.0.0/8, 192.168.0.0/16 }`.
        let ivs = vec![
            (vec![192, 168, 0, 0], vec![192, 168, 255, 255]),
            (vec![10, 0, 0, 0], vec![10, 255, 255, 255]),
        ];
        let els = interval_elements(ivs.clone(), 4);
        assert_eq!(
            els,
            vec![
                (vec![0, 0, 0, 0], true),
                (vec![10, 0, 0, 0], false),
                (vec![11, 0, 0, 0], true),
                (vec![192, 168, 0, 0], false),
                (vec![192, 169, 0, 0], true),
            ]
        );
        let mut back = element_intervals(&els);
        back.sort();
        let mut want = ivs;
        want.sort();
        assert_eq!(back, want);
    }

    #[test]
    fn overlapping_and_adjacent_intervals_merge_and_the_top_stays_open() {
        let ivs = vec![
            (vec![0, 10], vec![0, 20]),
            (vec![0, 21], vec![0, 30]),
            (vec![0, 15], vec![0, 16]),
            (vec![0xff, 0], vec![0xff, 0xff]),
        ];
        let els = interval_elements(ivs, 2);
        assert_eq!(
            els,
            vec![
                (vec![0, 0], true),
                (vec![0, 10], false),
                (vec![0, 31], true),
                (vec![0xff, 0], false),
            ]
        );
        assert_eq!(
            element_intervals(&els),
            vec![
                (vec![0, 10], vec![0, 30]),
                (vec![0xff, 0], vec![0xff, 0xff])
            ]
        );
    }
}
