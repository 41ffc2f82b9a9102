//! What the CLI reads from the host: DNS servers, IPv6 addresses, the group database.

use std::net::IpAddr;

/// Nameservers listed in a resolv.conf text, in order.
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => addr.split('%').next()?.parse().ok(),
                _ => None,
            }
        })
        .collect()
}

/// Whether this network namespace has a global IPv6 address (not loopback, not link-local).
pub fn has_global_ipv6() -> bool {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return false;
    };
    addrs
        .filter_map(|a| {
            a.address
                .and_then(|s| s.as_sockaddr_in6().map(|s6| s6.ip()))
        })
        .any(|ip| !ip.is_loopback() && (ip.segments()[0] & 0xffc0) != 0xfe80)
}

/// The uid of a user from the system's user database.
pub fn uid_of(name: &str) -> Option<u32> {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

/// The gid of a group from the system's group database.
pub fn gid_of(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_read_in_order_and_comments_skipped() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.10\nnameserver fe80::1%eth0\n nameserver 2001:db8::53\nnameserver bogus\n";
        let got = nameservers(text);
        assert_eq!(
            got,
            vec![
                "10.0.0.10".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap(),
                "2001:db8::53".parse().unwrap()
            ]
        );
    }
}
