//! The agent itself: one `poll(2)` loop over the API socket, its clients, a signalfd, a wake-up
//! socket of the workers and every pod's nf_tables change monitor, on one thread; new pods are
//! opened and installed by a few worker threads side by side (their commits, like the loop's,
//! are the agent's own) while the loop goes on, and their results come back tagged with the
//! request they answer. Replies are written without blocking: each client has an output
//! buffer (capped; a client that does not read is dropped, never waited for), and idle
//! clients are closed. A pod is its namespace's identity ([`crate::identity`]), never a path
//! string; the agent's own and the node's namespaces are refused. A change another process
//! commits to a pod's nftmesh tables marks the pod; after the events of one wake-up are read
//! (a burst is one repair) each marked pod is checked against its desired capture and, if it
//! differs, reinstalled. A periodic resync checks every pod (tables and routes), forgets those
//! whose namespace is gone and retries records that could not be adopted. The registry is
//! written durably before an `add` is acknowledged, and locked (one agent per state dir), so a
//! restarted agent adopts its pods again; stopping or killing the agent never removes a
//! capture. SIGHUP is ignored (logged): there is nothing to reload. An eBPF pod (`add` with a
//! `cgroup`) has its programs pinned in the agent's bpffs ([`Options::bpffs`]); its repair
//! re-attaches programs another process unpinned or detached, and a restart adopts its pinned
//! programs as they are when complete.

mod adds;
mod adopt;
mod clients;
mod listener;
mod ops;
mod poll;
mod pool;
mod repairs;

use listener::{bind, listen};
use pool::Pool;

use crate::identity::{self, IdentityError, NetnsId};
use crate::kernel::{capture_of_record, EbpfPod, RealPod};
use crate::metrics::{self, Metrics};
use crate::pods::{self, Adoption, Mark, PodKernel, Pods, RepairOutcome};
use crate::protocol::{self, Command, Desired, ErrorKind, RequestId};
use crate::registry::{self, Record};
use nftmesh::ebpf::Bpffs;
use nftmesh::log::{Event, Format, Level, Logger};
use nftmesh::{Capture, Namespace};
use nftmesh_netlink::monitor::Own;
use nftmesh_netlink::route_monitor::RouteMonitor;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The API socket (created 0600).
    pub socket: PathBuf,
    /// Where the registry is kept.
    pub state_dir: PathBuf,
    /// Where to serve Prometheus metrics (`None`: not served).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// How often every pod is checked in full.
    pub resync: Duration,
    /// Whether the agent owns its pods' tables (nf_tables' `owner` + `persist` flags, where
    /// the kernel has both: another process's change is then refused by the kernel, and the
    /// tables outlive the agent until it claims them again), or only repairs them. (An eBPF
    /// pod's inbound table is repaired, never owned.)
    pub own_tables: bool,
    /// The BPF file system eBPF pods' programs are pinned in (`None`: the one `/proc/mounts`
    /// lists, `/sys/fs/bpf` first). Its stale pins (of cgroups that are gone) are removed at
    /// start.
    pub bpffs: Option<PathBuf>,
}

/// Workers per CPU (2 to 4 CPUs counted): registering 1 000 pods through 4 clients took
/// 1 381 ms with one per CPU and 1 056 ms with four (two runs of `cargo bench -p
/// nftmesh-agent` on a 2-CPU machine whose state dir is on ext4 without a journal).
const WORKERS_PER_CPU: usize = 4;

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Setting up the socket, the state dir, signals or metrics failed.
    #[error("{what}: {why}")]
    Setup {
        /// What was being set up.
        what: String,
        /// The error.
        why: String,
    },
}

fn setup(what: impl Into<String>, why: impl std::fmt::Display) -> AgentError {
    AgentError::Setup {
        what: what.into(),
        why: why.to_string(),
    }
}

/// Clients served at once at most; more are refused with a `busy` reply.
const MAX_CLIENTS: usize = 1024;
/// The most reply bytes kept for a client that does not read: past it, the client is dropped.
const MAX_OUTPUT: usize = 4 << 20;
/// A client's requests are read and served only while its unwritten replies are below this:
/// a client that does not read its replies gets no more work done for it (backpressure).
const OUTPUT_HIGH: usize = 256 << 10;
/// Requests served per client per turn of the loop: one client cannot hold the loop.
const REQUESTS_PER_TURN: usize = 32;
/// A client with nothing pending that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(30);
/// Descriptors kept free of adoption for the clients and the work after it.
const DESCRIPTOR_RESERVE: usize = 32;
/// How long `accept` rests after the process ran out of descriptors.
const EMFILE_PAUSE: Duration = Duration::from_millis(500);

/// Where a reply goes: a client, and its request's place among that client's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target {
    client: u64,
    seq: u64,
    /// The request's own id, echoed in its reply.
    id: Option<RequestId>,
}

struct Client {
    id: u64,
    stream: UnixStream,
    buf: Vec<u8>,
    /// Reply bytes not yet written.
    out: Vec<u8>,
    /// The sequence number the next request gets.
    next_seq: u64,
    /// The sequence number of the next reply to write: replies go out in request order.
    next_out: u64,
    /// Replies ready out of order, by sequence number.
    ready: BTreeMap<u64, Value>,
    last_active: Instant,
    /// End of file read: close once every reply is written.
    eof: bool,
}

/// A new pod opened, installed and recorded (on a worker): its namespace, the record and its
/// file, whether the tables are owned, and the install's report; or why not. For the add `job`.
type Opened = Result<(RealPod, Record, PathBuf, bool, String), String>;
type Job = Box<dyn FnOnce() -> Done + Send>;

/// A request waiting for something to finish first.
type Queued = (Target, Result<Command, String>);

/// What a worker finished.
enum Done {
    /// The add `job`.
    Added(u64, Box<Opened>),
    /// The repair of a pod begun with the mark.
    Repaired(NetnsId, Mark, Result<Option<pods::Repaired>, String>),
    /// A client's check, re-add or remove of a pod, `job`.
    Op(u64, Box<OpDone>),
    /// The pins of cgroups that are gone, removed from the bpffs (after a resync forgot an
    /// eBPF pod), or why not.
    Swept(Result<Vec<nftmesh::ebpf::StalePins>, String>),
}

/// What a client's operation on a pod did (on a worker).
enum OpDone {
    /// The differences from the capture.
    Checked(Result<Vec<String>, String>),
    /// A re-add: the new capture installed (its tables owned or not, and a routing monitor
    /// if it now has routing to keep), or why not; the record it goes with.
    Replaced(
        Result<(Capture, bool, Option<RouteMonitor>), String>,
        Box<Record>,
    ),
    /// The tables removed.
    Removed(Result<usize, String>),
}

/// A client's operation on a pod, running on a worker.
struct PendingOp {
    target: Target,
    /// The pod (none for a namespace the agent does not keep).
    id: Option<NetnsId>,
    path: PathBuf,
    started: Instant,
    /// Requests that came meanwhile about the same pod or from the same client.
    queued: Vec<Queued>,
}

/// A new pod's add on a worker, waiting for its result: who asked, and what.
struct PendingAdd {
    target: Target,
    id: NetnsId,
    path: PathBuf,
    started: Instant,
    /// Requests about the same namespace that came while it was being added, replayed after.
    queued: Vec<Queued>,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An event about the pod at `pod`.
fn pod_event(level: Level, msg: &str, pod: &Path) -> Event {
    Event::new(level, msg).field("pod", pod)
}

/// The running agent.
pub struct Agent {
    opts: Options,
    listener: UnixListener,
    signals: SignalFd,
    clients: Vec<Client>,
    next_client: u64,
    pods: Pods<RealPod>,
    /// Adds of new pods running on the workers, by job.
    adding: BTreeMap<u64, PendingAdd>,
    /// Requests about pods whose repair runs on a worker, replayed when it ends.
    waiting: BTreeMap<NetnsId, Vec<Queued>>,
    /// Clients' checks, re-adds and removes running on the workers, by job.
    ops: BTreeMap<u64, PendingOp>,
    next_job: u64,
    /// Records kept but not adopted (their namespace could not be examined or opened: out of
    /// descriptors, ...): retried at every resync, never deleted for it.
    unadopted: Vec<(PathBuf, Record, String)>,
    /// Record files this agent cannot read (torn, or of a newer version): kept and reported.
    unreadable: Vec<registry::BadRecord>,
    /// The namespaces that are never pods (the agent's own, the node's).
    forbidden: Vec<(NetnsId, &'static str)>,
    /// Where new eBPF pods are pinned, or why there is no such place (then `add --cgroup`
    /// fails saying so; nf_tables pods are unaffected).
    bpffs: Result<Bpffs, String>,
    /// `accept` rests until then after running out of descriptors.
    accept_paused_until: Option<Instant>,
    metrics: Arc<Mutex<Metrics>>,
    pool: Pool,
    next_resync: Instant,
    /// One line per event (a repair is one line; its differences at debug).
    log: Logger,
    /// The state dir's lock, held for the agent's life.
    _lock: registry::Lock,
}

impl Agent {
    /// Set up (signals, descriptor limit, state dir, API socket, metrics) and adopt the pods
    /// of the registry, logging text lines at info and above on stderr. Call from the thread
    /// that will run [`Agent::run`].
    pub fn start(opts: Options) -> Result<Self, AgentError> {
        Self::start_with_log(opts, Logger::stderr(Format::Text, Level::Info))
    }

    /// [`Agent::start`], logging to `log` (`nftmesh agent run --log-format --log-level`).
    pub fn start_with_log(opts: Options, log: Logger) -> Result<Self, AgentError> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGINT);
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGHUP);
        mask.thread_block()
            .map_err(|e| setup("blocking SIGINT/SIGTERM/SIGHUP", e))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| setup("signalfd", e))?;
        // Three descriptors per pod: as many as the system lets us.
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
        std::fs::create_dir_all(&opts.state_dir)
            .map_err(|e| setup(format!("state dir {}", opts.state_dir.display()), e))?;
        let lock = registry::lock(&opts.state_dir).map_err(|e| setup("state dir", e))?;
        let listener = bind(&opts.socket)?;
        let bpffs = match &opts.bpffs {
            Some(dir) => Ok(Bpffs::at(dir).map_err(|e| setup("bpffs", e))?),
            None => Bpffs::find().map_err(|e| e.to_string()),
        };
        let metrics = Arc::new(Mutex::new(Metrics::default()));
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        if let Some(addr) = opts.metrics_addr {
            let l = std::net::TcpListener::bind(addr)
                .map_err(|e| setup(format!("metrics address {addr}"), e))?;
            metrics::serve(l, metrics.clone());
        }
        let mut agent = Agent {
            log,
            next_resync: Instant::now() + opts.resync,
            opts,
            listener,
            signals,
            clients: Vec::new(),
            next_client: 0,
            pods: Pods::default(),
            adding: BTreeMap::new(),
            waiting: BTreeMap::new(),
            ops: BTreeMap::new(),
            next_job: 0,
            unadopted: Vec::new(),
            unreadable: Vec::new(),
            forbidden: identity::forbidden(),
            bpffs,
            accept_paused_until: None,
            _lock: lock,
            metrics,
            pool: Pool::new(WORKERS_PER_CPU * cpus.clamp(2, 4))?,
        };
        // Descriptors held back while the registry is adopted: a registry larger than the
        // descriptor limit leaves the rest unadopted (kept, retried), never an agent without
        // a descriptor to accept its clients with.
        let reserve: Vec<std::fs::File> = (0..DESCRIPTOR_RESERVE)
            .filter_map(|_| std::fs::File::open("/dev/null").ok())
            .collect();
        agent.adopt()?;
        drop(reserve);
        listen(&agent.listener, &agent.opts.socket)?;
        Ok(agent)
    }

    fn metrics(&self) -> std::sync::MutexGuard<'_, Metrics> {
        self.metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Serve until SIGINT or SIGTERM. Captures stay as they are.
    pub fn run(mut self) -> Result<(), AgentError> {
        loop {
            let now = Instant::now();
            let mut wait = self.next_resync.saturating_duration_since(now).min(IDLE);
            if let Some(t) = self.accept_paused_until {
                // Watch the listener again as soon as its rest is over.
                wait = wait.min(t.saturating_duration_since(now));
            }
            let ready = self.wait(wait)?;
            if ready.stop {
                self.log
                    .info("stopping on a signal; every capture stays in place");
                let _ = std::fs::remove_file(&self.opts.socket);
                return Ok(());
            }
            if ready.accept {
                self.accept();
            }
            if ready.workers {
                self.collect_done();
            }
            self.serve_clients(ready.clients);
            for id in ready.pods {
                self.drain(id);
            }
            for id in self.pods.marked() {
                self.start_repair(id);
            }
            self.flush_clients();
            if Instant::now() >= self.next_resync {
                self.resync();
                self.next_resync = Instant::now() + self.opts.resync;
            }
        }
    }

    /// Answer `command` for `target`, now or when its namespace's pending add is done.
    fn dispatch(&mut self, target: Target, command: Result<Command, String>) {
        let path = match &command {
            Ok(Command::Add { netns, .. })
            | Ok(Command::Remove(netns))
            | Ok(Command::Check(netns)) => Some(netns.clone()),
            _ => None,
        };
        let id = path
            .as_deref()
            .map(|p| identity::of_pod(p, &self.forbidden));
        // A request about a namespace whose add is still running waits for it, and so does
        // every later request of a client whose add is running: each client is served in
        // its requests' order, as if one at a time.
        let waits_for = |p: &PendingAdd| {
            p.target.client == target.client
                || matches!(&id, Some(Ok(id)) if p.id == *id)
                || p.queued.iter().any(|(t, _)| t.client == target.client)
        };
        if let Some(p) = self.adding.values_mut().find(|p| waits_for(p)) {
            p.queued.push((target, command));
            return;
        }
        let op_waits_for = |o: &PendingOp| {
            o.target.client == target.client
                || matches!((&id, o.id), (Some(Ok(i)), Some(oi)) if *i == oi)
                || o.queued.iter().any(|(t, _)| t.client == target.client)
        };
        if let Some(o) = self.ops.values_mut().find(|o| op_waits_for(o)) {
            o.queued.push((target, command));
            return;
        }
        // So does a request about a pod whose repair runs on a worker (its result must not
        // land after a change asked for later), and every later one of its client.
        let waiting_pod = match &id {
            Some(Ok(i)) if self.pods.in_flight(*i) => Some(*i),
            _ => self
                .waiting
                .iter()
                .find(|(_, q)| q.iter().any(|(t, _)| t.client == target.client))
                .map(|(i, _)| *i),
        };
        if let Some(i) = waiting_pod {
            self.waiting.entry(i).or_default().push((target, command));
            return;
        }
        let reply = match (command, id) {
            (
                Ok(Command::Add {
                    netns,
                    desired,
                    container_id,
                    cgroup,
                }),
                Some(found),
            ) => {
                let id = match found {
                    Ok(id) => id,
                    Err(e) => {
                        let kind = match e {
                            IdentityError::Node { .. } => ErrorKind::Refused,
                            IdentityError::Io { .. } => ErrorKind::Failed,
                            _ => ErrorKind::Invalid,
                        };
                        let e = e.to_string();
                        self.answer(target, self.add_failed(&netns, kind, &e));
                        return;
                    }
                };
                let ebpf = match self.ebpf_place(&desired, cgroup.as_deref()) {
                    Ok(place) => place,
                    Err(e) => {
                        self.answer(target, self.add_failed(&netns, ErrorKind::Invalid, &e));
                        return;
                    }
                };
                if self.pods.contains(id) {
                    self.start_readd(target, id, netns, desired, container_id, ebpf);
                } else {
                    self.start_add(target, id, netns, desired, container_id, ebpf);
                }
                return;
            }
            (Ok(Command::Remove(netns)), Some(found)) => {
                return self.start_remove(target, netns, found)
            }
            (Ok(Command::Check(netns)), Some(found)) => {
                return self.start_check(target, netns, found)
            }
            (command, _) => self.handle(command),
        };
        self.answer(target, reply);
    }

    fn handle(&mut self, command: Result<Command, String>) -> Value {
        match command {
            Err(e) => protocol::error(ErrorKind::Invalid, &e),
            Ok(Command::Status(netns)) => self.status(netns.as_deref()),
            Ok(Command::List) => {
                let mut paths: Vec<&Path> = self
                    .pods
                    .iter()
                    .map(|(_, p)| p.record.network_namespace.as_path())
                    .collect();
                paths.sort();
                json!({"ok": true, "pods": paths})
            }
            // Add, remove and check are dispatched with their namespace's identity.
            Ok(other) => protocol::error(ErrorKind::Failed, &format!("not dispatched: {other:?}")),
        }
    }

    fn status(&self, netns: Option<&Path>) -> Value {
        let wanted = netns.map(|p| identity::of(p).ok());
        let pods = self.pods.status(|id, pod| match (&wanted, netns) {
            (None, _) => true,
            (Some(Some(w)), _) => *w == id,
            (Some(None), Some(p)) => pod.record.network_namespace == p,
            (Some(None), None) => false,
        });
        if let (Some(n), true) = (netns, pods.is_empty()) {
            return protocol::error(
                ErrorKind::Invalid,
                &format!("{} is not registered", n.display()),
            );
        }
        let mut v = json!({"ok": true, "pods": pods});
        if netns.is_none() {
            v["unadopted"] = self
                .unadopted
                .iter()
                .map(|(f, r, why)| json!({"file": f, "network_namespace": r.network_namespace, "error": why}))
                .collect();
            v["unreadable"] = self
                .unreadable
                .iter()
                .map(|b| json!({"file": b.file, "error": b.error}))
                .collect();
        }
        v
    }
}
