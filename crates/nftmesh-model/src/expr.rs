//! Matches and statements: the closed set of nf_tables expressions nftmesh uses.
//!
//! Every variant renders (see [`crate::render`](mod@crate::render)), evaluates (see [`crate::eval`](mod@crate::eval)) and, in
//! `nftmesh-netlink`, encodes and decodes. Negation is explicit in each match.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// An IP version, as used by `ip`/`ip6` matches and `meta nfproto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpVersion {
    /// The version of an address.
    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => IpVersion::V4,
            IpAddr::V6(_) => IpVersion::V6,
        }
    }

    /// The version of a prefix.
    pub fn of_net(net: &IpNet) -> Self {
        Self::of(net.addr())
    }
}

/// A layer-4 protocol number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L4Proto {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1).
    Icmp,
    /// ICMPv6 (58).
    Icmpv6,
    /// Any other protocol number.
    Other(u8),
}

impl L4Proto {
    /// The IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            L4Proto::Tcp => 6,
            L4Proto::Udp => 17,
            L4Proto::Icmp => 1,
            L4Proto::Icmpv6 => 58,
            L4Proto::Other(n) => n,
        }
    }

    /// The protocol for an IANA number.
    pub fn from_number(n: u8) -> Self {
        match n {
            6 => L4Proto::Tcp,
            17 => L4Proto::Udp,
            1 => L4Proto::Icmp,
            58 => L4Proto::Icmpv6,
            n => L4Proto::Other(n),
        }
    }
}

/// Source or destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The source address or port.
    Src,
    /// The destination address or port.
    Dst,
}

/// The right-hand side of a match: one value, an anonymous set or a named set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Values<T> {
    /// A single value (or prefix, or range).
    One(T),
    /// An anonymous set, rendered `{ a, b }`.
    Set(Vec<T>),
    /// A named set of the same table, rendered `@name`.
    Named(String),
}

impl<T> Values<T> {
    /// One value when the list has one element, an anonymous set otherwise.
    ///
    /// Returns `None` for an empty list (an empty anonymous set matches nothing and is rarely
    /// what a caller means).
    pub fn from_list(mut list: Vec<T>) -> Option<Self> {
        match list.len() {
            0 => None,
            1 => list.pop().map(Values::One),
            _ => Some(Values::Set(list)),
        }
    }
}

/// An inclusive port range; a single port has `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    /// The first port of the range.
    pub first: u16,
    /// The last port of the range (inclusive).
    pub last: u16,
}

impl PortRange {
    /// A single port.
    pub fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }

    /// Whether `port` lies in the range.
    pub fn contains(self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// A socket owner (uid or gid): an id, an id range, or a name the kernel never sees.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// A numeric id.
    Id(u32),
    /// An inclusive range of ids.
    Range(u32, u32),
    /// An unresolved user or group name, passed through to `nft` text as is. The evaluator
    /// treats it as matching no id; the netlink encoder refuses it.
    Name(String),
}

impl Owner {
    /// Whether the numeric id `id` is this owner.
    pub fn contains(&self, id: u32) -> bool {
        match self {
            Owner::Id(x) => *x == id,
            Owner::Range(a, b) => *a <= id && id <= *b,
            Owner::Name(_) => false,
        }
    }
}

/// Conntrack states, as a bit set (`ct state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct CtStates(pub u8);

impl CtStates {
    /// `invalid`.
    pub const INVALID: CtStates = CtStates(1);
    /// `established`.
    pub const ESTABLISHED: CtStates = CtStates(2);
    /// `related`.
    pub const RELATED: CtStates = CtStates(4);
    /// `new`.
    pub const NEW: CtStates = CtStates(8);
    /// `untracked`.
    pub const UNTRACKED: CtStates = CtStates(64);
    /// Every state with its `nft` keyword, in the order `nft` lists them.
    pub const NAMES: [(CtStates, &'static str); 5] = [
        (CtStates::INVALID, "invalid"),
        (CtStates::ESTABLISHED, "established"),
        (CtStates::RELATED, "related"),
        (CtStates::NEW, "new"),
        (CtStates::UNTRACKED, "untracked"),
    ];

    /// The union of two state sets.
    pub fn union(self, other: CtStates) -> CtStates {
        CtStates(self.0 | other.0)
    }

    /// Whether the two sets share a state.
    pub fn intersects(self, other: CtStates) -> bool {
        self.0 & other.0 != 0
    }
}

/// A condition of a rule. All matches of a rule must hold for its statements to run.
///
/// Matches on a protocol header carry their implicit dependency: `Addr` with `V4` only holds
/// for IPv4 packets (negated or not), `Port` only for packets of its protocol, exactly as `nft`
/// adds `meta nfproto` and `meta l4proto` dependencies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// `meta nfproto ipv4|ipv6`: the packet's IP version.
    Nfproto {
        /// The version required.
        version: IpVersion,
    },
    /// `meta l4proto tcp` (or `!= tcp`).
    L4Proto {
        /// Whether the match is negated.
        negate: bool,
        /// The protocol.
        proto: L4Proto,
    },
    /// `ip saddr 10.0.0.0/8`, `ip6 daddr != { ... }`.
    Addr {
        /// Source or destination.
        dir: Direction,
        /// `ip` (V4) or `ip6` (V6); values must be of this version.
        version: IpVersion,
        /// Whether the match is negated.
        negate: bool,
        /// The prefixes.
        values: Values<IpNet>,
    },
    /// `tcp dport 15008`, `udp sport != { 53, 5353 }`.
    Port {
        /// Source or destination.
        dir: Direction,
        /// `tcp` or `udp`.
        proto: L4Proto,
        /// Whether the match is negated.
        negate: bool,
        /// The ports or ranges.
        values: Values<PortRange>,
    },
    /// `iifname "eth0"`: the input interface name.
    Iifname {
        /// Whether the match is negated.
        negate: bool,
        /// The names.
        values: Values<String>,
    },
    /// `oifname "lo"`: the output interface name.
    Oifname {
        /// Whether the match is negated.
        negate: bool,
        /// The names.
        values: Values<String>,
    },
    /// `meta skuid 1337`: the uid owning the sending socket. Never holds without a socket.
    SkUid {
        /// Whether the match is negated.
        negate: bool,
        /// The owners.
        values: Values<Owner>,
    },
    /// `meta skgid 1337`: the gid owning the sending socket. Never holds without a socket.
    SkGid {
        /// Whether the match is negated.
        negate: bool,
        /// The owners.
        values: Values<Owner>,
    },
    /// `meta mark and MASK == VALUE` (`meta mark VALUE` when the mask is all ones).
    Mark {
        /// Whether the match is negated.
        negate: bool,
        /// The bits compared.
        mask: u32,
        /// The value they must have.
        value: u32,
    },
    /// `ct mark and MASK == VALUE`.
    CtMark {
        /// Whether the match is negated.
        negate: bool,
        /// The bits compared.
        mask: u32,
        /// The value they must have.
        value: u32,
    },
    /// `ct state established,related`.
    CtState {
        /// Whether the match is negated.
        negate: bool,
        /// The states, any of which matches.
        states: CtStates,
    },
    /// `socket transparent 1`: a transparent socket exists for the packet.
    SocketTransparent,
}

/// What a mark statement writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkValue {
    /// A constant.
    Value(u32),
    /// `(old & and) ^ xor` on the value being set (iptables' `--set-xmark`).
    Bitwise {
        /// Bits kept from the old value.
        and: u32,
        /// Bits flipped afterwards.
        xor: u32,
    },
    /// The packet mark (`ct mark set meta mark`).
    FromMark,
    /// The connection mark (`meta mark set ct mark`).
    FromCtMark,
}

/// The verdict part of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// End this base chain's traversal; the packet goes on to the next base chain.
    Accept,
    /// Drop the packet.
    Drop,
    /// Return to the calling chain (or apply the base chain's policy).
    Return,
    /// Call a regular chain; its end returns here.
    Jump(String),
    /// Continue in a regular chain; its end returns to this chain's caller.
    Goto(String),
}

/// An action of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Statement {
    /// `counter`: count packets and bytes.
    Counter,
    /// `log prefix "..."`: log the packet.
    Log {
        /// The log prefix.
        prefix: Option<String>,
    },
    /// `meta mark set ...`.
    MarkSet(MarkValue),
    /// `ct mark set ...`.
    CtMarkSet(MarkValue),
    /// `ct zone set N`: put the connection in a conntrack zone (raw table only).
    CtZoneSet(u16),
    /// `redirect to :PORT`: NAT to a local port (nat chains only). Accepts the packet.
    Redirect {
        /// The port; `None` keeps the destination port.
        port: Option<u16>,
    },
    /// `tproxy ip to ADDR:PORT`: hand the packet to a local transparent socket.
    Tproxy {
        /// `ip`/`ip6` for `inet` tables; `None` in `ip`/`ip6` tables.
        version: Option<IpVersion>,
        /// The address of the listener; `None` keeps the destination address.
        addr: Option<IpAddr>,
        /// The port of the listener; `None` keeps the destination port.
        port: Option<u16>,
    },
    /// `snat ip to ADDR`: NAT the connection's source to `addr` (nat postrouting chains).
    /// Accepts the packet.
    Snat {
        /// `ip`/`ip6` for `inet` tables; `None` in `ip`/`ip6` tables (the table decides).
        version: Option<IpVersion>,
        /// The new source address.
        addr: IpAddr,
    },
    /// A verdict; ends the rule.
    Verdict(Verdict),
}
