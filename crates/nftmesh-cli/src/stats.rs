//! `nftmesh stats`: the packet and byte counters of nftmesh's live tables, summed into what an
//! operator asks (captured outbound, inbound, DNS; passthrough by reason) and listed per rule.

use crate::error::CliError;
use nftmesh_model::stats::{Reason, Stats};
use std::path::PathBuf;

/// `nftmesh stats`: where, and in which format.
#[derive(clap::Args)]
pub struct StatsArgs {
    /// Network namespace to read (`/proc/PID/ns/net`, `/var/run/netns/NAME`); default: ours.
    #[arg(long, value_name = "PATH", env = "NETWORK_NAMESPACE")]
    network_namespace: Option<PathBuf>,
    /// Print one JSON object: `totals` (by reason) and `rules` (each with table, chain, index,
    /// rule, reason, packets, bytes).
    #[arg(long, conflicts_with = "prometheus")]
    json: bool,
    /// Print Prometheus' text exposition format.
    #[arg(long)]
    prometheus: bool,
}

/// Run `nftmesh stats`.
pub fn run(args: &StatsArgs) -> Result<(), CliError> {
    let ns = nftmesh::Namespace::open_or_current(args.network_namespace.as_deref())?;
    let stats = ns.stats()?;
    ns.close_after_exit();
    let out = if args.json {
        format!("{}\n", json(&stats))
    } else if args.prometheus {
        stats.prometheus()
    } else {
        text(&stats)
    };
    crate::stdout::write_stdout(out.as_bytes())
}

/// The JSON object: totals by reason label, and the rules.
pub fn json(stats: &Stats) -> serde_json::Value {
    let totals: serde_json::Map<String, serde_json::Value> = stats
        .totals()
        .into_iter()
        .map(|(r, c)| {
            let v = serde_json::json!({ "packets": c.packets, "bytes": c.bytes });
            (r.label().to_string(), v)
        })
        .collect();
    serde_json::json!({ "totals": totals, "rules": stats.rules })
}

/// The text report: the totals with something counted (captures always), then every rule;
/// each part under a line of column headers.
pub fn text(stats: &Stats) -> String {
    let mut out = String::new();
    if stats.rules.is_empty() {
        out.push_str("no nftmesh table in this namespace\n");
        return out;
    }
    out.push_str(&format!(
        "{:<34} {:>12} {:>14}\n",
        "TOTAL BY REASON", "PACKETS", "BYTES"
    ));
    for (reason, c) in stats.totals() {
        let capture = matches!(
            reason,
            Reason::CapturedOutbound | Reason::CapturedInbound | Reason::CapturedDns
        );
        if c.packets == 0 && !capture {
            continue;
        }
        out.push_str(&format!(
            "{:<34} {:>12} {:>14}\n",
            reason.describe(),
            c.packets,
            c.bytes
        ));
    }
    out.push_str(&format!(
        "\n{:>10} {:>12}  FAMILY TABLE CHAIN #INDEX  [REASON]  RULE\n",
        "PACKETS", "BYTES"
    ));
    for r in &stats.rules {
        out.push_str(&format!(
            "{:>10} {:>12}  {} {} {} #{}  [{}]  {}\n",
            r.counter.packets,
            r.counter.bytes,
            r.place.family.keyword(),
            r.place.table,
            r.place.chain,
            r.place.index,
            r.reason.label(),
            r.rule
        ));
    }
    out
}
