//! Dumped rule bytes → [`Expr`]: the decoding half of the one codec path (the encoding half is
//! [`crate::codec::lower`] + [`crate::codec::nftnl`]). Unknown expressions become [`Expr::Unknown`]; malformed
//! attributes are an error naming the expression, never a panic.

use crate::codec::ir::Expr;
use crate::codec::sys::*;
use crate::codec::wire::{attrs, find, string};

type Attrs<'a> = Vec<(u16, &'a [u8])>;

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
    crate::codec::expr::decode(name, raw, d)
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
