//! Dumped rule bytes → [`Expr`]: the decoding half of the one codec path (the encoding half is
//! [`crate::codec::lower`] + [`crate::codec::nftnl`]). Unknown expressions become [`Expr::Unknown`]; malformed
//! attributes are an error naming the expression, never a panic.

use crate::codec::ir::Expr;
use crate::codec::sys::*;
use crate::codec::wire::{attrs, be32, find, string};

type Attrs<'a> = Vec<(u16, &'a [u8])>;

fn u32_of(at: &Attrs<'_>, ty: u16, expr: &str, what: &str) -> Result<u32, String> {
    find(at, ty)
        .and_then(be32)
        .ok_or_else(|| format!("expression {expr}: missing or short {what}"))
}

fn opt_u32(at: &Attrs<'_>, ty: u16) -> Option<u32> {
    find(at, ty).and_then(be32)
}

/// The value bytes of a nested `NFTA_DATA_VALUE`.
fn data_value(at: &Attrs<'_>, ty: u16, expr: &str, what: &str) -> Result<Vec<u8>, String> {
    let nested = find(at, ty).ok_or_else(|| format!("expression {expr}: missing {what}"))?;
    let inner = attrs(nested).map_err(|e| format!("expression {expr} {what}: {e}"))?;
    find(&inner, NFTA_DATA_VALUE)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format!("expression {expr}: {what} holds no value"))
}

/// Decode the `NFTA_RULE_EXPRESSIONS` list of a dumped rule.
pub fn decode_exprs(list: &[u8]) -> Result<Vec<Expr>, String> {
    let mut out = Vec::new();
    for (i, (ty, elem)) in attrs(list)?.into_iter().enumerate() {
        if ty != NFTA_LIST_ELEM {
            continue;
        }
        let at = attrs(elem).map_err(|e| format!("expression #{i}: {e}"))?;
        let name = find(&at, NFTA_EXPR_NAME)
            .map(string)
            .ok_or_else(|| format!("expression #{i} has no name"))?;
        let data = find(&at, NFTA_EXPR_DATA).unwrap_or(&[]);
        let d = attrs(data).map_err(|e| format!("expression #{i} ({name}): {e}"))?;
        out.push(decode_one(&name, data, &d).map_err(|e| format!("#{i}: {e}"))?);
    }
    Ok(out)
}

/// The chains a rule's expression list jumps or goes to, reading only its `immediate`
/// expressions: the other expressions may be ones nftmesh does not decode (iptables-nft's
/// `match`/`target`), and are skipped.
pub fn verdict_chains(list: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for (ty, elem) in attrs(list).unwrap_or_default() {
        if ty != NFTA_LIST_ELEM {
            continue;
        }
        let Ok(at) = attrs(elem) else { continue };
        if find(&at, NFTA_EXPR_NAME).map(string).as_deref() != Some("immediate") {
            continue;
        }
        let data = find(&at, NFTA_EXPR_DATA).unwrap_or(&[]);
        let Ok(d) = attrs(data) else { continue };
        if let Ok(Expr::Verdict {
            code: NFT_JUMP | NFT_GOTO,
            chain: Some(c),
        }) = decode_one("immediate", data, &d)
        {
            out.push(c);
        }
    }
    out
}

fn decode_one(name: &str, raw: &[u8], d: &Attrs<'_>) -> Result<Expr, String> {
    let n = name;
    Ok(match name {
        "meta" => match opt_u32(d, NFTA_META_DREG) {
            Some(dreg) => Expr::Meta {
                key: u32_of(d, NFTA_META_KEY, n, "key")?,
                dreg,
            },
            None => Expr::MetaSet {
                key: u32_of(d, NFTA_META_KEY, n, "key")?,
                sreg: u32_of(d, NFTA_META_SREG, n, "sreg")?,
            },
        },
        "ct" => match opt_u32(d, NFTA_CT_DREG) {
            Some(dreg) => Expr::Ct {
                key: u32_of(d, NFTA_CT_KEY, n, "key")?,
                dreg,
            },
            None => Expr::CtSet {
                key: u32_of(d, NFTA_CT_KEY, n, "key")?,
                sreg: u32_of(d, NFTA_CT_SREG, n, "sreg")?,
            },
        },
        "payload" => Expr::Payload {
            base: u32_of(d, NFTA_PAYLOAD_BASE, n, "base")?,
            offset: u32_of(d, NFTA_PAYLOAD_OFFSET, n, "offset")?,
            len: u32_of(d, NFTA_PAYLOAD_LEN, n, "len")?,
            dreg: u32_of(d, NFTA_PAYLOAD_DREG, n, "dreg")?,
        },
        "cmp" => Expr::Cmp {
            sreg: u32_of(d, NFTA_CMP_SREG, n, "sreg")?,
            op: u32_of(d, NFTA_CMP_OP, n, "op")?,
            data: data_value(d, NFTA_CMP_DATA, n, "data")?,
        },
        "range" => Expr::Range {
            sreg: u32_of(d, NFTA_RANGE_SREG, n, "sreg")?,
            op: u32_of(d, NFTA_RANGE_OP, n, "op")?,
            from: data_value(d, NFTA_RANGE_FROM_DATA, n, "from")?,
            to: data_value(d, NFTA_RANGE_TO_DATA, n, "to")?,
        },
        "bitwise" => Expr::Bitwise {
            sreg: u32_of(d, NFTA_BITWISE_SREG, n, "sreg")?,
            dreg: u32_of(d, NFTA_BITWISE_DREG, n, "dreg")?,
            len: u32_of(d, NFTA_BITWISE_LEN, n, "len")?,
            mask: data_value(d, NFTA_BITWISE_MASK, n, "mask")?,
            xor: data_value(d, NFTA_BITWISE_XOR, n, "xor")?,
        },
        "byteorder" => Expr::Byteorder {
            sreg: u32_of(d, NFTA_BYTEORDER_SREG, n, "sreg")?,
            dreg: u32_of(d, NFTA_BYTEORDER_DREG, n, "dreg")?,
            op: u32_of(d, NFTA_BYTEORDER_OP, n, "op")?,
            len: u32_of(d, NFTA_BYTEORDER_LEN, n, "len")?,
            size: u32_of(d, NFTA_BYTEORDER_SIZE, n, "size")?,
        },
        "lookup" => Expr::Lookup {
            sreg: u32_of(d, NFTA_LOOKUP_SREG, n, "sreg")?,
            set: find(d, NFTA_LOOKUP_SET)
                .map(string)
                .ok_or_else(|| format!("expression {n}: missing set"))?,
            set_id: opt_u32(d, NFTA_LOOKUP_SET_ID),
            invert: opt_u32(d, NFTA_LOOKUP_FLAGS).unwrap_or(0) & NFT_LOOKUP_F_INV != 0,
        },
        "immediate" => {
            let dreg = u32_of(d, NFTA_IMMEDIATE_DREG, n, "dreg")?;
            let nested = find(d, NFTA_IMMEDIATE_DATA)
                .ok_or_else(|| format!("expression {n}: missing data"))?;
            let inner = attrs(nested).map_err(|e| format!("expression {n}: {e}"))?;
            if dreg == NFT_REG_VERDICT {
                let v = find(&inner, NFTA_DATA_VERDICT)
                    .ok_or_else(|| format!("expression {n}: no verdict"))?;
                let v = attrs(v).map_err(|e| format!("expression {n} verdict: {e}"))?;
                Expr::Verdict {
                    code: u32_of(&v, NFTA_VERDICT_CODE, n, "verdict code")? as i32,
                    chain: find(&v, NFTA_VERDICT_CHAIN).map(string),
                }
            } else {
                Expr::Immediate {
                    dreg,
                    data: find(&inner, NFTA_DATA_VALUE)
                        .map(<[u8]>::to_vec)
                        .ok_or_else(|| format!("expression {n}: no value"))?,
                }
            }
        }
        "counter" => Expr::Counter,
        "log" => Expr::Log {
            prefix: find(d, NFTA_LOG_PREFIX).map(string),
        },
        "redir" => Expr::Redir {
            reg_proto_min: opt_u32(d, NFTA_REDIR_REG_PROTO_MIN),
            flags: opt_u32(d, NFTA_REDIR_FLAGS).unwrap_or(0),
        },
        "tproxy" => Expr::Tproxy {
            family: u32_of(d, NFTA_TPROXY_FAMILY, n, "family")?,
            reg_addr: opt_u32(d, NFTA_TPROXY_REG_ADDR),
            reg_port: opt_u32(d, NFTA_TPROXY_REG_PORT),
        },
        "socket" => Expr::Socket {
            key: u32_of(d, NFTA_SOCKET_KEY, n, "key")?,
            dreg: u32_of(d, NFTA_SOCKET_DREG, n, "dreg")?,
        },
        other => Expr::Unknown {
            name: other.to_string(),
            raw: raw.to_vec(),
        },
    })
}

/// The comment in rule userdata (TLV type 0), if any.
pub fn comment_of(udata: &[u8]) -> Option<String> {
    let mut off = 0;
    while off + 2 <= udata.len() {
        let (ty, len) = (udata[off], usize::from(udata[off + 1]));
        let v = udata.get(off + 2..off + 2 + len)?;
        if ty == 0 {
            return Some(string(v));
        }
        off += 2 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_or_unknown_never_a_panic() {
        let mut seed = 0x1234_5678u32;
        for len in 0..400usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = decode_exprs(&bytes);
        }
    }

    #[test]
    fn comment_userdata_round_trips() {
        let mut ud = vec![0u8, 4];
        ud.extend_from_slice(b"abc\0");
        assert_eq!(comment_of(&ud).as_deref(), Some("abc"));
        assert_eq!(comment_of(&[0, 9, 1]), None);
        assert_eq!(comment_of(&[]), None);
    }
}
