//! One turn's wait: every descriptor the loop watches polled at once, and what was ready.

use super::*;

/// What one `poll` found ready.
pub(super) struct Ready {
    /// SIGINT or SIGTERM.
    pub(super) stop: bool,
    pub(super) accept: bool,
    /// A worker finished an add.
    pub(super) workers: bool,
    pub(super) clients: Vec<u64>,
    pub(super) pods: Vec<NetnsId>,
}

impl Agent {
    /// Poll everything; what is ready.
    pub(super) fn wait(&mut self, wait: Duration) -> Result<Ready, AgentError> {
        let timeout = PollTimeout::try_from(wait.as_millis().min(60_000) as i32 + 1)
            .unwrap_or(PollTimeout::MAX);
        let listening = self.accept_paused_until.is_none_or(|t| Instant::now() >= t);
        let revents: Vec<bool> = {
            let mut fds: Vec<PollFd> = Vec::with_capacity(3 + self.clients.len() + self.pods.len());
            fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
            let accept = if listening {
                PollFlags::POLLIN
            } else {
                PollFlags::empty()
            };
            fds.push(PollFd::new(self.listener.as_fd(), accept));
            fds.push(PollFd::new(self.pool.wake.as_fd(), PollFlags::POLLIN));
            for c in &self.clients {
                let mut ev = PollFlags::empty();
                if !c.eof && c.out.len() < OUTPUT_HIGH {
                    ev |= PollFlags::POLLIN;
                }
                if !c.out.is_empty() {
                    ev |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(c.stream.as_fd(), ev));
            }
            for (_, pod) in self.pods.iter() {
                fds.push(PollFd::new(pod.kernel.monitor.as_fd(), PollFlags::POLLIN));
                if let Some(r) = &pod.kernel.routes {
                    fds.push(PollFd::new(r.as_fd(), PollFlags::POLLIN));
                }
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
        // Ready to read, or with whole requests left over from an earlier turn.
        let clients = (0..n)
            .filter(|i| {
                let c = &self.clients[*i];
                revents[3 + i] || (c.out.len() < OUTPUT_HIGH && c.buf.contains(&b'\n'))
            })
            .map(|i| self.clients[i].id)
            .collect();
        // The map is unchanged since the descriptors were listed: same order, one or two
        // descriptors per pod (its nf_tables monitor, its routing monitor if it has one).
        let mut pods = Vec::new();
        let mut at = 3 + n;
        for (id, pod) in self.pods.iter() {
            let k = 1 + usize::from(pod.kernel.routes.is_some());
            if revents[at..at + k].iter().any(|r| *r) {
                pods.push(id);
            }
            at += k;
        }
        let mut stop = false;
        if revents[0] {
            while let Ok(Some(sig)) = self.signals.read_signal() {
                if sig.ssi_signo == Signal::SIGHUP as u32 {
                    self.log
                        .info("SIGHUP ignored: the agent has no configuration to reload");
                } else {
                    stop = true;
                }
            }
        }
        if revents[2] {
            let mut sink = [0u8; 256];
            while matches!((&self.pool.wake).read(&mut sink), Ok(n) if n > 0) {}
        }
        Ok(Ready {
            stop,
            accept: listening && revents[1],
            workers: revents[2],
            clients,
            pods,
        })
    }
}
