//! Live packet tracing in one network namespace: a [`Trace`] marks the packets a
//! [`TraceFilter`] selects for nf_tables' tracing (in a table of its own, deleted by the
//! kernel when the trace's socket closes, see [`nftmesh_netlink::trace`]), and turns each
//! trace event into a [`Step`]: the table, chain and rule index with the rule's nft text
//! (read from a dump of the namespace's tables), the verdict, and the packet.
//!
//! ```no_run
//! use nftmesh::trace::{Trace, TraceFilter};
//! use std::time::Duration;
//!
//! let filter = TraceFilter { uid: Some(1000), ..TraceFilter::default() };
//! let mut trace = Trace::start(Some("/var/run/netns/pod1".as_ref()), &filter, "nftmesh-trace")?;
//! while let Some(step) = trace.next(Duration::from_secs(5))? {
//!     if !step.ours {
//!         println!("{step}");
//!     }
//! }
//! trace.stop()?;
//! # Ok::<(), nftmesh::CaptureError>(())
//! ```

use crate::CaptureError;
use ipnet::IpNet;
use nftmesh_model::expr::{Direction, IpVersion, L4Proto, Match, Owner, PortRange, Values};
use nftmesh_model::render::render_rule;
use nftmesh_model::ruleset::{Family, Hook};
use nftmesh_model::stats::Place;
use nftmesh_netlink::trace::{TraceEvent, TraceKind, Tracer};
use nftmesh_netlink::Connection;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// Which packets to trace. Every field given must hold; none given traces every packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceFilter {
    /// The transport protocol (required with a port).
    pub proto: Option<L4Proto>,
    /// Source address range.
    pub saddr: Option<IpNet>,
    /// Destination address range.
    pub daddr: Option<IpNet>,
    /// Source port.
    pub sport: Option<u16>,
    /// Destination port.
    pub dport: Option<u16>,
    /// The uid owning the sending socket (locally sent packets: the output hook).
    pub uid: Option<u32>,
    /// The gid owning the sending socket (the output hook).
    pub gid: Option<u32>,
    /// Input interface (arriving packets: the prerouting hook).
    pub iif: Option<String>,
    /// Output interface (the output hook).
    pub oif: Option<String>,
    /// The packet mark.
    pub mark: Option<u32>,
    /// The hooks to start tracing at; default: output for uid, gid and oif filters,
    /// prerouting for iif, else both.
    pub hooks: Option<Vec<Hook>>,
}

fn invalid(what: &'static str) -> CaptureError {
    CaptureError::TraceFilter(what)
}

impl TraceFilter {
    /// The hooks the trace starts at.
    pub fn hooks(&self) -> Result<Vec<Hook>, CaptureError> {
        let local = self.uid.is_some() || self.gid.is_some() || self.oif.is_some();
        let arriving = self.iif.is_some();
        let hooks = match (&self.hooks, local, arriving) {
            (Some(h), _, _) => h.clone(),
            (None, true, true) => {
                return Err(invalid(
                    "an input interface (arriving packets) and a uid, gid or output interface \
                     (locally sent packets) never hold for one packet at one hook",
                ))
            }
            (None, true, false) => vec![Hook::Output],
            (None, false, true) => vec![Hook::Prerouting],
            (None, false, false) => vec![Hook::Prerouting, Hook::Output],
        };
        if hooks.is_empty() {
            return Err(invalid("no hook to trace at"));
        }
        Ok(hooks)
    }

    /// The filter as the matches of the trace rule.
    pub fn matches(&self) -> Result<Vec<Match>, CaptureError> {
        let mut out = Vec::new();
        if let Some(proto) = self.proto {
            out.push(Match::L4Proto {
                negate: false,
                proto,
            });
        }
        for (dir, net) in [(Direction::Src, self.saddr), (Direction::Dst, self.daddr)] {
            if let Some(net) = net {
                let version = match net {
                    IpNet::V4(_) => IpVersion::V4,
                    IpNet::V6(_) => IpVersion::V6,
                };
                out.push(Match::Addr {
                    dir,
                    version,
                    negate: false,
                    values: Values::One(net.trunc()),
                });
            }
        }
        for (dir, port) in [(Direction::Src, self.sport), (Direction::Dst, self.dport)] {
            if let Some(port) = port {
                let proto = self
                    .proto
                    .ok_or_else(|| invalid("a port needs a protocol (tcp or udp)"))?;
                out.push(Match::Port {
                    dir,
                    proto,
                    negate: false,
                    values: Values::One(PortRange::single(port)),
                });
            }
        }
        if let Some(uid) = self.uid {
            out.push(Match::SkUid {
                negate: false,
                values: Values::One(Owner::Id(uid)),
            });
        }
        if let Some(gid) = self.gid {
            out.push(Match::SkGid {
                negate: false,
                values: Values::One(Owner::Id(gid)),
            });
        }
        if let Some(i) = &self.iif {
            out.push(Match::Iifname {
                negate: false,
                values: Values::One(i.clone()),
            });
        }
        if let Some(o) = &self.oif {
            out.push(Match::Oifname {
                negate: false,
                values: Values::One(o.clone()),
            });
        }
        if let Some(mark) = self.mark {
            out.push(Match::Mark {
                negate: false,
                mask: u32::MAX,
                value: mark,
            });
        }
        Ok(out)
    }
}

/// One trace event with the rule it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The event as the kernel sent it.
    pub event: TraceEvent,
    /// Whether the event is of the trace's own table (the rule that started the trace).
    pub ours: bool,
    /// The rule's place (rule events whose handle the dump knew).
    pub place: Option<Place>,
    /// The rule as nft text (or its expressions' names when the model cannot express it).
    pub rule: Option<String>,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.event;
        let family = e.family.map(|f| f.keyword()).unwrap_or("?");
        match e.kind {
            TraceKind::Rule => {
                let index = self
                    .place
                    .as_ref()
                    .map(|p| format!("#{}", p.index))
                    .unwrap_or_else(|| "#?".into());
                let handle = e.handle.map(|h| h.to_string()).unwrap_or_default();
                write!(
                    f,
                    "{family} {} {} {index} (handle {handle}): {}",
                    e.table,
                    e.chain,
                    self.rule.as_deref().unwrap_or("(rule not in the dump)")
                )?;
                if let Some(v) = &e.verdict {
                    write!(f, "  => {v}")?;
                }
                Ok(())
            }
            TraceKind::Return => {
                write!(f, "{family} {} {}: end of chain, return", e.table, e.chain)
            }
            TraceKind::Policy => {
                let policy = match e.policy {
                    Some(0) => "drop",
                    _ => "accept",
                };
                write!(f, "{family} {} {}: policy {policy}", e.table, e.chain)
            }
            TraceKind::Other(t) => write!(f, "{family} {} {}: event type {t}", e.table, e.chain),
        }
    }
}

/// The key of a rule in trace events.
type RuleKey = (Option<Family>, String, String, u64);

/// A live trace: the tracer and what the namespace's rules are.
pub struct Trace {
    tracer: Tracer,
    rules: HashMap<RuleKey, (Place, String)>,
    /// Handles looked up and not found since the last reload.
    missing: HashSet<RuleKey>,
}

impl Trace {
    /// Start tracing the packets `filter` selects in the namespace at `namespace` (ours for
    /// `None`), with a table of its own called `table`; reads every table's rules for their
    /// texts.
    pub fn start(
        namespace: Option<&Path>,
        filter: &TraceFilter,
        table: &str,
    ) -> Result<Self, CaptureError> {
        let hooks = filter.hooks()?;
        let matches = filter.matches()?;
        let table = table.to_string();
        let tracer = nftmesh_netlink::netns::run_in_or_here(namespace, move || {
            Tracer::start(&table, &hooks, &matches)
        })??;
        let mut trace = Trace {
            tracer,
            rules: HashMap::new(),
            missing: HashSet::new(),
        };
        trace.reload()?;
        Ok(trace)
    }

    /// The trace's own table (family `inet`).
    pub fn table(&self) -> &str {
        self.tracer.table()
    }

    /// Times the kernel dropped events that came faster than they were read.
    pub fn lost(&self) -> u64 {
        self.tracer.lost()
    }

    fn reload(&mut self) -> Result<(), CaptureError> {
        self.rules = rule_texts(self.tracer.connection())?;
        self.missing.clear();
        Ok(())
    }

    /// The next step, waiting at most `wait`; `None` when no event came in time.
    pub fn next(&mut self, wait: Duration) -> Result<Option<Step>, CaptureError> {
        let Some(event) = self.tracer.next_event(wait)? else {
            return Ok(None);
        };
        let ours = event.family == Some(Family::Inet) && event.table == self.tracer.table();
        let (mut place, mut rule) = (None, None);
        if let (TraceKind::Rule, Some(h), false) = (event.kind, event.handle, ours) {
            let key = (event.family, event.table.clone(), event.chain.clone(), h);
            if !self.rules.contains_key(&key) && !self.missing.contains(&key) {
                // A rule added since the last read.
                self.reload()?;
                if !self.rules.contains_key(&key) {
                    self.missing.insert(key.clone());
                }
            }
            if let Some((p, text)) = self.rules.get(&key) {
                place = Some(p.clone());
                rule = Some(text.clone());
            }
        }
        Ok(Some(Step {
            event,
            ours,
            place,
            rule,
        }))
    }

    /// Delete the trace's table and close its sockets.
    pub fn stop(self) -> Result<(), CaptureError> {
        Ok(self.tracer.stop()?)
    }
}

/// Every rule of every table in the connection's namespace by trace key, with its place and
/// nft text (the expressions' names for a table the model cannot express).
fn rule_texts(conn: &mut Connection) -> Result<HashMap<RuleKey, (Place, String)>, CaptureError> {
    let mut out = HashMap::new();
    for t in conn.tables()? {
        let name = (t.family, t.name.clone());
        match conn.dump_counted(std::slice::from_ref(&name)) {
            Ok((ruleset, rules)) => {
                for r in rules {
                    let text = ruleset
                        .tables
                        .iter()
                        .find(|x| x.family == t.family && x.name == t.name)
                        .and_then(|x| x.chains.iter().find(|c| c.name == r.place.chain))
                        .and_then(|c| c.rules.get(r.place.index))
                        .map(render_rule)
                        .unwrap_or(r.expressions);
                    let key = (
                        Some(t.family),
                        t.name.clone(),
                        r.place.chain.clone(),
                        r.handle,
                    );
                    out.insert(key, (r.place, text));
                }
            }
            Err(_) => {
                for r in conn.rule_handles(t.family, &t.name)? {
                    let key = (
                        Some(t.family),
                        t.name.clone(),
                        r.place.chain.clone(),
                        r.handle,
                    );
                    let text = format!("[{}]", r.expressions);
                    out.insert(key, (r.place, text));
                }
            }
        }
    }
    Ok(out)
}
