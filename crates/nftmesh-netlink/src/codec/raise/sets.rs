//! Sets read back: intervals of wire elements → prefixes and ranges of the model.

use super::*;

/// `2^size - 1`, saturating at the full 128-bit space.
pub(super) fn span(size: u32) -> u128 {
    if size >= 128 {
        u128::MAX
    } else {
        (1u128 << size) - 1
    }
}

/// The fewest prefixes covering exactly `[lo, hi]` of a `bits`-bit space.
pub(super) fn cover(lo: u128, hi: u128, bits: u32) -> Vec<(u128, u8)> {
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

pub(super) fn prefixes(lo: &[u8], hi: &[u8]) -> Option<Vec<IpNet>> {
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

pub(super) fn intervals(s: &SetData) -> Vec<(Vec<u8>, Vec<u8>)> {
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

#[cfg(test)]
mod cover_tests {
    use super::cover;

    #[test]
    pub(super) fn covers_full_spaces_and_odd_ranges() {
        assert_eq!(cover(0, u128::MAX, 128), vec![(0, 0)]);
        assert_eq!(cover(0, u128::from(u32::MAX), 32), vec![(0, 0)]);
        assert_eq!(cover(1, 6, 32), vec![(1, 32), (2, 31), (4, 31), (6, 32)]);
        assert_eq!(cover(10, 10, 32), vec![(10, 32)]);
        assert_eq!(cover(u128::MAX, u128::MAX, 128), vec![(u128::MAX, 128)]);
        assert!(cover(5, 4, 32).is_empty());
    }
}
