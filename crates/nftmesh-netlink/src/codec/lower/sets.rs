//! Named sets lowered to wire sets: key type, flags and elements.

use super::*;

/// Lower a named set of the model to its kernel form, numbered `id` within the batch.
///
/// Interval sets hold prefixes and port ranges; uid, gid and mark sets hold single values
/// (the kernel keeps them in host byte order, which does not order as intervals).
pub fn lower_set(set: &nftmesh_model::ruleset::Set, id: u32) -> Result<WireSet, LowerError> {
    use nftmesh_model::ruleset::{SetElement, SetKeyType};
    let what = || format!("set {} ({})", set.name, set.key_type.keyword());
    let (key_type, key_len) = match set.key_type {
        SetKeyType::Ipv4Addr => (TYPE_IPADDR, 4),
        SetKeyType::Ipv6Addr => (TYPE_IP6ADDR, 16),
        SetKeyType::InetService => (TYPE_INET_SERVICE, 2),
        SetKeyType::Ifname => (TYPE_IFNAME, IFNAMSIZ as u32),
        SetKeyType::Uid => (TYPE_UID, 4),
        SetKeyType::Gid => (TYPE_GID, 4),
        SetKeyType::Mark => (TYPE_MARK, 4),
    };
    let host_order = matches!(
        set.key_type,
        SetKeyType::Uid | SetKeyType::Gid | SetKeyType::Mark
    );
    if set.interval && (host_order || set.key_type == SetKeyType::Ifname) {
        return Err(err(what(), "interval sets hold addresses and ports only"));
    }
    let mut ivs = Vec::new();
    for e in &set.elements {
        let iv = match (set.key_type, e) {
            (SetKeyType::Ipv4Addr, SetElement::Prefix(n @ IpNet::V4(_)))
            | (SetKeyType::Ipv6Addr, SetElement::Prefix(n @ IpNet::V6(_))) => prefix_interval(n),
            (SetKeyType::InetService, SetElement::Range(a, b)) if *a <= *b && *b <= 0xffff => (
                (*a as u16).to_be_bytes().to_vec(),
                (*b as u16).to_be_bytes().to_vec(),
            ),
            (SetKeyType::Ifname, SetElement::Name(n)) => {
                let b = ifname_bytes(n)?;
                (b.clone(), b)
            }
            (_, SetElement::Range(a, b)) if host_order && a == b => {
                (a.to_ne_bytes().to_vec(), a.to_ne_bytes().to_vec())
            }
            (_, other) => return Err(err(what(), element_mismatch(other))),
        };
        if !set.interval && iv.0 != iv.1 {
            return Err(err(what(), "a range or prefix needs an interval set"));
        }
        ivs.push(iv);
    }
    let mut flags = 0;
    let elements = if set.interval {
        flags |= NFT_SET_INTERVAL;
        interval_elements(ivs, key_len as usize)
    } else {
        let mut keys: Vec<Vec<u8>> = ivs.into_iter().map(|(a, _)| a).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter().map(|k| (k, false)).collect()
    };
    Ok(WireSet {
        name: set.name.clone(),
        id,
        flags,
        key_type,
        key_len,
        elements,
    })
}

pub(super) fn element_mismatch(e: &nftmesh_model::ruleset::SetElement) -> &'static str {
    use nftmesh_model::ruleset::SetElement;
    match e {
        SetElement::Prefix(_) => "an address element does not match the key type",
        SetElement::Range(..) => {
            "a number element does not match the key type (or is out of range)"
        }
        SetElement::Name(_) => "a name element does not match the key type",
    }
}
