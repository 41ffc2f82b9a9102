//! Dumped rule bytes → [`Expr`]: the decoding half of the one codec path (the encoding half is
//! [`crate::codec::lower`] + [`crate::codec::nftnl`]). Unknown expressions become [`Expr::Unknown`]; malformed
//! attributes are an error naming the expression, never a panic.

use crate::codec::ir::Expr;
use crate::codec::sys::*;
use crate::codec::wire::{attrs, string};

use crate::codec::wire::Attrs;

/// Decode the `NFTA_RULE_EXPRESSIONS` list of a dumped rule.
pub fn decode_exprs(list: &[u8]) -> Result<Vec<Expr>, String> {
    let mut out = Vec::new();
    for (i, (ty, elem)) in attrs(list)?.into_iter().enumerate() {
        if ty != NFTA_LIST_ELEM {
            continue;
        }
        let at = attrs(elem).map_err(|e| format!("expression #{i}: {e}"))?;
        let name = at
            .string(NFTA_EXPR_NAME)
            .ok_or_else(|| format!("expression #{i} has no name"))?;
        let data = at.get(NFTA_EXPR_DATA).unwrap_or(&[]);
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
        if at.string(NFTA_EXPR_NAME).as_deref() != Some("immediate") {
            continue;
        }
        let data = at.get(NFTA_EXPR_DATA).unwrap_or(&[]);
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

/// The packets and bytes of a rule's `counter` expressions (summed; a rule has one), reading
/// only those: the others may be ones nftmesh does not decode. `None` without a counter.
pub fn counter_of(list: &[u8]) -> Option<nftmesh_model::stats::Counter> {
    let mut out: Option<nftmesh_model::stats::Counter> = None;
    for (ty, elem) in attrs(list).unwrap_or_default() {
        if ty != NFTA_LIST_ELEM {
            continue;
        }
        let Ok(at) = attrs(elem) else { continue };
        if at.string(NFTA_EXPR_NAME).as_deref() != Some("counter") {
            continue;
        }
        let data = at.get(NFTA_EXPR_DATA).unwrap_or(&[]);
        let Ok(d) = attrs(data) else { continue };
        let n = |ty| d.be64(ty).unwrap_or(0);
        let c = nftmesh_model::stats::Counter {
            packets: n(NFTA_COUNTER_PACKETS),
            bytes: n(NFTA_COUNTER_BYTES),
        };
        out = Some(out.unwrap_or_default() + c);
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
        for bytes in crate::codec::wire::testing::garbage(0x1234_5678, 400) {
            let _ = decode_exprs(&bytes);
        }
    }

    /// A `counter` expression element as the kernel dumps it: name, then data holding
    /// `NFTA_COUNTER_BYTES` and `NFTA_COUNTER_PACKETS` (big-endian u64s).
    fn counter_elem(packets: u64, bytes: u64) -> Vec<u8> {
        use crate::codec::wire::testing::attr;
        let mut data = attr(NFTA_COUNTER_BYTES, &bytes.to_be_bytes());
        data.extend(attr(NFTA_COUNTER_PACKETS, &packets.to_be_bytes()));
        let mut elem = attr(NFTA_EXPR_NAME, b"counter\0");
        elem.extend(attr(NFTA_EXPR_DATA | 0x8000, &data));
        attr(NFTA_LIST_ELEM | 0x8000, &elem)
    }

    #[test]
    fn counters_are_read_and_summed() {
        assert_eq!(counter_of(&[]), None);
        let one = counter_elem(5, 300);
        let c = counter_of(&one).unwrap();
        assert_eq!((c.packets, c.bytes), (5, 300));
        let mut two = one.clone();
        two.extend(counter_elem(1, 60));
        let c = counter_of(&two).unwrap();
        assert_eq!((c.packets, c.bytes), (6, 360));
        // Truncated bytes are no counter, not a panic.
        assert_eq!(counter_of(&one[..one.len() - 3]), None);
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
