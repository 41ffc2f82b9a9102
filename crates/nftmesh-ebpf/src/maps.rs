//! The BPF maps of `bpf/capture.c`: the Rust twins of the structs in `bpf/capture.h`, and
//! writing [`Settings`] into the maps before the programs are attached.

use crate::capture::Tracked;
use crate::error::EbpfError;
use crate::settings::{Dns, Include, Owners, Settings};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData};
use aya::{Ebpf, Pod};
use ipnet::{Ipv4Net, Ipv6Net};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// `struct capture_config` (index 0 of map `config`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RawConfig {
    pub host_lo_addr: u32,
    pub host_lo_mask: u32,
    pub proxy_port: u16,
    pub include_all: u8,
    pub loopback_included: u8,
    pub owner_groups: u8,
    pub ipv6: u8,
    pub dns: u8,
    pub pad: u8,
    pub dns_port: u16,
    pub pad2: u16,
    pub pad3: u32,
    pub netns_cookie: u64,
}

/// `struct original_dst`: address and port in network order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RawOriginalDst {
    pub addr: u32,
    pub port: u16,
    pub pad: u16,
}

/// `struct v4_tuple`: addresses in network order, ports in host order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RawTuple {
    pub app_addr: u32,
    pub proxy_addr: u32,
    pub app_port: u16,
    pub proxy_port: u16,
}

/// `struct original_dst6`: address and port in network order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RawOriginalDst6 {
    pub addr: [u8; 16],
    pub port: u16,
    pub pad: u16,
}

/// `struct v6_tuple`: addresses in network order, ports in host order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RawTuple6 {
    pub app_addr: [u8; 16],
    pub proxy_addr: [u8; 16],
    pub app_port: u16,
    pub proxy_port: u16,
}

const _: () = assert!(std::mem::size_of::<RawConfig>() == 32);
const _: () = assert!(std::mem::size_of::<RawOriginalDst6>() == 20);
const _: () = assert!(std::mem::size_of::<RawTuple6>() == 36);
const _: () = assert!(std::mem::size_of::<RawOriginalDst>() == 8);
const _: () = assert!(std::mem::size_of::<RawTuple>() == 12);

// SAFETY: the three are `repr(C)` structs of integers laid out with no implicit padding (the
// sizes are asserted above; the C twins spell their padding out too), so every bit pattern is
// a valid value and their bytes can be copied to and from the kernel as they are.
unsafe impl Pod for RawConfig {}
// SAFETY: as above.
unsafe impl Pod for RawOriginalDst {}
// SAFETY: as above.
unsafe impl Pod for RawTuple {}
// SAFETY: as above (byte arrays and integers; sizes asserted).
unsafe impl Pod for RawOriginalDst6 {}
// SAFETY: as above.
unsafe impl Pod for RawTuple6 {}

/// `OWNER_GROUPS_*` of `bpf/capture.h`.
const OWNER_GROUPS_ALL: u8 = 0;
const OWNER_GROUPS_INCLUDE: u8 = 1;
const OWNER_GROUPS_EXCLUDE: u8 = 2;

/// `DNS_*` of `bpf/capture.h`.
const DNS_OFF: u8 = 0;
const DNS_SERVERS: u8 = 1;
const DNS_ALL: u8 = 2;

/// An IPv4 address as the programs hold it: its bytes in network order, read as a native u32.
pub(crate) fn addr_raw(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

impl RawConfig {
    pub(crate) fn from_settings(s: &Settings) -> Self {
        RawConfig {
            host_lo_addr: addr_raw(s.host_loopback.network()),
            host_lo_mask: addr_raw(s.host_loopback.netmask()),
            proxy_port: s.proxy_port,
            include_all: u8::from(s.include == Include::All),
            ipv6: u8::from(s.ipv6),
            loopback_included: u8::from(s.loopback_included),
            owner_groups: match s.owners {
                Owners::All => OWNER_GROUPS_ALL,
                Owners::Include(_) => OWNER_GROUPS_INCLUDE,
                Owners::Exclude(_) => OWNER_GROUPS_EXCLUDE,
            },
            dns: match s.dns {
                Dns::Off => DNS_OFF,
                Dns::Servers(..) => DNS_SERVERS,
                Dns::All => DNS_ALL,
            },
            pad: 0,
            dns_port: s.dns_port,
            pad2: 0,
            pad3: 0,
            netns_cookie: s.netns_cookie,
        }
    }
}

fn map_mut<'a>(bpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Map, EbpfError> {
    bpf.map_mut(name)
        .ok_or(EbpfError::Missing { kind: "map", name })
}

fn map<'a>(bpf: &'a Ebpf, name: &'static str) -> Result<&'a Map, EbpfError> {
    bpf.map(name)
        .ok_or(EbpfError::Missing { kind: "map", name })
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> EbpfError {
    move |source| EbpfError::Map { map, source }
}

/// Put `values` into the set `name` (a hash map whose values are unused).
fn fill_set<K: Pod>(
    bpf: &mut Ebpf,
    name: &'static str,
    values: impl Iterator<Item = K>,
) -> Result<(), EbpfError> {
    let mut set: HashMap<&mut MapData, K, u8> =
        HashMap::try_from(map_mut(bpf, name)?).map_err(map_err(name))?;
    for v in values {
        set.insert(v, 1, 0).map_err(map_err(name))?;
    }
    Ok(())
}

/// Put the IPv6 `nets` into the LPM trie `name`.
fn fill_cidrs6(bpf: &mut Ebpf, name: &'static str, nets: &[Ipv6Net]) -> Result<(), EbpfError> {
    let mut trie: LpmTrie<&mut MapData, [u8; 16], u8> =
        LpmTrie::try_from(map_mut(bpf, name)?).map_err(map_err(name))?;
    for n in nets {
        let key = Key::new(u32::from(n.prefix_len()), n.network().octets());
        trie.insert(&key, 1, 0).map_err(map_err(name))?;
    }
    Ok(())
}

/// Put `nets` into the LPM trie `name`.
fn fill_cidrs(bpf: &mut Ebpf, name: &'static str, nets: &[Ipv4Net]) -> Result<(), EbpfError> {
    let mut trie: LpmTrie<&mut MapData, u32, u8> =
        LpmTrie::try_from(map_mut(bpf, name)?).map_err(map_err(name))?;
    for n in nets {
        let key = Key::new(u32::from(n.prefix_len()), addr_raw(n.network()));
        trie.insert(&key, 1, 0).map_err(map_err(name))?;
    }
    Ok(())
}

/// The size of each set map for `s`: what it holds, at least one entry (the kernel refuses
/// empty maps). The sizes in `bpf/capture.c` are only placeholders.
pub(crate) fn set_sizes(s: &Settings) -> [(&'static str, u32); 11] {
    let owners = match &s.owners {
        Owners::All => 0,
        Owners::Include(g) | Owners::Exclude(g) => g.len(),
    };
    let (include, include6) = match &s.include {
        Include::All => (0, 0),
        Include::Cidrs(c4, c6) => (c4.len(), c6.len()),
    };
    let (servers, servers6) = match &s.dns {
        Dns::Servers(v4, v6) => (v4.len(), v6.len()),
        Dns::Off | Dns::All => (0, 0),
    };
    let size = |n: usize| u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    [
        ("proxy_uids", size(s.proxy_uids.len())),
        ("proxy_gids", size(s.proxy_gids.len())),
        ("owner_gids", size(owners)),
        ("ports_exclude", size(s.ports_exclude.len())),
        ("ports_include", size(s.ports_include.len())),
        ("cidrs_include", size(include)),
        ("cidrs_exclude", size(s.cidrs_exclude.len())),
        ("cidrs6_include", size(include6)),
        ("cidrs6_exclude", size(s.cidrs6_exclude.len())),
        ("dns_servers", size(servers)),
        ("dns_servers6", size(servers6)),
    ]
}

/// Write `s` into the maps of a freshly loaded object: the sets first, the config (which turns
/// capture on: a zero proxy port captures nothing) last.
pub(crate) fn write(bpf: &mut Ebpf, s: &Settings) -> Result<(), EbpfError> {
    fill_set(bpf, "proxy_uids", s.proxy_uids.iter().copied())?;
    fill_set(bpf, "proxy_gids", s.proxy_gids.iter().copied())?;
    if let Owners::Include(g) | Owners::Exclude(g) = &s.owners {
        fill_set(bpf, "owner_gids", g.iter().copied())?;
    }
    fill_set(bpf, "ports_exclude", s.ports_exclude.iter().copied())?;
    fill_set(bpf, "ports_include", s.ports_include.iter().copied())?;
    if let Include::Cidrs(nets, nets6) = &s.include {
        fill_cidrs(bpf, "cidrs_include", nets)?;
        fill_cidrs6(bpf, "cidrs6_include", nets6)?;
    }
    fill_cidrs(bpf, "cidrs_exclude", &s.cidrs_exclude)?;
    fill_cidrs6(bpf, "cidrs6_exclude", &s.cidrs6_exclude)?;
    if let Dns::Servers(v4, v6) = &s.dns {
        fill_set(bpf, "dns_servers", v4.iter().map(|a| addr_raw(*a)))?;
        fill_set(bpf, "dns_servers6", v6.iter().map(|a| a.octets()))?;
    }
    let mut config: Array<&mut MapData, RawConfig> =
        Array::try_from(map_mut(bpf, "config")?).map_err(map_err("config"))?;
    config
        .set(0, RawConfig::from_settings(s), 0)
        .map_err(map_err("config"))
}

/// The maps of original destinations: pinned with the links, and kept across a replace so
/// that connections redirected before it are still answered. With each, the key and value
/// sizes the programs use.
pub(crate) const STATE_MAPS: [&str; 4] = [
    "orig_by_cookie",
    "orig_by_tuple",
    "orig6_by_cookie",
    "orig6_by_tuple",
];

/// The maps pinned with the links and shared by every generation of programs: the maps of
/// original destinations and the app sockets' original peers (socket storage, for
/// getpeername; not counted: socket storage cannot be iterated by key).
pub(crate) const SHARED_MAPS: [&str; 5] = [
    "orig_by_cookie",
    "orig_by_tuple",
    "orig6_by_cookie",
    "orig6_by_tuple",
    "peer_by_socket",
];

fn state_layout(name: &str) -> (u32, u32) {
    let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let (dst, dst6) = (
        size(std::mem::size_of::<RawOriginalDst>()),
        size(std::mem::size_of::<RawOriginalDst6>()),
    );
    match name {
        "orig_by_cookie" => (size(std::mem::size_of::<u64>()), dst),
        "orig_by_tuple" => (size(std::mem::size_of::<RawTuple>()), dst),
        "orig6_by_cookie" => (size(std::mem::size_of::<u64>()), dst6),
        "orig6_by_tuple" => (size(std::mem::size_of::<RawTuple6>()), dst6),
        // struct original_peer: 16 + 2 + 1 + 1 bytes, keyed by an int (the socket).
        _ => (size(std::mem::size_of::<i32>()), 20),
    }
}

/// Refuse to share maps pinned in `dir` whose layout is not this build's (an install by
/// another version of the programs).
pub(crate) fn check_pinned(dir: &Path) -> Result<(), EbpfError> {
    for name in SHARED_MAPS {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapData::from_pin(&path)
            .and_then(|m| m.info())
            .map_err(map_err(name))?;
        let (key, value) = state_layout(name);
        for (what, found, expected) in [
            ("key size", info.key_size(), key),
            ("value size", info.value_size(), value),
        ] {
            if found != expected {
                return Err(EbpfError::PinnedMapMismatch {
                    path,
                    what,
                    found,
                    expected,
                });
            }
        }
    }
    Ok(())
}

/// How many entries the original-destination maps of a loaded object hold.
pub(crate) fn counts(bpf: &Ebpf) -> Result<Tracked, EbpfError> {
    let maps = STATE_MAPS
        .iter()
        .map(|&name| map(bpf, name))
        .collect::<Result<Vec<_>, _>>()?;
    counts_of(&maps)
}

/// How many entries the original-destination maps pinned in `dir` hold.
pub(crate) fn pinned_counts(dir: &Path) -> Result<Tracked, EbpfError> {
    let maps = STATE_MAPS
        .iter()
        .map(|&name| {
            MapData::from_pin(dir.join(name))
                .map(Map::LruHashMap)
                .map_err(map_err(name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    counts_of(&maps.iter().collect::<Vec<_>>())
}

/// The file descriptors of the original-destination maps of a loaded object, in
/// [`STATE_MAPS`] order, to read them after the object is gone.
pub(crate) fn state_fds(bpf: &Ebpf) -> Result<Vec<OwnedFd>, EbpfError> {
    STATE_MAPS
        .iter()
        .map(|&name| match map(bpf, name)? {
            Map::LruHashMap(data) => data
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|io_error| dup_err(name, io_error)),
            _ => Err(EbpfError::Missing { kind: "map", name }),
        })
        .collect()
}

fn dup_err(name: &'static str, io_error: std::io::Error) -> EbpfError {
    map_err(name)(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
        call: "dup",
        io_error,
    }))
}

/// How many entries the original-destination maps held by `fds` (from [`state_fds`]) hold.
pub(crate) fn counts_by_fd(fds: &[OwnedFd]) -> Result<Tracked, EbpfError> {
    let maps = STATE_MAPS
        .iter()
        .enumerate()
        .map(|(i, &name)| {
            let fd = fds
                .get(i)
                .ok_or(EbpfError::Missing { kind: "map", name })?
                .try_clone()
                .map_err(|e| dup_err(name, e))?;
            MapData::from_fd(fd)
                .map(Map::LruHashMap)
                .map_err(map_err(name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    counts_of(&maps.iter().collect::<Vec<_>>())
}

/// The counts of the maps in [`STATE_MAPS`] order: both families added up.
fn counts_of(maps: &[&Map]) -> Result<Tracked, EbpfError> {
    let [by_cookie, by_tuple, by_cookie6, by_tuple6] = maps else {
        return Err(EbpfError::Missing {
            kind: "map",
            name: "orig6_by_tuple",
        });
    };
    let keys = |m: &Map, name: &'static str| -> Result<usize, EbpfError> {
        let m: HashMap<&MapData, u64, RawOriginalDst> =
            HashMap::try_from(m).map_err(map_err(name))?;
        count(m.keys(), name)
    };
    let tuples = |m: &Map| -> Result<usize, EbpfError> {
        let m: HashMap<&MapData, RawTuple, RawOriginalDst> =
            HashMap::try_from(m).map_err(map_err("orig_by_tuple"))?;
        count(m.keys(), "orig_by_tuple")
    };
    let keys6 = |m: &Map| -> Result<usize, EbpfError> {
        let m: HashMap<&MapData, u64, RawOriginalDst6> =
            HashMap::try_from(m).map_err(map_err("orig6_by_cookie"))?;
        count(m.keys(), "orig6_by_cookie")
    };
    let tuples6 = |m: &Map| -> Result<usize, EbpfError> {
        let m: HashMap<&MapData, RawTuple6, RawOriginalDst6> =
            HashMap::try_from(m).map_err(map_err("orig6_by_tuple"))?;
        count(m.keys(), "orig6_by_tuple")
    };
    Ok(Tracked {
        connecting: keys(by_cookie, "orig_by_cookie")? + keys6(by_cookie6)?,
        established: tuples(by_tuple)? + tuples6(by_tuple6)?,
    })
}

fn count<K: Pod>(
    mut keys: aya::maps::MapKeys<'_, K>,
    name: &'static str,
) -> Result<usize, EbpfError> {
    keys.try_fold(0usize, |n, k| k.map(|_| n + 1))
        .map_err(map_err(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftmesh_model::config::CaptureConfig;

    #[test]
    fn config_bytes_as_the_programs_read_them() {
        let s = Settings::from_config(&CaptureConfig::sidecar()).unwrap();
        let raw = RawConfig::from_settings(&s);
        // 127.0.0.1 is the bytes 7f 00 00 01 in memory, whatever the host's byte order.
        assert_eq!(raw.host_lo_addr.to_ne_bytes(), [127, 0, 0, 1]);
        assert_eq!(raw.host_lo_mask.to_ne_bytes(), [255, 255, 255, 255]);
        assert_eq!(raw.proxy_port, 15001);
        assert_eq!((raw.include_all, raw.loopback_included), (1, 0));
        assert_eq!(raw.owner_groups, OWNER_GROUPS_ALL);
        assert_eq!((raw.dns, raw.dns_port), (DNS_OFF, 15053));
        assert_eq!(
            Ipv4Addr::from(raw.host_lo_addr.to_ne_bytes()),
            Ipv4Addr::LOCALHOST
        );
    }
}
