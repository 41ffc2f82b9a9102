//! What a [`Connection`](crate::Connection) talks through: a [`Transport`] sends one buffer
//! of netlink messages and receives one datagram of replies. The kernel's netfilter netlink
//! socket is one ([`NfSocket`]); a [`Recording`] wraps another and keeps every exchange;
//! [`Replay`] plays a recording back and checks that the same bytes are sent; [`FakeKernel`]
//! answers each sent buffer with a function. With the last two, reply matching, multi-part
//! and interrupted dumps, refused batches and the commit cache are tested without a kernel.

pub use crate::os::NfSocket;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

/// A netfilter netlink socket in the calling thread's network namespace, set up as a
/// [`Connection`](crate::Connection) uses it: replies waited for at most 10 s, error replies
/// without the echoed request (`NETLINK_CAP_ACK`). What it failed to set up is named in the
/// error.
pub fn kernel_socket() -> Result<NfSocket, crate::NetlinkError> {
    use crate::NetlinkError;
    let sock = NfSocket::open().map_err(|e| NetlinkError::io("socket open", e))?;
    let fd = sock.as_raw_fd();
    crate::os::set_recv_timeout(fd, crate::socket::REPLY_TIMEOUT)
        .map_err(|e| NetlinkError::io("setsockopt SO_RCVTIMEO", e))?;
    crate::os::set_int_option(fd, libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1)
        .map_err(|e| NetlinkError::io("setsockopt NETLINK_CAP_ACK", e))?;
    Ok(sock)
}

/// The bytes under a netfilter netlink conversation.
pub trait Transport: Send {
    /// Send one buffer (one request, or a whole batch); the number of bytes sent.
    fn send(&mut self, bytes: &[u8]) -> io::Result<usize>;

    /// Receive one datagram into `buf`; its length. No datagram within the reply timeout is
    /// `EAGAIN` (as a socket with `SO_RCVTIMEO` says it).
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// The netlink port id the kernel knows this end by.
    fn port_id(&self) -> u32;

    /// Make room for a batch of `send` bytes and its replies (`recv` bytes). Nothing to do
    /// where there is no socket buffer.
    fn size_buffers(&mut self, send: usize, recv: usize) -> io::Result<()> {
        let _ = (send, recv);
        Ok(())
    }

    /// The socket's descriptor, where there is one.
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}

impl Transport for NfSocket {
    fn send(&mut self, bytes: &[u8]) -> io::Result<usize> {
        NfSocket::send(self, bytes)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        NfSocket::recv(self, buf)
    }

    fn port_id(&self) -> u32 {
        NfSocket::port_id(self)
    }

    /// The forced options (need CAP_NET_ADMIN, pass the system's cap), else the capped ones.
    fn size_buffers(&mut self, send: usize, recv: usize) -> io::Result<()> {
        let fd = self.as_raw_fd();
        for (opt, force, size) in [
            (libc::SO_SNDBUF, libc::SO_SNDBUFFORCE, send),
            (libc::SO_RCVBUF, libc::SO_RCVBUFFORCE, recv),
        ] {
            let v = size.min(i32::MAX as usize) as libc::c_int;
            crate::os::set_int_option(fd, libc::SOL_SOCKET, force, v)
                .or_else(|_| crate::os::set_int_option(fd, libc::SOL_SOCKET, opt, v))?;
        }
        Ok(())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

/// One step of a conversation, as a [`Recording`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    /// A buffer sent.
    Sent(Vec<u8>),
    /// A datagram received.
    Received(Vec<u8>),
}

/// A transport that passes everything to another and keeps a copy of each exchange, in
/// order, where [`Recording::exchanges`] reads it (also after the connection moved on).
pub struct Recording<T> {
    inner: T,
    log: Arc<Mutex<Vec<Exchange>>>,
}

impl<T: Transport> Recording<T> {
    /// Record what goes through `inner`.
    pub fn new(inner: T) -> Self {
        Recording {
            inner,
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// A handle on the exchanges recorded so far (and later).
    pub fn exchanges(&self) -> Arc<Mutex<Vec<Exchange>>> {
        self.log.clone()
    }

    fn keep(&self, e: Exchange) {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(e);
    }
}

impl<T: Transport> Transport for Recording<T> {
    fn send(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.inner.send(bytes)?;
        self.keep(Exchange::Sent(bytes[..n.min(bytes.len())].to_vec()));
        Ok(n)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.recv(buf)?;
        self.keep(Exchange::Received(buf[..n.min(buf.len())].to_vec()));
        Ok(n)
    }

    fn port_id(&self) -> u32 {
        self.inner.port_id()
    }

    fn size_buffers(&mut self, send: usize, recv: usize) -> io::Result<()> {
        self.inner.size_buffers(send, recv)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        self.inner.raw_fd()
    }
}

/// A recorded conversation played back: each send must be the recorded bytes (else an
/// error naming the step and the first differing byte), each receive gets the recorded
/// datagram; past the end, a receive times out.
pub struct Replay {
    script: VecDeque<Exchange>,
    step: usize,
    port: u32,
}

impl Replay {
    /// Play `script` back, as the socket with port id `port`.
    pub fn new(script: impl IntoIterator<Item = Exchange>, port: u32) -> Self {
        Replay {
            script: script.into_iter().collect(),
            step: 0,
            port,
        }
    }

    /// The exchanges not played yet.
    pub fn left(&self) -> usize {
        self.script.len()
    }

    fn mismatch(&self, what: String) -> io::Error {
        io::Error::other(format!("replay step {}: {what}", self.step))
    }
}

impl Transport for Replay {
    fn send(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self.script.front() {
            Some(Exchange::Sent(want)) if want.as_slice() == bytes => {}
            Some(Exchange::Sent(want)) => {
                let at = want
                    .iter()
                    .zip(bytes)
                    .position(|(a, b)| a != b)
                    .unwrap_or(want.len().min(bytes.len()));
                return Err(self.mismatch(format!(
                    "sent {} bytes differing from the recorded {} at byte {at}",
                    bytes.len(),
                    want.len()
                )));
            }
            Some(Exchange::Received(_)) => {
                return Err(self.mismatch("sent where the recording received".into()))
            }
            None => return Err(self.mismatch("sent past the end of the recording".into())),
        }
        self.script.pop_front();
        self.step += 1;
        Ok(bytes.len())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.script.front() {
            Some(Exchange::Received(d)) if d.len() <= buf.len() => {
                buf[..d.len()].copy_from_slice(d);
                let n = d.len();
                self.script.pop_front();
                self.step += 1;
                Ok(n)
            }
            Some(Exchange::Received(d)) => Err(self.mismatch(format!(
                "a datagram of {} bytes for a buffer of {}",
                d.len(),
                buf.len()
            ))),
            Some(Exchange::Sent(_)) => {
                Err(self.mismatch("received where the recording sent".into()))
            }
            None => Err(io::Error::from_raw_os_error(libc::EAGAIN)),
        }
    }

    fn port_id(&self) -> u32 {
        self.port
    }
}

/// A kernel stand-in: `answer` gets each sent buffer and returns the datagrams to queue for
/// receiving (none: a receive times out, as a kernel that never answers). Every buffer sent
/// is kept ([`FakeKernel::sent`]).
pub struct FakeKernel<F> {
    answer: F,
    queue: VecDeque<Vec<u8>>,
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    port: u32,
}

impl<F: FnMut(&[u8]) -> Vec<Vec<u8>> + Send> FakeKernel<F> {
    /// A stand-in answering with `answer`, as the socket with port id `port`.
    pub fn new(port: u32, answer: F) -> Self {
        FakeKernel {
            answer,
            queue: VecDeque::new(),
            sent: Arc::new(Mutex::new(Vec::new())),
            port,
        }
    }

    /// A handle on every buffer sent so far (and later).
    pub fn sent(&self) -> Arc<Mutex<Vec<Vec<u8>>>> {
        self.sent.clone()
    }
}

impl<F: FnMut(&[u8]) -> Vec<Vec<u8>> + Send> Transport for FakeKernel<F> {
    fn send(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(bytes.to_vec());
        self.queue.extend((self.answer)(bytes));
        Ok(bytes.len())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.queue.pop_front() {
            Some(d) => {
                // A datagram longer than the buffer is cut, as the kernel cuts it.
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(io::Error::from_raw_os_error(libc::EAGAIN)),
        }
    }

    fn port_id(&self) -> u32 {
        self.port
    }
}

#[cfg(test)]
mod tests;
