//! What the CLI reads from the host: DNS servers, IPv6 addresses, the group database.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

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

/// The path's components, as text (one that is not UTF-8 is left out).
fn components(path: &Path) -> Vec<&str> {
    path.components()
        .filter_map(|c| c.as_os_str().to_str())
        .collect()
}

/// The root directory of the process whose network namespace `netns` is, for a
/// `/proc/PID/ns/net` path: `/proc/PID/root`, the files as that process (the pod) sees them.
fn process_root(netns: &Path) -> Option<PathBuf> {
    match components(netns).as_slice() {
        ["/", "proc", pid, "ns", "net"] if pid.bytes().all(|b| b.is_ascii_digit()) => {
            Some(PathBuf::from(format!("/proc/{pid}/root")))
        }
        _ => None,
    }
}

/// The group database that belongs with a network namespace given by path: for
/// `/proc/PID/ns/net` that process's `/etc/group` (`/proc/PID/root/etc/group`, as the pod sees
/// it); `None` (the system's, through NSS) otherwise.
pub fn group_file_for(netns: Option<&Path>) -> Option<PathBuf> {
    Some(process_root(netns?)?.join("etc/group"))
}

/// The gid of group `name` in an `/etc/group` text (`name:password:gid:members` lines).
pub fn gid_in(group_file: &str, name: &str) -> Option<u32> {
    group_file.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.trim().parse().ok()
    })
}

/// The resolv.conf that belongs with a network namespace given by path: the process's own for
/// `/proc/PID/ns/net` (`/proc/PID/root/etc/resolv.conf`, as the pod sees it), `ip netns`'s
/// per-namespace file for `/var/run/netns/NAME` (`/etc/netns/NAME/resolv.conf`) when it
/// exists, else ours (`/etc/resolv.conf`).
pub fn resolv_conf_for(netns: Option<&Path>) -> PathBuf {
    let ours = PathBuf::from("/etc/resolv.conf");
    let Some(ns) = netns else { return ours };
    if let Some(root) = process_root(ns) {
        return root.join("etc/resolv.conf");
    }
    match components(ns).as_slice() {
        ["/", "var", "run", "netns", name] | ["/", "run", "netns", name] => {
            let own = PathBuf::from(format!("/etc/netns/{name}/resolv.conf"));
            if own.exists() {
                own
            } else {
                ours
            }
        }
        _ => ours,
    }
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

/// Whether the calling thread's namespace's first address that is neither loopback nor link
/// local is IPv6: Istio's host IP (`getLocalIP`), which decides whether validation probes over
/// `::6` instead of `127.0.0.6`.
pub fn first_address_is_ipv6() -> bool {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return false;
    };
    for a in addrs {
        let Some(addr) = a.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            let ip = v4.ip();
            if !ip.is_loopback() && !ip.is_link_local() {
                return false;
            }
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            let ip = v6.ip();
            if !ip.is_loopback() && (ip.segments()[0] & 0xffc0) != 0xfe80 {
                return true;
            }
        }
    }
    false
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
    fn the_resolv_conf_of_a_namespace_is_the_one_its_processes_see() {
        let at = |p: &str| resolv_conf_for(Some(Path::new(p)));
        assert_eq!(resolv_conf_for(None), PathBuf::from("/etc/resolv.conf"));
        assert_eq!(
            at("/proc/4242/ns/net"),
            PathBuf::from("/proc/4242/root/etc/resolv.conf")
        );
        // No /etc/netns/NAME/resolv.conf for a made-up name: ours.
        assert_eq!(
            at("/var/run/netns/nftmesh-no-such-ns"),
            PathBuf::from("/etc/resolv.conf")
        );
        assert_eq!(at("/some/bind/mount"), PathBuf::from("/etc/resolv.conf"));
    }

    #[test]
    fn groups_are_found_in_a_group_file_and_a_pods_file_is_its_processs() {
        let text = "root:x:0:\n# comment\nistio-proxy:x:1337:envoy\nbad:x:notanumber:\n";
        assert_eq!(gid_in(text, "istio-proxy"), Some(1337));
        assert_eq!(gid_in(text, "root"), Some(0));
        assert_eq!(gid_in(text, "bad"), None);
        assert_eq!(gid_in(text, "missing"), None);
        assert_eq!(
            group_file_for(Some(Path::new("/proc/77/ns/net"))),
            Some(PathBuf::from("/proc/77/root/etc/group"))
        );
        assert_eq!(group_file_for(Some(Path::new("/var/run/netns/x"))), None);
        assert_eq!(group_file_for(None), None);
    }

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
