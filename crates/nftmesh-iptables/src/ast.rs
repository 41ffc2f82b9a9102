//! The faithful syntax tree of iptables-save text: tables, chains, rules, matches and targets,
//! each with the span it came from, and printing back to canonical iptables-save text.

use ipnet::IpNet;
use nftmesh_model::expr::{CtStates, Direction, IpVersion, L4Proto, Owner, PortRange};
use std::fmt::{self, Display, Write as _};
use std::net::IpAddr;

/// A position in the input: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Span {
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1.
    pub col: usize,
}

impl Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.col)
    }
}

/// A value with the span of the token it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The value.
    pub node: T,
    /// Where its first token starts.
    pub span: Span,
}

/// One of the four xtables tables nftmesh reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableName {
    /// `raw`: before connection tracking.
    Raw,
    /// `mangle`: packet alteration.
    Mangle,
    /// `nat`: address translation, first packet of a connection only.
    Nat,
    /// `filter`: the default table.
    Filter,
}

impl TableName {
    /// The name as iptables writes it.
    pub fn keyword(self) -> &'static str {
        match self {
            TableName::Raw => "raw",
            TableName::Mangle => "mangle",
            TableName::Nat => "nat",
            TableName::Filter => "filter",
        }
    }

    /// The table for a name, if it is one of the four.
    pub fn from_keyword(s: &str) -> Option<Self> {
        Some(match s {
            "raw" => TableName::Raw,
            "mangle" => TableName::Mangle,
            "nat" => TableName::Nat,
            "filter" => TableName::Filter,
            _ => return None,
        })
    }

    /// The table's built-in chains, in the order iptables-save lists them.
    pub fn builtin_chains(self) -> &'static [&'static str] {
        match self {
            TableName::Raw => &["PREROUTING", "OUTPUT"],
            TableName::Mangle => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
            TableName::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
            TableName::Filter => &["INPUT", "FORWARD", "OUTPUT"],
        }
    }
}

/// The policy of a built-in chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainPolicy {
    /// `ACCEPT`.
    Accept,
    /// `DROP`.
    Drop,
}

/// A parsed iptables ruleset of one family: the final state of every table the input wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptRuleset {
    /// IPv4 (`iptables`) or IPv6 (`ip6tables`).
    pub family: IpVersion,
    /// Tables in the order the input first committed them.
    pub tables: Vec<IptTable>,
}

impl IptRuleset {
    /// The table with this name, if the input wrote it.
    pub fn table(&self, name: TableName) -> Option<&IptTable> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Total number of rules.
    pub fn rule_count(&self) -> usize {
        self.tables
            .iter()
            .flat_map(|t| &t.chains)
            .map(|c| c.rules.len())
            .sum()
    }

    /// Replace owner names (`--uid-owner envoy`) by ids, as iptables does when it parses them.
    ///
    /// `users` and `groups` map a name to its id; a name they do not know is left as it is and
    /// returned, so the caller can report it.
    pub fn resolve_owners(
        &mut self,
        users: &dyn Fn(&str) -> Option<u32>,
        groups: &dyn Fn(&str) -> Option<u32>,
    ) -> Vec<String> {
        let mut unknown = Vec::new();
        for rule in self
            .tables
            .iter_mut()
            .flat_map(|t| t.chains.iter_mut())
            .flat_map(|c| c.rules.iter_mut())
        {
            for m in &mut rule.matches {
                if let IptMatch::Owner { kind, owner, .. } = &mut m.node {
                    if let Owner::Name(n) = owner {
                        let db = match kind {
                            OwnerKind::Uid => users,
                            OwnerKind::Gid => groups,
                        };
                        match db(n) {
                            Some(id) => *owner = Owner::Id(id),
                            None => unknown.push(n.clone()),
                        }
                    }
                }
            }
        }
        unknown
    }
}

/// One table: its built-in and user chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptTable {
    /// Which table.
    pub name: TableName,
    /// Built-in chains first (in iptables-save order), then user chains in creation order.
    pub chains: Vec<IptChain>,
}

impl IptTable {
    /// The chain with this name.
    pub fn chain(&self, name: &str) -> Option<&IptChain> {
        self.chains.iter().find(|c| c.name == name)
    }
}

/// A chain: built-in (with a policy) or user-defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptChain {
    /// The chain's name.
    pub name: String,
    /// The policy of a built-in chain; `None` for a user chain.
    pub policy: Option<ChainPolicy>,
    /// Rules in order.
    pub rules: Vec<IptRule>,
}

/// One rule: matches (all must hold) and an optional target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptRule {
    /// Where the rule's command (`-A`, `-I`) starts.
    pub span: Span,
    /// Matches in the order they were written.
    pub matches: Vec<Spanned<IptMatch>>,
    /// The target (`-j`/`-g`); a rule without one only counts.
    pub target: Option<Spanned<Target>>,
}

/// Whether an owner match is on the uid or the gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnerKind {
    /// `--uid-owner`.
    Uid,
    /// `--gid-owner`.
    Gid,
}

/// Which match module carries a port match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortModule {
    /// The `tcp` or `udp` match, loaded by `-p` or `-m tcp`/`-m udp`: one port or range.
    Proto,
    /// `-m multiport --dports/--sports`: up to 15 ports or ranges.
    Multiport,
}

/// One match of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IptMatch {
    /// `-p PROTO`.
    Protocol {
        /// `! -p`.
        negate: bool,
        /// The protocol.
        proto: L4Proto,
    },
    /// `-s NET` / `-d NET`.
    Addr {
        /// `-s` is the source, `-d` the destination.
        dir: Direction,
        /// `! -s`.
        negate: bool,
        /// The prefix (of the ruleset's family).
        net: IpNet,
    },
    /// `-i NAME` (input) or `-o NAME` (output); a trailing `+` matches every name with that
    /// prefix.
    Interface {
        /// `true` for `-i`, `false` for `-o`.
        input: bool,
        /// `! -i`.
        negate: bool,
        /// The name as written, with its `+` if any.
        name: String,
    },
    /// `--dport`/`--sport` (tcp, udp) or `-m multiport --dports/--sports`.
    Port {
        /// The module the option belongs to.
        module: PortModule,
        /// The protocol of the rule's `-p` (tcp or udp).
        proto: L4Proto,
        /// Source or destination port.
        dir: Direction,
        /// `! --dport`.
        negate: bool,
        /// The ports and ranges.
        ports: Vec<PortRange>,
    },
    /// `-m owner --uid-owner X` / `--gid-owner X`.
    Owner {
        /// uid or gid.
        kind: OwnerKind,
        /// `! --uid-owner`.
        negate: bool,
        /// The id, range or name.
        owner: Owner,
    },
    /// `-m mark --mark V[/M]`.
    Mark {
        /// `! --mark`.
        negate: bool,
        /// The value.
        value: u32,
        /// The mask.
        mask: u32,
    },
    /// `-m connmark --mark V[/M]`.
    Connmark {
        /// `! --mark`.
        negate: bool,
        /// The value.
        value: u32,
        /// The mask.
        mask: u32,
    },
    /// `-m conntrack --ctstate S,...` (or `-m state --state S,...`).
    CtState {
        /// `! --ctstate`.
        negate: bool,
        /// The states, any of which matches.
        states: CtStates,
    },
    /// `-m socket --transparent`: a transparent socket exists for the packet.
    SocketTransparent,
    /// `-m owner --socket-exists`: the packet has a local (full) socket.
    SocketExists {
        /// `! --socket-exists`.
        negate: bool,
    },
    /// `-m set --match-set NAME src|dst`: the packet's source or destination address is in the
    /// ipset NAME (a one-dimensional address set; its contents live outside the ruleset).
    IpSet {
        /// Which address is looked up.
        dir: Direction,
        /// `! --match-set`.
        negate: bool,
        /// The set's name.
        name: String,
    },
    /// `-m comment --comment TEXT`.
    Comment(String),
}

/// A target: what a rule does when its matches hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `-j ACCEPT`.
    Accept,
    /// `-j DROP`.
    Drop,
    /// `-j RETURN`.
    Return,
    /// `-j CHAIN`: call a user chain.
    Jump(String),
    /// `-g CHAIN`: continue in a user chain; its end returns to this chain's caller.
    Goto(String),
    /// `-j REDIRECT [--to-ports P]`.
    Redirect {
        /// The port; `None` keeps the destination port.
        to_port: Option<u16>,
    },
    /// `-j TPROXY --on-port P [--on-ip A] [--tproxy-mark V[/M]]`.
    Tproxy {
        /// The listener port; 0 keeps the destination port.
        on_port: u16,
        /// The listener address; `None` keeps the destination address.
        on_ip: Option<IpAddr>,
        /// The mark written as `(mark & !mask) ^ value`: `(value, mask)`.
        mark: Option<(u32, u32)>,
    },
    /// `-j MARK --set-xmark V/M` (and the `--set-mark`, `--and-mark`, `--or-mark`,
    /// `--xor-mark` spellings, normalized): `mark = (mark & !mask) ^ value`.
    Mark {
        /// Bits flipped after clearing.
        value: u32,
        /// Bits cleared first.
        mask: u32,
    },
    /// `-j CONNMARK --save-mark`: the connection mark takes the packet mark.
    ConnmarkSave,
    /// `-j CONNMARK --restore-mark`: the packet mark takes the connection mark.
    ConnmarkRestore,
    /// `-j CONNMARK --set-xmark V/M`: `ctmark = (ctmark & !mask) ^ value`.
    ConnmarkSet {
        /// Bits flipped after clearing.
        value: u32,
        /// Bits cleared first.
        mask: u32,
    },
    /// `-j CT --zone N`.
    CtZone(u16),
    /// `-j LOG [--log-prefix TEXT]`.
    Log {
        /// The prefix.
        prefix: Option<String>,
    },
    /// `-j SNAT --to-source ADDR`: the connection's source becomes ADDR (one address, source
    /// ports kept).
    Snat {
        /// The new source address (of the ruleset's family).
        to: IpAddr,
    },
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c))
    {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

fn neg(n: bool) -> &'static str {
    if n {
        "! "
    } else {
        ""
    }
}

/// The protocol name iptables-save prints.
pub fn proto_name(p: L4Proto) -> String {
    match p {
        L4Proto::Tcp => "tcp".into(),
        L4Proto::Udp => "udp".into(),
        L4Proto::Icmp => "icmp".into(),
        L4Proto::Icmpv6 => "ipv6-icmp".into(),
        L4Proto::Other(n) => n.to_string(),
    }
}

fn owner_text(o: &Owner) -> String {
    match o {
        Owner::Id(x) => x.to_string(),
        Owner::Range(a, b) => format!("{a}-{b}"),
        Owner::Name(n) => n.clone(),
    }
}

fn ports_text(ports: &[PortRange]) -> String {
    ports
        .iter()
        .map(|r| {
            if r.first == r.last {
                r.first.to_string()
            } else {
                format!("{}:{}", r.first, r.last)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The iptables spelling of a set of conntrack states.
pub fn states_text(s: CtStates) -> String {
    const NAMES: [(CtStates, &str); 5] = [
        (CtStates::INVALID, "INVALID"),
        (CtStates::NEW, "NEW"),
        (CtStates::RELATED, "RELATED"),
        (CtStates::ESTABLISHED, "ESTABLISHED"),
        (CtStates::UNTRACKED, "UNTRACKED"),
    ];
    NAMES
        .iter()
        .filter(|(b, _)| s.intersects(*b))
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

impl Display for IptMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IptMatch::Protocol { negate, proto } => {
                write!(f, "{}-p {}", neg(*negate), proto_name(*proto))
            }
            IptMatch::Addr { dir, negate, net } => {
                let o = if *dir == Direction::Src { "-s" } else { "-d" };
                write!(f, "{}{o} {net}", neg(*negate))
            }
            IptMatch::Interface {
                input,
                negate,
                name,
            } => {
                let o = if *input { "-i" } else { "-o" };
                write!(f, "{}{o} {}", neg(*negate), quote(name))
            }
            IptMatch::Port {
                module,
                proto,
                dir,
                negate,
                ports,
            } => {
                let d = if *dir == Direction::Src { "s" } else { "d" };
                match module {
                    PortModule::Proto => write!(
                        f,
                        "-m {} {}--{d}port {}",
                        proto_name(*proto),
                        neg(*negate),
                        ports_text(ports)
                    ),
                    PortModule::Multiport => write!(
                        f,
                        "-m multiport {}--{d}ports {}",
                        neg(*negate),
                        ports_text(ports)
                    ),
                }
            }
            IptMatch::Owner {
                kind,
                negate,
                owner,
            } => {
                let o = if *kind == OwnerKind::Uid {
                    "uid"
                } else {
                    "gid"
                };
                write!(
                    f,
                    "-m owner {}--{o}-owner {}",
                    neg(*negate),
                    owner_text(owner)
                )
            }
            IptMatch::Mark {
                negate,
                value,
                mask,
            } => write!(f, "-m mark {}--mark {value:#x}/{mask:#x}", neg(*negate)),
            IptMatch::Connmark {
                negate,
                value,
                mask,
            } => write!(f, "-m connmark {}--mark {value:#x}/{mask:#x}", neg(*negate)),
            IptMatch::CtState { negate, states } => write!(
                f,
                "-m conntrack {}--ctstate {}",
                neg(*negate),
                states_text(*states)
            ),
            IptMatch::SocketTransparent => write!(f, "-m socket --transparent"),
            IptMatch::SocketExists { negate } => {
                write!(f, "-m owner {}--socket-exists", neg(*negate))
            }
            IptMatch::IpSet { dir, negate, name } => {
                let d = if *dir == Direction::Src { "src" } else { "dst" };
                write!(f, "-m set {}--match-set {} {d}", neg(*negate), quote(name))
            }
            IptMatch::Comment(c) => write!(f, "-m comment --comment {}", quote(c)),
        }
    }
}

impl Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Accept => write!(f, "-j ACCEPT"),
            Target::Drop => write!(f, "-j DROP"),
            Target::Return => write!(f, "-j RETURN"),
            Target::Jump(c) => write!(f, "-j {c}"),
            Target::Goto(c) => write!(f, "-g {c}"),
            Target::Redirect { to_port: None } => write!(f, "-j REDIRECT"),
            Target::Redirect { to_port: Some(p) } => write!(f, "-j REDIRECT --to-ports {p}"),
            Target::Tproxy {
                on_port,
                on_ip,
                mark,
            } => {
                write!(f, "-j TPROXY --on-port {on_port}")?;
                if let Some(ip) = on_ip {
                    write!(f, " --on-ip {ip}")?;
                }
                if let Some((v, m)) = mark {
                    write!(f, " --tproxy-mark {v:#x}/{m:#x}")?;
                }
                Ok(())
            }
            Target::Mark { value, mask } => write!(f, "-j MARK --set-xmark {value:#x}/{mask:#x}"),
            Target::ConnmarkSave => write!(
                f,
                "-j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff"
            ),
            Target::ConnmarkRestore => write!(
                f,
                "-j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff"
            ),
            Target::ConnmarkSet { value, mask } => {
                write!(f, "-j CONNMARK --set-xmark {value:#x}/{mask:#x}")
            }
            Target::CtZone(z) => write!(f, "-j CT --zone {z}"),
            Target::Log { prefix: None } => write!(f, "-j LOG"),
            Target::Log { prefix: Some(p) } => write!(f, "-j LOG --log-prefix {}", quote(p)),
            Target::Snat { to } => write!(f, "-j SNAT --to-source {to}"),
        }
    }
}

impl IptRule {
    /// The rule's options (without `-A CHAIN`) as iptables-save prints them.
    pub fn options(&self) -> String {
        let mut parts: Vec<String> = self.matches.iter().map(|m| m.node.to_string()).collect();
        if let Some(t) = &self.target {
            parts.push(t.node.to_string());
        }
        parts.join(" ")
    }
}

impl Display for IptRuleset {
    /// Canonical iptables-save text: every table, its chain declarations, its rules, `COMMIT`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        for t in &self.tables {
            let _ = writeln!(out, "*{}", t.name.keyword());
            for c in &t.chains {
                let p = match c.policy {
                    Some(ChainPolicy::Accept) => "ACCEPT",
                    Some(ChainPolicy::Drop) => "DROP",
                    None => "-",
                };
                let _ = writeln!(out, ":{} {p} [0:0]", c.name);
            }
            for c in &t.chains {
                for r in &c.rules {
                    let opts = r.options();
                    if opts.is_empty() {
                        let _ = writeln!(out, "-A {}", c.name);
                    } else {
                        let _ = writeln!(out, "-A {} {opts}", c.name);
                    }
                }
            }
            out.push_str("COMMIT\n");
        }
        f.write_str(&out)
    }
}
