//! The agent's clients: accepting (with peer credentials, a client limit and a rest after
//! running out of descriptors), reading requests under backpressure, and writing replies
//! without blocking, in each client's request order.

use super::*;

impl Agent {
    pub(super) fn accept(&mut self) {
        for _ in 0..64 {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors: rest instead of spinning on a listener that stays
                    // readable; the pending connections wait in the backlog.
                    use nix::errno::Errno;
                    let errno = e.raw_os_error().map(Errno::from_raw);
                    if matches!(errno, Some(Errno::EMFILE | Errno::ENFILE)) {
                        self.accept_paused_until = Some(Instant::now() + EMFILE_PAUSE);
                        self.log.log(
                            &Event::new(Level::Warn, "out of descriptors: accept paused")
                                .field("error", e.to_string()),
                        );
                        *self.metrics().errors.entry("accept").or_insert(0) += 1;
                    }
                    return;
                }
            };
            self.accept_paused_until = None;
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
                // One best-effort write of a short line: never waits.
                let _ = stream.set_nonblocking(true);
                let kind = if why.starts_with("busy") {
                    ErrorKind::Busy
                } else {
                    ErrorKind::Refused
                };
                let _ = (&stream).write(format!("{}\n", protocol::error(kind, &why)).as_bytes());
                continue;
            }
            if stream.set_nonblocking(true).is_ok() {
                let id = self.next_client;
                self.next_client += 1;
                self.clients.push(Client {
                    id,
                    stream,
                    buf: Vec::new(),
                    out: Vec::new(),
                    next_seq: 0,
                    next_out: 0,
                    ready: BTreeMap::new(),
                    last_active: Instant::now(),
                    eof: false,
                });
            }
        }
    }

    pub(super) fn client_mut(&mut self, id: u64) -> Option<&mut Client> {
        self.clients.iter_mut().find(|c| c.id == id)
    }

    /// Read what client `id` sent into its buffer, unless its replies pile up (an oversized
    /// line is answered with an error and ends the client).
    pub(super) fn read_client(&mut self, id: u64) {
        let mut chunk = [0u8; 16 * 1024];
        let Some(c) = self.client_mut(id) else {
            return;
        };
        if c.out.len() >= OUTPUT_HIGH {
            return;
        }
        while !c.eof && c.buf.len() <= protocol::MAX_REQUEST {
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    c.eof = true;
                    break;
                }
                Ok(n) => {
                    c.buf.extend_from_slice(&chunk[..n]);
                    c.last_active = Instant::now();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    c.eof = true;
                    break;
                }
            }
        }
        if c.buf.len() > protocol::MAX_REQUEST && !c.buf.contains(&b'\n') {
            c.buf.clear();
            c.eof = true;
            let seq = c.next_seq;
            c.next_seq += 1;
            let e = format!("request line over {} bytes", protocol::MAX_REQUEST);
            let target = Target {
                client: id,
                seq,
                id: None,
            };
            self.answer(target, protocol::error(ErrorKind::Invalid, &e));
        }
    }

    /// The next whole request line of client `id`, if it has one and may be served now (its
    /// unwritten replies are below [`OUTPUT_HIGH`]).
    pub(super) fn next_line(&mut self, id: u64) -> Option<Vec<u8>> {
        let c = self.client_mut(id)?;
        if c.out.len() >= OUTPUT_HIGH {
            return None;
        }
        let nl = c.buf.iter().position(|b| *b == b'\n')?;
        let mut line: Vec<u8> = c.buf.drain(..=nl).collect();
        line.pop();
        Some(line)
    }

    /// Serve the ready clients: their whole requests in order, at most
    /// [`REQUESTS_PER_TURN`] each and none once its replies pile up; adds of new pods go to
    /// the workers and are answered when they finish, everything else at once.
    pub(super) fn serve_clients(&mut self, ready: Vec<u64>) {
        for id in ready {
            self.read_client(id);
            for _ in 0..REQUESTS_PER_TURN {
                let Some(line) = self.next_line(id) else {
                    break;
                };
                let Some(c) = self.client_mut(id) else { break };
                let (request_id, command) = protocol::parse_with_id(&line);
                let target = Target {
                    client: id,
                    seq: c.next_seq,
                    id: request_id,
                };
                c.next_seq += 1;
                self.dispatch(target, command);
            }
        }
    }

    /// Queue `reply` for `target`; replies go out in each client's request order.
    pub(super) fn answer(&mut self, target: Target, mut reply: Value) {
        let Some(c) = self.client_mut(target.client) else {
            return;
        };
        if let Some(id) = target.id {
            reply["id"] = json!(id);
        }
        c.ready.insert(target.seq, reply);
        while let Some(v) = c.ready.remove(&c.next_out) {
            c.out.extend_from_slice(format!("{v}\n").as_bytes());
            c.next_out += 1;
        }
    }

    /// Write what each client's buffer holds, without blocking; drop the clients that went
    /// away, that let more than [`MAX_OUTPUT`] pile up, that are done, or that sat idle.
    pub(super) fn flush_clients(&mut self) {
        let now = Instant::now();
        let mut dropped = 0u64;
        self.clients.retain_mut(|c| {
            while !c.out.is_empty() {
                match (&c.stream).write(&c.out) {
                    Ok(0) => return false,
                    Ok(n) => {
                        c.out.drain(..n);
                        c.last_active = now;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => return false,
                }
            }
            // Every request gets its sequence number when read and is answered in order, so a
            // request still running (on a worker, or queued behind one) is one owed.
            let owed = c.next_out < c.next_seq;
            if c.out.len() > MAX_OUTPUT {
                dropped += 1;
                return false;
            }
            if c.out.is_empty() && !owed && (c.eof || now.duration_since(c.last_active) > IDLE) {
                return false;
            }
            // Replies not read for that long: the client is gone in all but name.
            if !c.out.is_empty() && now.duration_since(c.last_active) > IDLE {
                dropped += 1;
                return false;
            }
            true
        });
        if dropped > 0 {
            self.log.log(
                &Event::new(
                    Level::Warn,
                    "dropped clients that do not read their replies",
                )
                .field("clients", dropped),
            );
            *self.metrics().errors.entry("slow_client").or_insert(0) += dropped;
        }
    }
}
