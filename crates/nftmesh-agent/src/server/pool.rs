//! The worker pool: threads that do the agent's netlink and file work, each result sent back
//! with a byte on a wake-up socket the loop polls.

use super::*;

/// A few long-lived worker threads that open and install new pods in parallel (the kernel
/// commits each pod's transaction in the committing thread, and pods do not share a commit
/// lock); [`WORKERS_PER_CPU`] per CPU, as a worker spends most of an add blocked in `fsync`
/// and netlink replies. Each pod's commits go through its own handle, whose netlink port id tells the
/// change monitor they are the agent's.
pub(super) struct Pool {
    pub(super) jobs: std::sync::mpsc::Sender<Job>,
    pub(super) done: std::sync::mpsc::Receiver<Done>,
    /// Readable when a result is waiting in `done` (the workers write a byte).
    pub(super) wake: UnixStream,
}

impl Pool {
    pub(super) fn new(workers: usize) -> Result<Self, AgentError> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let (done_tx, done) = std::sync::mpsc::channel();
        let (wake, waker) = UnixStream::pair().map_err(|e| setup("worker wake-up", e))?;
        for s in [&wake, &waker] {
            s.set_nonblocking(true)
                .map_err(|e| setup("worker wake-up", e))?;
        }
        // One descriptor shared by every worker: the pool costs no descriptor per worker.
        let waker = Arc::new(waker);
        for i in 0..workers {
            let (rx, done_tx, waker) = (rx.clone(), done_tx.clone(), waker.clone());
            std::thread::Builder::new()
                .name(format!("nftmesh-agent-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        if done_tx.send(job()).is_err() {
                            return;
                        }
                        // A full socket already wakes the loop: a failed write is fine.
                        let _ = (&*waker).write(&[1]);
                    }
                })
                .map_err(|e| setup("worker thread", e))?;
        }
        Ok(Pool { jobs, done, wake })
    }
}
