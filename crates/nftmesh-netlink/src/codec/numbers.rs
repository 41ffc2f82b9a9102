//! The kernel's numbers for the model's families and hooks.

use super::sys::*;
use nftmesh_model::ruleset::{Family, Hook};

/// The netlink number of a family.
pub fn family_number(f: Family) -> u8 {
    match f {
        Family::Ip => NFPROTO_IPV4,
        Family::Ip6 => NFPROTO_IPV6,
        Family::Inet => NFPROTO_INET,
    }
}

pub(crate) fn family_of(n: u8) -> Option<Family> {
    match n {
        NFPROTO_IPV4 => Some(Family::Ip),
        NFPROTO_IPV6 => Some(Family::Ip6),
        NFPROTO_INET => Some(Family::Inet),
        _ => None,
    }
}

pub(crate) fn hook_number(h: Hook) -> u32 {
    match h {
        Hook::Prerouting => NF_INET_PRE_ROUTING,
        Hook::Input => NF_INET_LOCAL_IN,
        Hook::Forward => NF_INET_FORWARD,
        Hook::Output => NF_INET_LOCAL_OUT,
        Hook::Postrouting => NF_INET_POST_ROUTING,
    }
}
