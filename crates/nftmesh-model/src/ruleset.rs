//! The typed nf_tables ruleset: tables, base and regular chains, rules and sets.
//!
//! These types mirror the kernel's objects one to one, so the same value can be rendered to
//! `nft` syntax, encoded into a netlink batch, decoded back from a dump and evaluated.

use crate::expr::{Match, Statement};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A whole desired (or dumped) state: the tables nftmesh manages.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ruleset {
    /// Tables in creation order.
    pub tables: Vec<Table>,
}

impl Ruleset {
    /// The table with this family and name, if present.
    pub fn table(&self, family: Family, name: &str) -> Option<&Table> {
        self.tables
            .iter()
            .find(|t| t.family == family && t.name == name)
    }

    /// Total number of rules over all tables and chains.
    pub fn rule_count(&self) -> usize {
        self.tables
            .iter()
            .flat_map(|t| &t.chains)
            .map(|c| c.rules.len())
            .sum()
    }
}

/// An nf_tables address family of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// `ip`: IPv4 only.
    Ip,
    /// `ip6`: IPv6 only.
    Ip6,
    /// `inet`: IPv4 and IPv6.
    Inet,
}

impl Family {
    /// The keyword `nft` uses for this family.
    pub fn keyword(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
        }
    }
}

/// A netfilter hook a base chain attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// Packets arriving, before the routing decision.
    Prerouting,
    /// Packets for a local socket.
    Input,
    /// Packets routed through this host.
    Forward,
    /// Packets sent by a local socket.
    Output,
    /// Packets leaving, after the routing decision.
    Postrouting,
}

impl Hook {
    /// Every hook, in packet-path order.
    pub const ALL: [Hook; 5] = [
        Hook::Prerouting,
        Hook::Input,
        Hook::Forward,
        Hook::Output,
        Hook::Postrouting,
    ];

    /// The keyword `nft` uses for this hook.
    pub fn keyword(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// The type of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainType {
    /// `filter`: plain packet filtering and mangling.
    Filter,
    /// `nat`: seen only by the first packet of a connection; may bind a NAT mapping.
    Nat,
    /// `route`: like filter on output, but a changed mark or address re-routes the packet.
    Route,
}

impl ChainType {
    /// The keyword `nft` uses for this chain type.
    pub fn keyword(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        }
    }
}

/// The verdict of a base chain when its rules end without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Let the packet continue (the default).
    #[default]
    Accept,
    /// Drop the packet.
    Drop,
}

/// Standard priorities (as `nft` and iptables-nft use them).
pub mod priority {
    /// The raw table's priority (`raw`).
    pub const RAW: i32 = -300;
    /// The mangle table's priority (`mangle`).
    pub const MANGLE: i32 = -150;
    /// Destination NAT (`dstnat`).
    pub const DSTNAT: i32 = -100;
    /// The filter table's priority (`filter`).
    pub const FILTER: i32 = 0;
    /// Source NAT (`srcnat`).
    pub const SRCNAT: i32 = 100;
}

/// What makes a chain a base chain: its hook registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BaseChain {
    /// The chain type.
    pub kind: ChainType,
    /// The hook it is attached to.
    pub hook: Hook,
    /// Its priority among base chains of the same hook (lower runs first).
    pub priority: i32,
    /// What happens when its rules end without a verdict.
    pub policy: Policy,
}

/// A chain: a base chain when `base` is set, otherwise a regular chain reached by jump/goto.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// The chain's name, unique within its table.
    pub name: String,
    /// The hook registration of a base chain; `None` for a regular chain.
    pub base: Option<BaseChain>,
    /// Rules in evaluation order.
    pub rules: Vec<Rule>,
}

impl Chain {
    /// A regular chain with no rules.
    pub fn regular(name: impl Into<String>) -> Self {
        Chain {
            name: name.into(),
            base: None,
            rules: Vec::new(),
        }
    }

    /// A base chain with no rules and an accept policy.
    pub fn base(name: impl Into<String>, kind: ChainType, hook: Hook, priority: i32) -> Self {
        Chain {
            name: name.into(),
            base: Some(BaseChain {
                kind,
                hook,
                priority,
                policy: Policy::Accept,
            }),
            rules: Vec::new(),
        }
    }
}

/// A rule: every match must hold, then the statements run in order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rule {
    /// Conditions, all of which must hold.
    pub matches: Vec<Match>,
    /// Actions, run in order when all matches hold; a verdict ends the rule.
    pub statements: Vec<Statement>,
    /// An optional comment stored with the rule.
    pub comment: Option<String>,
}

impl Rule {
    /// A rule from its matches and statements, without comment.
    pub fn new(matches: Vec<Match>, statements: Vec<Statement>) -> Self {
        Rule {
            matches,
            statements,
            comment: None,
        }
    }
}

/// The key type of a named set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetKeyType {
    /// IPv4 addresses (`ipv4_addr`).
    Ipv4Addr,
    /// IPv6 addresses (`ipv6_addr`).
    Ipv6Addr,
    /// Transport ports (`inet_service`).
    InetService,
    /// Interface names (`ifname`).
    Ifname,
    /// Socket owner uids (`uid`).
    Uid,
    /// Socket owner gids (`gid`).
    Gid,
    /// Packet marks (`mark`).
    Mark,
}

impl SetKeyType {
    /// The type name `nft` uses.
    pub fn keyword(self) -> &'static str {
        match self {
            SetKeyType::Ipv4Addr => "ipv4_addr",
            SetKeyType::Ipv6Addr => "ipv6_addr",
            SetKeyType::InetService => "inet_service",
            SetKeyType::Ifname => "ifname",
            SetKeyType::Uid => "uid",
            SetKeyType::Gid => "gid",
            SetKeyType::Mark => "mark",
        }
    }
}

/// One element of a named set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetElement {
    /// An address prefix (interval sets) or a single address (`/32`, `/128`).
    Prefix(IpNet),
    /// An inclusive range of numbers: ports, ids or marks.
    Range(u32, u32),
    /// An interface name.
    Name(String),
}

/// A named set, referenced from rules as `@name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    /// The set's name, unique within its table.
    pub name: String,
    /// The type of its keys.
    pub key_type: SetKeyType,
    /// Whether it holds intervals (prefixes, ranges) rather than single values.
    pub interval: bool,
    /// Its elements.
    pub elements: Vec<SetElement>,
}

/// A table: a namespace of chains and sets in one family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// Address family.
    pub family: Family,
    /// Name, unique within the family.
    pub name: String,
    /// Chains in creation order.
    pub chains: Vec<Chain>,
    /// Named sets.
    pub sets: Vec<Set>,
}

impl Table {
    /// An empty table.
    pub fn new(family: Family, name: impl Into<String>) -> Self {
        Table {
            family,
            name: name.into(),
            chains: Vec::new(),
            sets: Vec::new(),
        }
    }

    /// The chain with this name, if present.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// The named set with this name, if present.
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }
}
