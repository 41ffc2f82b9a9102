//! `nftmesh explain`: one described packet through the capture the flags compile to, or through
//! the live tables of a namespace; prints every chain it entered, every rule that matched and
//! the outcome in the mesh's words (or one JSON object with `--json`).

use crate::capture_args::CaptureArgs;
use crate::error::CliError;
use crate::packet_args::{MetaArgs, ProtoArg};
use nftmesh_model::eval::{eval_traced, FinalVerdict, Outcome, Packet, Step, Traced};
use nftmesh_model::expr::{CtStates, IpVersion, L4Proto};
use nftmesh_model::{Hook, Ruleset};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// `nftmesh explain`: the packet, and what to explain it against.
#[derive(clap::Args)]
#[command(
    override_usage = "nftmesh explain [CAPTURE FLAGS | --live] --dst ADDR:PORT \
    [--direction inbound|outbound | --hook HOOK] [PACKET OPTIONS] [--json]"
)]
pub struct ExplainArgs {
    #[command(flatten)]
    capture: CaptureArgs,
    /// Explain against the namespace's live nftmesh tables (dumped and decoded), not against
    /// the capture the flags compile to.
    #[arg(long)]
    live: bool,
    /// Network namespace of `--live` (and of the flags' IPv6 and DNS detection).
    #[arg(long, value_name = "PATH", env = "NETWORK_NAMESPACE")]
    network_namespace: Option<PathBuf>,
    #[command(flatten)]
    packet: PacketArgs,
    /// Print one JSON object: outcome, port, captured, summary, trail (matched rules) and steps.
    #[arg(long)]
    json: bool,
}

/// The packet to explain.
#[derive(clap::Args)]
pub struct PacketArgs {
    /// The hook the packet is seen at.
    #[arg(long, value_enum, conflicts_with = "direction")]
    hook: Option<HookArg>,
    /// outbound: sent by a local socket (the output hook); inbound: arriving from the network
    /// (the prerouting hook). Default: outbound with --uid, else inbound (said on stderr).
    #[arg(long, value_enum)]
    direction: Option<DirectionArg>,
    /// The transport protocol.
    #[arg(long, value_enum, default_value = "tcp")]
    proto: ProtoArg,
    /// Source address and optional port (default: 192.0.2.1 or 2001:db8::1, port 40000).
    #[arg(long, value_name = "ADDR[:PORT]")]
    src: Option<String>,
    /// Destination address and port.
    #[arg(long, value_name = "ADDR:PORT")]
    dst: SocketAddr,
    #[command(flatten)]
    meta: MetaArgs,
    /// The conntrack state.
    #[arg(long, value_enum, default_value = "new")]
    ct_state: CtStateArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum HookArg {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DirectionArg {
    Inbound,
    Outbound,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CtStateArg {
    New,
    Established,
    Related,
    Invalid,
    Untracked,
}

impl PacketArgs {
    /// The direction assumed when neither `--direction` nor `--hook` is given, in words for
    /// stderr; `None` when one was given.
    fn assumed(&self) -> Option<&'static str> {
        match (self.hook, self.direction, self.meta.uid) {
            (None, None, Some(_)) => Some("outbound (the output hook), since --uid is given"),
            (None, None, None) => Some("inbound (the prerouting hook), since no --uid is given"),
            _ => None,
        }
    }

    fn build(&self) -> Result<(Hook, Packet), CliError> {
        let hook = match (self.hook, self.direction) {
            (Some(h), _) => match h {
                HookArg::Prerouting => Hook::Prerouting,
                HookArg::Input => Hook::Input,
                HookArg::Forward => Hook::Forward,
                HookArg::Output => Hook::Output,
                HookArg::Postrouting => Hook::Postrouting,
            },
            (None, Some(DirectionArg::Outbound)) => Hook::Output,
            (None, Some(DirectionArg::Inbound)) => Hook::Prerouting,
            (None, None) if self.meta.uid.is_some() => Hook::Output,
            (None, None) => Hook::Prerouting,
        };
        let local = matches!(hook, Hook::Output | Hook::Postrouting);
        if local && self.meta.uid.is_none() && self.direction.is_some() {
            return Err(CliError::Config(
                "--direction outbound needs --uid (the sending socket's owner)".into(),
            ));
        }
        let v6 = self.dst.is_ipv6();
        let (saddr, sport) = match &self.src {
            None => {
                let a: IpAddr = if v6 {
                    "2001:db8::1".parse().expect("address")
                } else {
                    "192.0.2.1".parse().expect("address")
                };
                (a, 40000)
            }
            Some(s) => match s.parse::<SocketAddr>() {
                Ok(sa) => (sa.ip(), sa.port()),
                Err(_) => (
                    s.parse::<IpAddr>().map_err(|_| {
                        CliError::Config(format!("--src: not an address or ADDR:PORT: {s}"))
                    })?,
                    40000,
                ),
            },
        };
        if IpVersion::of(saddr) != IpVersion::of(self.dst.ip()) {
            return Err(CliError::Config(format!(
                "--src {saddr} and --dst {} are of different IP versions",
                self.dst
            )));
        }
        let default_if = |given: &Option<String>, wanted: bool| {
            given
                .clone()
                .unwrap_or_else(|| if wanted { "eth0".into() } else { String::new() })
        };
        let packet = Packet {
            l4proto: self.proto.into(),
            saddr,
            daddr: self.dst.ip(),
            sport,
            dport: self.dst.port(),
            iif: default_if(&self.meta.iif, !local),
            oif: default_if(&self.meta.oif, local || hook == Hook::Forward),
            skuid: self.meta.uid,
            skgid: self.meta.gid.or(self.meta.uid),
            mark: self.meta.mark.unwrap_or(0),
            ct_state: match self.ct_state {
                CtStateArg::New => CtStates::NEW,
                CtStateArg::Established => CtStates::ESTABLISHED,
                CtStateArg::Related => CtStates::RELATED,
                CtStateArg::Invalid => CtStates::INVALID,
                CtStateArg::Untracked => CtStates::UNTRACKED,
            },
            ct_mark: 0,
            socket_transparent: false,
        };
        Ok((hook, packet))
    }
}

/// The outcome in one word (`redirect`, `tproxy`, `snat`, `accept`, `drop`) and the capture
/// port, if any.
fn kind(o: &Outcome) -> (&'static str, Option<u16>) {
    if let Some(p) = o.redirect {
        ("redirect", Some(p))
    } else if let Some(t) = o.tproxy {
        ("tproxy", t.port)
    } else if o.snat.is_some() {
        ("snat", None)
    } else if o.verdict == FinalVerdict::Drop {
        ("drop", None)
    } else {
        ("accept", None)
    }
}

fn matched(trail: &[Step]) -> Vec<(&str, &str, usize, &str)> {
    trail
        .iter()
        .filter_map(|s| match s {
            Step::Rule {
                table,
                chain,
                index,
                rule,
                ..
            } => Some((table.as_str(), chain.as_str(), *index, rule.as_str())),
            _ => None,
        })
        .collect()
}

/// The outcome in the mesh's words.
pub fn summary(t: &Traced, hook: Hook, packet: &Packet) -> String {
    let way = if matches!(hook, Hook::Output | Hook::Postrouting) {
        "outbound"
    } else {
        "inbound"
    };
    let last = matched(&t.trail).last().copied();
    match kind(&t.outcome) {
        ("redirect", Some(p)) => format!("captured {way}: redirect to :{p}"),
        ("tproxy", port) => {
            let port = port.unwrap_or(packet.dport);
            let addr = t.outcome.tproxy.and_then(|x| x.addr);
            match addr {
                Some(a) => format!("captured {way}: tproxy to {}", SocketAddr::new(a, port)),
                None => format!("captured {way}: tproxy to :{port}"),
            }
        }
        ("snat", _) => format!(
            "source NAT to {}",
            t.outcome.snat.map(|a| a.to_string()).unwrap_or_default()
        ),
        (word, _) => {
            let what = if word == "drop" {
                "dropped"
            } else {
                "not captured"
            };
            let verb = |rule: &str| {
                [
                    ("return", "returns"),
                    ("accept", "accepts"),
                    ("drop", "drops"),
                ]
                .into_iter()
                .find(|(v, _)| rule.ends_with(v))
                .map(|(_, says)| says)
            };
            match last {
                Some((_, chain, i, rule)) => match verb(rule) {
                    Some(says) => format!("{what}: {chain} rule {i} {says} ({rule})"),
                    None => format!(
                        "{what}: no rule decided; the chain's policy {}",
                        if word == "drop" { "drops" } else { "accepts" }
                    ),
                },
                None => format!("{what}: no rule matched"),
            }
        }
    }
}

fn describe(hook: Hook, p: &Packet) -> String {
    let proto = match p.l4proto {
        L4Proto::Udp => "udp",
        _ => "tcp",
    };
    let mut s = format!(
        "packet: {proto} {} -> {} at {hook:?}",
        SocketAddr::new(p.saddr, p.sport),
        SocketAddr::new(p.daddr, p.dport)
    )
    .to_lowercase();
    if let Some(u) = p.skuid {
        s.push_str(&format!(" uid {u} gid {}", p.skgid.unwrap_or(u)));
    }
    if !p.iif.is_empty() {
        s.push_str(&format!(" iif {}", p.iif));
    }
    if !p.oif.is_empty() {
        s.push_str(&format!(" oif {}", p.oif));
    }
    if p.mark != 0 {
        s.push_str(&format!(" mark {:#x}", p.mark));
    }
    s
}

/// Run `nftmesh explain`.
pub fn run(args: &ExplainArgs) -> Result<(), CliError> {
    let ns_path = args.network_namespace.as_deref();
    let ruleset: Ruleset = if args.live {
        nftmesh::Namespace::open_or_current(ns_path)?.live()?
    } else {
        let cfg = args.capture.to_config_in(ns_path)?;
        nftmesh::Capture::new(&cfg)?.ruleset().clone()
    };
    show(&ruleset, &args.packet, args.json)
}

/// Explain the packet `args` describe through `ruleset`: the trail and outcome as text, or
/// one JSON object with `json`.
pub fn show(ruleset: &Ruleset, args: &PacketArgs, json: bool) -> Result<(), CliError> {
    let (hook, packet) = args.build()?;
    if let Some(way) = args.assumed() {
        eprintln!(
            "nftmesh: no --direction or --hook: explaining the packet as {way}; pass \
             --direction inbound|outbound to say which"
        );
    }
    let traced = eval_traced(ruleset, &packet, hook)?;
    let summary = summary(&traced, hook, &packet);
    if json {
        let (word, port) = kind(&traced.outcome);
        // A tproxy without a port keeps the packet's destination port.
        let port = port.or((word == "tproxy").then_some(packet.dport));
        let captured = matches!(word, "redirect" | "tproxy");
        let trail: Vec<serde_json::Value> = matched(&traced.trail)
            .into_iter()
            .map(|(table, chain, index, rule)| {
                serde_json::json!({"table": table, "chain": chain, "index": index, "rule": rule})
            })
            .collect();
        let out = serde_json::json!({
            "outcome": word,
            "port": port,
            "captured": captured,
            "summary": summary,
            "trail": trail,
            "steps": traced.trail,
            "result": traced.outcome,
        });
        println!("{out}");
        return Ok(());
    }
    println!("{}", describe(hook, &packet));
    for s in &traced.trail {
        match s {
            Step::Chain {
                family,
                table,
                chain,
            } => println!("chain {} {table} {chain}", family.keyword()),
            Step::NatSkipped {
                family,
                table,
                chain,
            } => println!(
                "chain {} {table} {chain}: skipped (NAT sees a connection's first packet once)",
                family.keyword()
            ),
            Step::Rule { index, rule, .. } => println!("  rule {index}: {rule}"),
            Step::Policy { policy, .. } => println!("  end of chain: policy {policy:?}"),
        }
    }
    println!("outcome: {summary}");
    Ok(())
}
