//! Taking over from Istio's iptables rules: find what `istio-iptables` left in the iptables-nft
//! tables (`ip`/`ip6` `nat`, `mangle`, `raw`) and delete it in the same transaction that
//! installs nftmesh's tables ([`apply_migrating`], and [`crate::Namespace::install`] with
//! [`crate::Migration`]), so at no instant are both captures active, or neither.
//!
//! What is removed: every chain whose name starts with `ISTIO_` (flushed, then deleted) and
//! every rule of those tables that jumps or goes to one. Rules Istio writes straight into
//! built-in chains without a jump (TPROXY mode's `CONNMARK`/`MARK` rules in mangle, `RETURN`
//! for excluded interfaces) are not recognized and stay; [`IptablesCapture::leftover_rules`]
//! counts the rules left in those tables so a caller can report them.
//!
//! iptables-legacy is a separate kernel subsystem that no nf_tables transaction can change:
//! [`legacy_tables`] tells whether it holds tables in the current thread's namespace.

use nftmesh_model::ruleset::{Family, Ruleset};
use nftmesh_netlink::{ApplyReport, Connection, NetlinkError, Removal};

/// The iptables-nft tables Istio writes.
pub const TABLES: [&str; 3] = ["nat", "mangle", "raw"];

/// The prefix of Istio's chain names.
pub const CHAIN_PREFIX: &str = "ISTIO_";

/// What Istio's iptables capture left in the iptables-nft tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IptablesCapture {
    /// The deletions, in the order they must run: jump rules, then chain flushes, then chains.
    pub removals: Vec<Removal>,
    /// Rules of those tables outside `ISTIO_*` chains that do not jump to one (left in place).
    pub leftover_rules: usize,
}

impl IptablesCapture {
    /// Whether nothing of Istio's was found.
    pub fn is_empty(&self) -> bool {
        self.removals.is_empty()
    }
}

/// Find Istio's chains and the rules jumping to them in the iptables-nft tables `conn` sees.
pub fn find_istio_iptables(conn: &mut Connection) -> Result<IptablesCapture, NetlinkError> {
    let live = conn.tables()?;
    let mut jumps = Vec::new();
    let mut flushes = Vec::new();
    let mut chains = Vec::new();
    let mut leftover_rules = 0;
    for family in [Family::Ip, Family::Ip6] {
        for table in TABLES {
            if !live.iter().any(|t| t.family == family && t.name == table) {
                continue;
            }
            for c in conn.chains(family, table)? {
                if c.name.starts_with(CHAIN_PREFIX) {
                    flushes.push(Removal::FlushChain {
                        family,
                        table: table.into(),
                        chain: c.name.clone(),
                    });
                    chains.push(Removal::Chain {
                        family,
                        table: table.into(),
                        chain: c.name,
                    });
                }
            }
            for rule in conn.rule_jumps(family, table)? {
                if rule.chain.starts_with(CHAIN_PREFIX) {
                    continue;
                }
                if !rule.targets.iter().any(|t| t.starts_with(CHAIN_PREFIX)) {
                    leftover_rules += 1;
                    continue;
                }
                let handle = rule.handle.ok_or_else(|| NetlinkError::Malformed {
                    during: "reading iptables-nft rules",
                    what: format!("rule in {table} {} without a handle", rule.chain),
                })?;
                jumps.push(Removal::Rule {
                    family,
                    table: table.into(),
                    chain: rule.chain,
                    handle,
                });
            }
        }
    }
    let mut removals = jumps;
    removals.extend(flushes);
    removals.extend(chains);
    Ok(IptablesCapture {
        removals,
        leftover_rules,
    })
}

/// Install `ruleset` through `conn` and delete Istio's iptables-nft capture in ONE
/// transaction. Returns the report and what was removed.
pub fn apply_migrating(
    conn: &mut Connection,
    ruleset: &Ruleset,
) -> Result<(ApplyReport, IptablesCapture), NetlinkError> {
    let mut found = IptablesCapture::default();
    let report = conn.apply_removing(ruleset, |conn, _| {
        found = find_istio_iptables(conn)?;
        Ok(found.removals.clone())
    })?;
    Ok((report, found))
}

/// The iptables-legacy tables (`ip_tables` and `ip6_tables`) of the calling thread's network
/// namespace, as `ip nat`, `ip6 mangle`, ...: iptables-legacy's rules live there, out of reach
/// of nf_tables transactions. Reads `/proc/thread-self/net/ip{,6}_tables_names` (absent when the
/// legacy modules are not loaded: no tables).
pub fn legacy_tables() -> Vec<String> {
    let mut out = Vec::new();
    for (fam, file) in [("ip", "ip_tables_names"), ("ip6", "ip6_tables_names")] {
        let path = format!("/proc/thread-self/net/{file}");
        if let Ok(text) = std::fs::read_to_string(path) {
            out.extend(text.split_whitespace().map(|t| format!("{fam} {t}")));
        }
    }
    out
}
