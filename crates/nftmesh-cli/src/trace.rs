//! `nftmesh trace`: real packets' paths through a namespace's tables, live. Prints `tracing`
//! to stderr once it listens, then, for each traced packet, a line with the packet and one
//! line per rule that matched, chain end and policy, with the rule's nft text. Its own table
//! is deleted when it exits: after `--count` packets, on `--timeout`, on SIGINT or SIGTERM,
//! on error; and by the kernel (owner flag) if it is killed.

use crate::error::CliError;
use crate::packet_args::{MetaArgs, ProtoArg};
use nftmesh::trace::{Trace, TraceFilter};
use nftmesh_model::Hook;
use nftmesh_netlink::trace::TraceKind;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `nftmesh trace`: where, which packets, and for how long.
#[derive(clap::Args)]
#[command(mut_args(as_filter))]
pub struct TraceArgs {
    /// Network namespace to trace in (`/proc/PID/ns/net`, `/var/run/netns/NAME`); default: ours.
    #[arg(long, value_name = "PATH", env = "NETWORK_NAMESPACE")]
    network_namespace: Option<PathBuf>,
    /// Only this transport protocol (required with --sport/--dport).
    #[arg(long, value_enum)]
    proto: Option<ProtoArg>,
    /// Only packets from this address or range.
    #[arg(long, value_name = "ADDR[/LEN]", value_parser = parse_net)]
    saddr: Option<ipnet::IpNet>,
    /// Only packets to this address or range.
    #[arg(long, value_name = "ADDR[/LEN]", value_parser = parse_net)]
    daddr: Option<ipnet::IpNet>,
    /// Only packets from this port.
    #[arg(long)]
    sport: Option<u16>,
    /// Only packets to this port.
    #[arg(long)]
    dport: Option<u16>,
    #[command(flatten)]
    meta: MetaArgs,
    /// Start tracing at these hooks (repeatable); default: output for --uid/--gid/--oif,
    /// prerouting for --iif, else both.
    #[arg(long, value_enum)]
    hook: Vec<HookArg>,
    /// Stop after this many packets.
    #[arg(long, default_value_t = 10)]
    count: u64,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum HookArg {
    Prerouting,
    Output,
}

/// [`MetaArgs`]' help said of the packets to trace (the flags keep their place).
fn as_filter(arg: clap::Arg) -> clap::Arg {
    let help = match arg.get_id().as_str() {
        "uid" => "Only packets sent by a socket of this uid (the output hook)",
        "gid" => "Only packets sent by a socket of this gid (the output hook)",
        "iif" => "Only packets arriving on this interface (the prerouting hook)",
        "oif" => "Only packets leaving on this interface (the output hook)",
        "mark" => "Only packets with this mark (decimal or 0x hex)",
        _ => return arg,
    };
    arg.help(help)
}

fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or address/prefix"))
}

impl TraceArgs {
    fn filter(&self) -> TraceFilter {
        TraceFilter {
            proto: self.proto.map(Into::into),
            saddr: self.saddr,
            daddr: self.daddr,
            sport: self.sport,
            dport: self.dport,
            uid: self.meta.uid,
            gid: self.meta.gid,
            iif: self.meta.iif.clone(),
            oif: self.meta.oif.clone(),
            mark: self.meta.mark,
            hooks: (!self.hook.is_empty()).then(|| {
                self.hook
                    .iter()
                    .map(|h| match h {
                        HookArg::Prerouting => Hook::Prerouting,
                        HookArg::Output => Hook::Output,
                    })
                    .collect()
            }),
        }
    }
}

/// A line to stderr; a reader that went away is no reason to fail (nor to skip the cleanup).
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// After the last packet counted, how long to wait for the rest of its events.
const SETTLE: Duration = Duration::from_millis(250);
/// How long one wait for an event lasts before signals and deadlines are checked.
const POLL: Duration = Duration::from_millis(100);

/// Why the trace ended.
enum End {
    Count,
    Timeout,
    Signal(Signal),
}

/// Run `nftmesh trace`.
pub fn run(args: &TraceArgs) -> Result<(), CliError> {
    // SIGINT and SIGTERM are blocked in every thread (the namespace helper thread inherits
    // the mask) and read from a signalfd, so the loop below ends and deletes the table.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    let signals = mask
        .thread_block()
        .and_then(|()| SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC))
        .map_err(CliError::system("blocking SIGINT and SIGTERM"))?;
    if args.timeout.is_some_and(|t| !(t > 0.0 && t.is_finite())) {
        return Err(CliError::Usage(
            "--timeout must be a positive number of seconds".into(),
        ));
    }
    let table = format!("nftmesh-trace-{}", std::process::id());
    let mut trace = Trace::start(args.network_namespace.as_deref(), &args.filter(), &table)?;
    note!("tracing");
    let result = follow(&mut trace, args, &signals);
    let lost = trace.lost();
    let stopped = trace.stop();
    if lost > 0 {
        note!(
            "nftmesh: trace: the kernel dropped trace events {lost} time(s): filter more narrowly"
        );
    }
    stopped.map_err(|e| CliError::Cleanup {
        table,
        source: Box::new(e),
    })?;
    match result? {
        (End::Count, _) => Ok(()),
        (End::Timeout, n) => {
            note!("nftmesh: trace: timed out after {n} packet(s)");
            Ok(())
        }
        (End::Signal(signal), packets) => Err(CliError::Interrupted { signal, packets }),
    }
}

/// Print every step of the first `--count` packets until the count, the timeout or a signal.
fn follow(trace: &mut Trace, args: &TraceArgs, signals: &SignalFd) -> Result<(End, u64), CliError> {
    let deadline = args
        .timeout
        .map(|t| Instant::now() + Duration::from_secs_f64(t));
    let mut labels: HashMap<u32, String> = HashMap::new();
    let mut counted = 0u64;
    let mut settle_until: Option<Instant> = None;
    let mut out = std::io::stdout().lock();
    loop {
        if let Ok(Some(info)) = signals.read_signal() {
            let s = Signal::try_from(info.ssi_signo as i32).unwrap_or(Signal::SIGTERM);
            return Ok((End::Signal(s), counted));
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Ok((End::Timeout, counted));
        }
        if settle_until.is_some_and(|s| now >= s) {
            return Ok((End::Count, counted));
        }
        let Some(step) = trace.next(POLL)? else {
            continue;
        };
        let id = step.event.id;
        let what = || {
            step.event
                .packet
                .map(|p| p.to_string())
                .unwrap_or_else(|| "(no headers)".into())
        };
        // A packet starts where the trace rule matched it (an event of that rule's handle);
        // trace ids are per buffer and may be reused by a later packet.
        let starts = step.ours && step.event.kind == TraceKind::Rule && step.event.handle.is_some();
        if starts {
            if counted < args.count {
                counted += 1;
                labels.insert(id, counted.to_string());
                line(
                    &mut out,
                    &format!("packet {counted} (trace id {id:#010x}): {}", what()),
                )?;
            } else {
                labels.remove(&id);
                continue;
            }
        } else if let std::collections::hash_map::Entry::Vacant(e) = labels.entry(id) {
            if counted == 0 || settle_until.is_some() {
                continue;
            }
            // A traced packet seen again at a later hook under a new id (a redirected
            // connection looping back through `lo`): shown, not counted.
            e.insert("again".into());
            line(
                &mut out,
                &format!("packet again (trace id {id:#010x}): {}", what()),
            )?;
        }
        let label = labels.get(&id).cloned().unwrap_or_default();
        if counted >= args.count && label != "again" {
            settle_until = Some(Instant::now() + SETTLE);
        }
        if !step.ours {
            line(&mut out, &format!("  [{label}] {step}"))?;
        }
    }
}

/// One line to stdout, flushed (a reader that went away ends the trace with an error).
fn line(out: &mut impl Write, text: &str) -> Result<(), CliError> {
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(CliError::io("stdout"))
}
