//! The agent itself: one `poll(2)` loop over the API socket, its clients, a signalfd and
//! every pod's nf_tables change monitor, on one thread; new pods are opened and installed by a
//! few worker threads side by side (their commits, like the loop's, are the agent's own). A change another process commits to a
//! pod's nftmesh tables marks the pod; after the events of one wake-up are read (a burst is
//! one repair) each marked pod is checked against its desired capture and, if it differs,
//! reinstalled. A periodic resync checks every pod (tables and routes) and forgets those whose
//! namespace is gone. The registry is persisted on every change, so a restarted agent adopts
//! its pods again; stopping or killing the agent never removes a capture.

use crate::metrics::{self, Metrics};
use crate::protocol::{self, Command, Desired};
use crate::registry::{self, Record};
use crate::summary::Summary;
use nftmesh::log::{Event, Format, Level, Logger};
use nftmesh::{Capture, Namespace};
use nftmesh_netlink::monitor::Monitor;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
}

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

/// Clients served at once at most; more are refused with an error reply.
const MAX_CLIENTS: usize = 256;
/// Repair records kept per pod (the count goes on).
const REPAIR_LOG: usize = 16;

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// A new pod opened and installed (on a worker), or why not.
type Opened = Result<(Pod, String), String>;
type Job = Box<dyn FnOnce() -> (usize, Opened) + Send>;

/// A few long-lived worker threads that open and install new pods in parallel (the kernel
/// commits each pod's transaction in the committing thread, and pods do not share a commit
/// lock). Their thread ids are the agent's own for the change monitors.
struct Pool {
    jobs: std::sync::mpsc::Sender<Job>,
    done: std::sync::mpsc::Receiver<(usize, Opened)>,
    tids: Vec<u32>,
}

impl Pool {
    fn new(workers: usize) -> Result<Self, AgentError> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let (done_tx, done) = std::sync::mpsc::channel();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        for i in 0..workers {
            let (rx, done_tx, tid_tx) = (rx.clone(), done_tx.clone(), tid_tx.clone());
            std::thread::Builder::new()
                .name(format!("nftmesh-agent-{i}"))
                .spawn(move || {
                    let _ = tid_tx.send(nix::unistd::gettid().as_raw() as u32);
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        if done_tx.send(job()).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| setup("worker thread", e))?;
        }
        let tids = (0..workers)
            .map(|_| tid_rx.recv_timeout(Duration::from_secs(10)))
            .collect::<Result<Vec<u32>, _>>()
            .map_err(|e| setup("worker thread", e))?;
        Ok(Pool { jobs, done, tids })
    }
}

/// A new pod's add, waiting for its turn on a worker.
struct NewAdd {
    at: usize,
    record: Record,
    capture: Capture,
    started: Instant,
}

struct Pod {
    record: Record,
    ns: Namespace,
    capture: Capture,
    monitor: Monitor,
    /// The namespace file's (device, inode) when registered: another value, or none, at the
    /// path means the namespace is gone.
    identity: (u64, u64),
    last_check: Option<f64>,
    repairs: Vec<Repair>,
    repair_count: u64,
    last_error: Option<String>,
    /// Marked by a notification: when, and why.
    dirty: Option<(Instant, String)>,
}

/// One repair, as `status` shows it.
struct Repair {
    /// When (seconds since the epoch).
    at: f64,
    /// `KIND: WHY: DIFFERENCES` (every difference).
    cause: String,
    /// The differences counted ([`Summary`]).
    summary: String,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
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
    pods: BTreeMap<PathBuf, Pod>,
    metrics: Arc<Mutex<Metrics>>,
    /// The thread ids whose commits are the agent's own (its loop and its workers).
    own: Vec<u32>,
    pool: Pool,
    next_resync: Instant,
    /// One line per event (a repair is one line; its differences at debug).
    log: Logger,
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
        mask.thread_block()
            .map_err(|e| setup("blocking SIGINT/SIGTERM", e))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| setup("signalfd", e))?;
        // Three descriptors per pod: as many as the system lets us.
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
        std::fs::create_dir_all(&opts.state_dir)
            .map_err(|e| setup(format!("state dir {}", opts.state_dir.display()), e))?;
        let listener = bind(&opts.socket)?;
        let metrics = Arc::new(Mutex::new(Metrics::default()));
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
            pods: BTreeMap::new(),
            metrics,
            own: vec![nix::unistd::gettid().as_raw() as u32],
            pool: Pool::new(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
                    .clamp(2, 4),
            )?,
        };
        agent.own.extend(agent.pool.tids.iter().copied());
        agent.adopt()?;
        Ok(agent)
    }

    fn metrics(&self) -> std::sync::MutexGuard<'_, Metrics> {
        self.metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Re-adopt every recorded pod whose namespace still exists (checked, repaired only if it
    /// differs); forget the others.
    fn adopt(&mut self) -> Result<(), AgentError> {
        let (records, bad) =
            registry::load(&self.opts.state_dir).map_err(|e| setup("registry", e))?;
        for b in bad {
            self.log
                .log(&Event::new(Level::Warn, "skipping an unreadable record").field("error", b));
            *self.metrics().errors.entry("load").or_insert(0) += 1;
        }
        for r in records {
            let path = r.network_namespace.clone();
            let opened = r
                .desired
                .capture()
                .map_err(|e| e.to_string())
                .and_then(|c| open_pod(r.clone(), c));
            match opened {
                Ok(pod) => {
                    self.pods.insert(path.clone(), pod);
                    self.repair(&path, "adopt", "adopted after a restart".into());
                }
                Err(e) => {
                    self.log.log(
                        &pod_event(Level::Warn, "forgot a recorded pod", &path).field("error", e),
                    );
                    self.metrics().forgotten += 1;
                    self.persist(&path);
                }
            }
        }
        self.metrics().pods = self.pods.len() as u64;
        self.log.log(
            &Event::new(Level::Info, "listening")
                .field("socket", self.opts.socket.as_path())
                .field("pods", self.pods.len()),
        );
        Ok(())
    }

    /// Persist the pod at `path` (its record, or its absence).
    fn persist(&mut self, path: &Path) {
        let r = match self.pods.get(path) {
            Some(pod) => registry::save(&self.opts.state_dir, &pod.record),
            None => registry::forget(&self.opts.state_dir, path),
        };
        if let Err(e) = r {
            self.log.log(
                &pod_event(Level::Error, "saving the registry failed", path).field("error", e),
            );
            *self.metrics().errors.entry("save").or_insert(0) += 1;
        }
    }

    /// Serve until SIGINT or SIGTERM. Captures stay as they are.
    pub fn run(mut self) -> Result<(), AgentError> {
        loop {
            let wait = self.next_resync.saturating_duration_since(Instant::now());
            let (signal, accept, ready_clients, ready_pods) = self.wait(wait)?;
            if signal {
                self.log
                    .info("stopping on a signal; every capture stays in place");
                let _ = std::fs::remove_file(&self.opts.socket);
                return Ok(());
            }
            if accept {
                self.accept();
            }
            self.serve_clients(ready_clients);
            for path in ready_pods {
                self.drain(&path);
            }
            let dirty: Vec<(PathBuf, String)> = self
                .pods
                .iter()
                .filter_map(|(p, pod)| pod.dirty.as_ref().map(|(_, why)| (p.clone(), why.clone())))
                .collect();
            for (path, why) in dirty {
                self.repair(&path, "notification", why);
            }
            if Instant::now() >= self.next_resync {
                self.resync();
                self.next_resync = Instant::now() + self.opts.resync;
            }
        }
    }

    /// Poll everything; what is ready.
    #[allow(clippy::type_complexity)]
    fn wait(
        &mut self,
        wait: Duration,
    ) -> Result<(bool, bool, Vec<usize>, Vec<PathBuf>), AgentError> {
        let timeout = PollTimeout::try_from(wait.as_millis().min(60_000) as i32 + 1)
            .unwrap_or(PollTimeout::MAX);
        let revents: Vec<bool> = {
            let mut fds: Vec<PollFd> = Vec::with_capacity(2 + self.clients.len() + self.pods.len());
            fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            for c in &self.clients {
                fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
            }
            for pod in self.pods.values() {
                fds.push(PollFd::new(pod.monitor.as_fd(), PollFlags::POLLIN));
            }
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(setup("poll", e)),
            }
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        let n = self.clients.len();
        let clients = (0..n).filter(|i| revents[2 + i]).collect();
        // The map is unchanged since the descriptors were listed: same order.
        let pods = self
            .pods
            .keys()
            .zip(&revents[2 + n..])
            .filter(|(_, ready)| **ready)
            .map(|(p, _)| p.clone())
            .collect();
        let signal = revents[0] && self.signals.read_signal().ok().flatten().is_some();
        Ok((signal, revents[1], clients, pods))
    }

    fn accept(&mut self) {
        for _ in 0..64 {
            let Ok((stream, _)) = self.listener.accept() else {
                return;
            };
            let allowed =
                nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                    .map(|c| c.uid() == 0 || c.uid() == nix::unistd::geteuid().as_raw());
            let refuse = match allowed {
                Ok(true) if self.clients.len() < MAX_CLIENTS => None,
                Ok(true) => Some(format!("busy: {MAX_CLIENTS} clients already")),
                Ok(false) => {
                    self.metrics().refused_peers += 1;
                    Some("refused: only root may use the agent".to_string())
                }
                Err(e) => Some(format!("refused: peer credentials: {e}")),
            };
            if let Some(why) = refuse {
                reply(&stream, &protocol::error(&why));
                continue;
            }
            if stream.set_nonblocking(true).is_ok() {
                self.clients.push(Client {
                    stream,
                    buf: Vec::new(),
                });
            }
        }
    }

    /// Read what client `i` sent: its complete lines, and whether to close it (end of file,
    /// an error, or an oversized request, which gets its error reply here).
    fn read_client(&mut self, i: usize) -> (Vec<Vec<u8>>, bool) {
        let mut chunk = [0u8; 16 * 1024];
        let mut close = false;
        let c = &mut self.clients[i];
        loop {
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    close = true;
                    break;
                }
                Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    close = true;
                    break;
                }
            }
            if c.buf.len() > protocol::MAX_REQUEST {
                break;
            }
        }
        let mut lines = Vec::new();
        while let Some(nl) = c.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = c.buf.drain(..=nl).collect();
            line.pop();
            lines.push(line);
        }
        if c.buf.len() > protocol::MAX_REQUEST {
            close = true;
        }
        (lines, close)
    }

    /// Serve the ready clients: every complete request in order (consecutive adds of new
    /// pods run on the workers side by side), then the replies, then the closes.
    fn serve_clients(&mut self, ready: Vec<usize>) {
        let mut batch: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut closing = Vec::new();
        for i in ready {
            let (lines, close) = self.read_client(i);
            batch.extend(lines.into_iter().map(|l| (i, l)));
            if close {
                closing.push(i);
            }
        }
        let mut replies: Vec<Option<Value>> = vec![None; batch.len()];
        let mut run: Vec<NewAdd> = Vec::new();
        for (at, (_, line)) in batch.iter().enumerate() {
            let command = protocol::parse(line);
            if let Ok(Command::Add {
                netns,
                desired,
                container_id,
            }) = &command
            {
                let new = self
                    .pods
                    .get(netns)
                    .is_none_or(|p| identity(netns) != Some(p.identity));
                let queued = run.iter().any(|a| &a.record.network_namespace == netns);
                if new && !queued {
                    let capture = match desired.capture() {
                        Ok(c) => c,
                        Err(e) => {
                            replies[at] = Some(protocol::error(&e.to_string()));
                            continue;
                        }
                    };
                    run.push(NewAdd {
                        at,
                        record: Record {
                            network_namespace: netns.clone(),
                            desired: desired.clone(),
                            container_id: container_id.clone(),
                            installed_at: now(),
                        },
                        capture,
                        started: Instant::now(),
                    });
                    continue;
                }
            }
            self.add_new(std::mem::take(&mut run), &mut replies);
            replies[at] = Some(self.handle(command));
        }
        self.add_new(run, &mut replies);
        for ((i, _), r) in batch.iter().zip(replies) {
            if let Some(r) = r {
                reply(&self.clients[*i].stream, &r);
            }
        }
        closing.sort_unstable();
        for i in closing.into_iter().rev() {
            if self.clients[i].buf.len() > protocol::MAX_REQUEST {
                let e = format!("request line over {} bytes", protocol::MAX_REQUEST);
                reply(&self.clients[i].stream, &protocol::error(&e));
            }
            self.clients.swap_remove(i);
        }
    }

    /// Open and install the new pods of `run` on the workers (one inline), then register
    /// each in order; their replies go to `replies`.
    fn add_new(&mut self, run: Vec<NewAdd>, replies: &mut [Option<Value>]) {
        if run.is_empty() {
            return;
        }
        let open = |a: NewAdd| -> (usize, Opened) {
            let r =
                open_pod(a.record, a.capture).and_then(|pod| match pod.ns.install(&pod.capture) {
                    Ok(rep) => Ok((pod, rep.to_string())),
                    Err(e) => {
                        let _ = pod.ns.remove(&pod.capture);
                        Err(e.to_string())
                    }
                });
            (a.at, r)
        };
        let mut started = BTreeMap::new();
        let mut results = Vec::new();
        let n = run.len();
        for (k, a) in run.into_iter().enumerate() {
            started.insert(a.at, (a.started, a.record.network_namespace.clone()));
            if k + 1 == n {
                results.push(open(a));
            } else if self.pool.jobs.send(Box::new(move || open(a))).is_err() {
                self.log.error("the worker pool is gone");
            }
        }
        while results.len() < n {
            match self.pool.done.recv_timeout(Duration::from_secs(120)) {
                Ok(r) => results.push(r),
                Err(_) => break,
            }
        }
        results.sort_by_key(|(at, _)| *at);
        for (at, opened) in results {
            let Some((started, netns)) = started.remove(&at) else {
                continue;
            };
            replies[at] = Some(match opened {
                Ok((pod, report)) => {
                    self.pods.insert(netns.clone(), pod);
                    self.added(&netns, started, report)
                }
                Err(e) => self.add_failed(&netns, &e),
            });
        }
        for (at, (_, netns)) in started {
            replies[at] = Some(self.add_failed(&netns, "no worker answered"));
        }
    }

    fn added(&mut self, netns: &Path, started: Instant, report: String) -> Value {
        self.persist(netns);
        let mut m = self.metrics();
        m.applies += 1;
        m.apply_seconds.observe(started.elapsed());
        m.pods = self.pods.len() as u64;
        drop(m);
        self.log
            .log(&pod_event(Level::Info, "added", netns).field("report", report.as_str()));
        json!({"ok": true, "report": report})
    }

    fn add_failed(&mut self, netns: &Path, e: &str) -> Value {
        *self.metrics().errors.entry("add").or_insert(0) += 1;
        self.log
            .log(&pod_event(Level::Error, "add failed", netns).field("error", e));
        protocol::error(e)
    }

    fn handle(&mut self, command: Result<Command, String>) -> Value {
        match command {
            Err(e) => protocol::error(&e),
            Ok(Command::Add {
                netns,
                desired,
                container_id,
            }) => self.add(netns, desired, container_id),
            Ok(Command::Remove(netns)) => self.remove(&netns),
            Ok(Command::Check(netns)) => self.check(&netns),
            Ok(Command::Status(netns)) => self.status(netns.as_deref()),
            Ok(Command::List) => {
                json!({"ok": true, "pods": self.pods.keys().collect::<Vec<_>>()})
            }
        }
    }

    fn add(&mut self, netns: PathBuf, desired: Desired, container_id: Option<String>) -> Value {
        let started = Instant::now();
        let capture = match desired.capture() {
            Ok(c) => c,
            Err(e) => return protocol::error(&e.to_string()),
        };
        let result = match self.pods.get_mut(&netns) {
            Some(pod) if identity(&netns) == Some(pod.identity) => {
                let r = pod.ns.install(&capture);
                if r.is_ok() {
                    pod.capture = capture;
                    pod.record.desired = desired;
                    pod.record.container_id = container_id;
                    pod.dirty = None;
                }
                r.map(|rep| rep.to_string()).map_err(|e| e.to_string())
            }
            _ => {
                // New, or a namespace that replaced a forgotten one at the same path.
                self.pods.remove(&netns);
                let record = Record {
                    network_namespace: netns.clone(),
                    desired,
                    container_id,
                    installed_at: now(),
                };
                match open_pod(record, capture) {
                    Ok(pod) => match pod.ns.install(&pod.capture) {
                        Ok(rep) => {
                            self.pods.insert(netns.clone(), pod);
                            Ok(rep.to_string())
                        }
                        Err(e) => {
                            let _ = pod.ns.remove(&pod.capture);
                            Err(e.to_string())
                        }
                    },
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(report) => self.added(&netns, started, report),
            Err(e) => self.add_failed(&netns, &e),
        }
    }

    fn remove(&mut self, netns: &Path) -> Value {
        let removed = match self.pods.remove(netns) {
            Some(pod) => pod.ns.remove(&pod.capture).map(|r| r.tables),
            // Not ours (or forgotten): remove nftmesh's tables if the namespace is there.
            None if netns.exists() => Namespace::open(netns).and_then(|ns| {
                let any = Capture::new(&nftmesh::CaptureConfig::sidecar())?;
                ns.remove(&any).map(|r| r.tables)
            }),
            None => Ok(0),
        };
        self.persist(netns);
        self.metrics().pods = self.pods.len() as u64;
        match removed {
            Ok(tables) => {
                self.log
                    .log(&pod_event(Level::Info, "removed", netns).field("tables", tables));
                json!({"ok": true, "tables": tables})
            }
            Err(e) => {
                self.log.log(
                    &pod_event(Level::Error, "remove failed", netns).field("error", e.to_string()),
                );
                *self.metrics().errors.entry("remove").or_insert(0) += 1;
                protocol::error(&e.to_string())
            }
        }
    }

    fn check(&mut self, netns: &Path) -> Value {
        let Some(pod) = self.pods.get_mut(netns) else {
            return protocol::error(&format!("{} is not registered", netns.display()));
        };
        match pod.ns.check(&pod.capture) {
            Ok(d) if d.is_empty() => {
                pod.last_check = Some(now());
                json!({"ok": true})
            }
            Ok(d) => json!({
                "ok": false,
                "error": "the capture differs from the desired one",
                "differences": d.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
            }),
            Err(e) => protocol::error(&e.to_string()),
        }
    }

    fn status(&self, netns: Option<&Path>) -> Value {
        let pods: Vec<Value> = self
            .pods
            .iter()
            .filter(|(p, _)| netns.is_none_or(|n| n == p.as_path()))
            .map(|(p, pod)| {
                json!({
                    "network_namespace": p,
                    "kind": pod.record.desired.kind(),
                    "desired": pod.record.desired,
                    "container_id": pod.record.container_id,
                    "installed_at": pod.record.installed_at,
                    "last_check": pod.last_check,
                    "repairs": pod.repair_count,
                    "recent_repairs": pod.repairs.iter().map(|r| json!({"at": r.at, "cause": r.cause, "summary": r.summary})).collect::<Vec<_>>(),
                    "last_error": pod.last_error,
                })
            })
            .collect();
        if let (Some(n), true) = (netns, pods.is_empty()) {
            return protocol::error(&format!("{} is not registered", n.display()));
        }
        json!({"ok": true, "pods": pods})
    }

    /// Read a pod's notifications; mark it when another process changed one of its tables.
    fn drain(&mut self, path: &Path) {
        let Some(pod) = self.pods.get_mut(path) else {
            return;
        };
        match pod.monitor.drain(&self.own) {
            Ok(changes) => {
                // Any of nftmesh's tables (the capture's, or one it must not have).
                let owned = nftmesh::owned_tables();
                let touched: Vec<&String> = changes
                    .foreign_tables
                    .iter()
                    .filter(|t| owned.iter().any(|(_, o)| o == *t))
                    .collect();
                let why = if changes.overrun {
                    Some("notifications lost: full check".to_string())
                } else if !touched.is_empty() {
                    Some(format!(
                        "changed by another process: table {}",
                        touched
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                } else {
                    None
                };
                if let (Some(why), None) = (why, &pod.dirty) {
                    pod.dirty = Some((Instant::now(), why));
                }
            }
            Err(e) => pod.last_error = Some(format!("notifications: {e}")),
        }
    }

    /// Check one pod; reinstall when it differs. `kind` counts the repair, `why` says it.
    fn repair(&mut self, path: &Path, kind: &'static str, why: String) {
        let Some(pod) = self.pods.get_mut(path) else {
            return;
        };
        let since = pod
            .dirty
            .take()
            .map(|(t, _)| t)
            .unwrap_or_else(Instant::now);
        let drift = match pod.ns.check(&pod.capture) {
            Ok(d) => d,
            Err(e) => {
                pod.last_error = Some(format!("check: {e}"));
                self.log.log(
                    &pod_event(Level::Error, "check failed", path)
                        .field("cause", kind)
                        .field("error", e.to_string()),
                );
                *self.metrics().errors.entry("check").or_insert(0) += 1;
                return;
            }
        };
        pod.last_check = Some(now());
        if drift.is_empty() {
            return;
        }
        let what = drift
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let summary = Summary::of(&drift).to_string();
        match pod.ns.install(&pod.capture) {
            Ok(_) => {
                // One line per repair; each difference on a line of its own at debug.
                self.log.log(
                    &pod_event(Level::Info, "repaired", path)
                        .field("cause", kind)
                        .field("why", why.as_str())
                        .field("differences", summary.as_str()),
                );
                if self.log.enabled(Level::Debug) {
                    for d in &drift {
                        self.log.log(
                            &pod_event(Level::Debug, "repaired a difference", path)
                                .field("difference", d.to_string()),
                        );
                    }
                }
                let cause = format!("{kind}: {why}: {what}");
                pod.repairs.push(Repair {
                    at: now(),
                    cause,
                    summary,
                });
                if pod.repairs.len() > REPAIR_LOG {
                    pod.repairs.remove(0);
                }
                pod.repair_count += 1;
                pod.last_error = None;
                let mut m = self.metrics();
                *m.repairs.entry(kind).or_insert(0) += 1;
                m.repair_seconds.observe(since.elapsed());
            }
            Err(e) => {
                pod.last_error = Some(format!("repair: {e}"));
                self.log.log(
                    &pod_event(Level::Error, "repair failed", path)
                        .field("cause", kind)
                        .field("why", why.as_str())
                        .field("differences", summary.as_str())
                        .field("error", e.to_string()),
                );
                *self.metrics().errors.entry("repair").or_insert(0) += 1;
            }
        }
    }

    /// Check every pod; forget those whose namespace is gone.
    fn resync(&mut self) {
        let paths: Vec<PathBuf> = self.pods.keys().cloned().collect();
        for p in paths {
            if identity(&p) != self.pods.get(&p).map(|pod| pod.identity) {
                self.pods.remove(&p);
                self.log.log(
                    &pod_event(Level::Info, "forgot", &p).field("why", "the namespace is gone"),
                );
                self.persist(&p);
                let mut m = self.metrics();
                m.forgotten += 1;
                m.pods = self.pods.len() as u64;
                continue;
            }
            self.repair(&p, "resync", "periodic check".into());
        }
    }
}

/// Open a pod's handle and monitor in one namespace switch (before anything is installed, so
/// no commit after it is missed).
fn open_pod(record: Record, capture: Capture) -> Result<Pod, String> {
    let path = record.network_namespace.clone();
    let identity =
        identity(&path).ok_or_else(|| format!("{}: no such namespace", path.display()))?;
    let (ns, monitor) = Namespace::open_with(&path, Monitor::open).map_err(|e| e.to_string())?;
    let monitor = monitor.map_err(|e| e.to_string())?;
    Ok(Pod {
        record,
        ns,
        capture,
        monitor,
        identity,
        last_check: None,
        repairs: Vec::new(),
        repair_count: 0,
        last_error: None,
        dirty: None,
    })
}

/// The API socket: a stale socket file replaced, created with mode 0600.
fn bind(path: &Path) -> Result<UnixListener, AgentError> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(setup(
                format!("socket {}", path.display()),
                "exists and is not a socket",
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(setup(
                format!("socket {}", path.display()),
                "another agent is listening there",
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let l = bound.map_err(|e| setup(format!("socket {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| setup(format!("socket {}", path.display()), e))?;
    l.set_nonblocking(true)
        .map_err(|e| setup(format!("socket {}", path.display()), e))?;
    Ok(l)
}

/// Write one reply line (blocking, bounded in time); a client that went away is dropped.
fn reply(stream: &UnixStream, v: &Value) {
    let mut s = stream;
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(format!("{v}\n").as_bytes());
    let _ = stream.set_nonblocking(true);
}
