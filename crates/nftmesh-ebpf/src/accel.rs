//! sk_msg acceleration of captured connections (issue 27 item 5), off by default: see
//! [`Acceleration`].

use crate::error::EbpfError;
use crate::pins::{self, Bpffs, CgroupLock};
use crate::sys;
use aya::maps::{Map, MapData, SockHash};
use aya::programs::links::ProgAttachLink;
use aya::programs::{SkMsg, SockOps};
use aya::{Ebpf, EbpfLoader, Pod};
use nftmesh_model::config::CaptureConfig;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The object `build.rs` compiled from `bpf/accel.c`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/accel.bpf.o"));

const SOCKOPS: &str = "nftmesh_accel_sockops";
const MSG: &str = "nftmesh_accel_msg";
const MAP: &str = "accel_socks";
/// `BPF_CGROUP_SOCK_OPS` (`enum bpf_attach_type`).
const SOCK_OPS_ATTACH: u32 = 3;
/// The subdirectory of the capture's pin directory.
const SUBDIR: &str = "accel";
const LINK_PIN: &str = "link_sockops";
const PROG_PIN: &str = "prog_sk_msg";

/// `struct accel_key` of `bpf/accel.h`: addresses as IPv6 (IPv4 as `::ffff:a.b.c.d`) in
/// network order, ports in host order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RawKey {
    local: [u32; 4],
    remote: [u32; 4],
    local_port: u16,
    remote_port: u16,
}

const _: () = assert!(std::mem::size_of::<RawKey>() == 36);

// SAFETY: a `repr(C)` struct of integers with no implicit padding (its size is asserted
// above: 32 + 2 + 2), so every bit pattern is a valid value and its bytes can be copied to and
// from the kernel as they are.
unsafe impl Pod for RawKey {}

/// The acceleration loaded for one capture's proxy port, not attached yet: the programs of
/// `bpf/accel.c`, verified, with the `sk_msg` program attached to its SOCKHASH. Off unless a
/// caller attaches or installs it.
///
/// # What it does
///
/// With the capture on, an app's connection to a remote service is two TCP connections on
/// loopback: the app's socket to the proxy port (`127.0.0.1:15001` or `[::1]:15001`) and the
/// proxy's own connection out. The programs of `bpf/accel.c` shorten the first one: a
/// `sockops` program puts both of its ends (the app's socket and the proxy's accepted socket)
/// into a SOCKHASH keyed by their 4-tuple, and an `sk_msg` program attached to that map hands
/// each end's sends straight to the other end's receive queue (`bpf_msg_redirect_hash` with
/// `BPF_F_INGRESS`), skipping TCP/IP and loopback. Nothing else is touched: a socket is only
/// put into the map when it is one end of a connection to the proxy port on loopback, the
/// `sk_msg` program runs only for sockets in the map, and a send whose peer is not in the map
/// goes the normal way.
///
/// # Why it is off by default: the half-close bug
///
/// On this machine's kernel (6.18), a socket the `sk_msg` program redirects into breaks
/// half-close: after `shutdown(SHUT_WR)`, a **blocking** `recv()` on the app's socket can
/// return `EAGAIN` (Rust: `ErrorKind::WouldBlock`) within milliseconds instead of waiting for
/// the proxy's answer. A request/response client that half-closes after its request
/// (HTTP/1.0 style, `nc -N`) then sees an error instead of the response. Nothing in this crate
/// can work around it for the app, so no capture turns acceleration on: only a caller that
/// asks for it ([`Acceleration::attach`], [`Acceleration::install`]) gets it.
///
/// How it shows: `tests/kernel_accel.rs` (the proxy answering 200 ms after the app's FIN) saw
/// it 20 of 20 times, `recv()` returning 0.5 to 8 ms after the call, and 0 of 20 with the
/// capture alone; it asserts that the bug is there, so a kernel that fixes it makes that test
/// fail and say so. It depends on timing: in `benches/ebpf_vs_nftables.rs` (client and stand-in on one
/// CPU, the answer sent at once) no read returned early. Our reading of the kernel's
/// `tcp_bpf_recvmsg`, not traced: it waits for data in the socket's queues, and a wake-up that
/// finds both still empty ends the wait with `EAGAIN`, as if the socket were non-blocking;
/// which wake-up it is here we did not establish.
///
/// # Lifetime
///
/// [`Acceleration::attach`] holds the `sockops` link by its file descriptor, for the life of the
/// returned [`Accelerated`]. [`Acceleration::install`] pins everything under `accel/` in the
/// capture's directory (`<bpffs>/nftmesh/<cgroup inode>/accel/`): the `sockops` link
/// (`link_sockops`), the SOCKHASH (`accel_socks`) and the `sk_msg` program (`prog_sk_msg`).
/// The `sk_msg` program is attached to the map, not to the cgroup, and stays attached while the
/// map has a pin or an open file descriptor. [`Accelerated::remove`] detaches the `sockops`
/// link and removes the pins; it must come before the capture's own
/// [`Attachment::remove`](crate::Attachment::remove), which unlinks files only and so fails
/// on the `accel/` directory. Connections accelerated before a removal stay accelerated until
/// they close (the kernel drops a closing socket from the map): they are not taken out of the
/// map at removal, since, as we read the kernel, bytes redirected into a socket's queue and
/// not read yet are dropped with the socket's sk_msg state.
pub struct Acceleration {
    proxy_port: u16,
    bpf: Ebpf,
    socks: SockHash<MapData, RawKey>,
}

impl Acceleration {
    /// Load the acceleration of connections to `proxy_port` (the capture's
    /// `CaptureConfig::proxy_port`, 15001 for Istio) on 127.0.0.1, `::1` and
    /// `::ffff:127.0.0.1`. Port 0 accelerates nothing.
    pub fn new(proxy_port: u16) -> Result<Self, EbpfError> {
        let (bpf, socks) = load(proxy_port, None)?;
        Ok(Acceleration {
            proxy_port,
            bpf,
            socks,
        })
    }

    /// [`Acceleration::new`] for the proxy port of `cfg`.
    pub fn for_capture(cfg: &CaptureConfig) -> Result<Self, EbpfError> {
        Self::new(cfg.proxy_port)
    }

    /// The proxy port whose connections it accelerates.
    pub fn proxy_port(&self) -> u16 {
        self.proxy_port
    }

    /// Attach the `sockops` program to the cgroup v2 directory `cgroup_dir` for as long as the
    /// returned [`Accelerated`] lives (a new BPF link beside the programs there, the capture's
    /// among them): connections established from then on are accelerated. Not pinned; for
    /// that, see [`Acceleration::install`].
    pub fn attach(&mut self, cgroup_dir: &Path) -> Result<Accelerated, EbpfError> {
        let cgroup = open_cgroup(cgroup_dir)?;
        // The map's user reference keeps the sk_msg program attached to it: the handle holds
        // one, so the acceleration works for its life even if `self` goes first.
        let map = self
            .socks
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| EbpfError::Pin {
                path: cgroup_dir.to_path_buf(),
                action: "duplicate the map's file descriptor for",
                source,
            })?;
        let link = sys::link_create(sockops_fd(&mut self.bpf)?, cgroup.as_fd(), SOCK_OPS_ATTACH)
            .map_err(|source| link_err("create", None, source))?;
        Ok(Accelerated {
            cgroup: cgroup_dir.to_path_buf(),
            kind: Kind::Held { link, _map: map },
        })
    }

    /// Install the acceleration on the cgroup v2 directory `cgroup_dir`, pinned in `bpffs`
    /// under `accel/` in the directory of the capture installed there (which must exist:
    /// [`EbpfCapture::install`](crate::EbpfCapture::install) first), so that it outlives this
    /// process, until [`Accelerated::remove`]. Installing again replaces the programs in place
    /// (the `sockops` link gets its new program in one step) and keeps the map, with the
    /// connections in it.
    ///
    /// The programs are loaded again here, over the pinned map; from then on
    /// [`Acceleration::sockets`] reads that one.
    pub fn install(&mut self, bpffs: &Bpffs, cgroup_dir: &Path) -> Result<Accelerated, EbpfError> {
        let capture_dir = bpffs.dir_of(cgroup_dir)?;
        // Held to the end: no install or removal of this cgroup's capture interleaves.
        let _lock = CgroupLock::take(cgroup_dir)?;
        if !capture_dir.is_dir() {
            return Err(EbpfError::Pin {
                path: capture_dir,
                action: "find the capture to accelerate in",
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let cgroup = open_cgroup(cgroup_dir)?;
        let dir = capture_dir.join(SUBDIR);
        let fresh = !dir.join(LINK_PIN).exists();
        pins::create_dir(&dir)?;
        let accelerated = Accelerated {
            cgroup: cgroup_dir.to_path_buf(),
            kind: Kind::Pinned { dir: dir.clone() },
        };
        match self.install_in(&cgroup, &dir) {
            Ok(()) => Ok(accelerated),
            Err(e) => {
                // A first install leaves nothing behind; a failed replace leaves the old
                // programs working.
                if fresh {
                    let _ = accelerated.remove_pins();
                }
                Err(e)
            }
        }
    }

    fn install_in(&mut self, cgroup: &File, dir: &Path) -> Result<(), EbpfError> {
        let (mut bpf, socks) = load(self.proxy_port, Some(&dir.join(MAP)))?;
        let prog_pin = dir.join(PROG_PIN);
        pins::unlink(&prog_pin)?;
        let msg = msg_program(&mut bpf)?;
        let fd = msg.fd().map_err(|source| EbpfError::Program {
            program: MSG,
            source,
        })?;
        sys::obj_pin(fd.as_fd(), &prog_pin).map_err(|source| EbpfError::Pin {
            path: prog_pin.clone(),
            action: "pin",
            source,
        })?;
        let link_pin = dir.join(LINK_PIN);
        let prog = sockops_fd(&mut bpf)?;
        if link_pin.exists() {
            let link =
                sys::obj_get(&link_pin).map_err(|e| link_err("open", Some(link_pin.clone()), e))?;
            sys::link_update(link.as_fd(), prog)
                .map_err(|e| link_err("update", Some(link_pin.clone()), e))?;
        } else {
            let link = sys::link_create(prog, cgroup.as_fd(), SOCK_OPS_ATTACH)
                .map_err(|e| link_err("create", Some(link_pin.clone()), e))?;
            // The pin holds the link from here on; our file descriptor closes with `link`.
            sys::obj_pin(link.as_fd(), &link_pin)
                .map_err(|e| link_err("pin", Some(link_pin.clone()), e))?;
        }
        self.bpf = bpf;
        self.socks = socks;
        Ok(())
    }

    /// How many sockets are accelerated now (two per connection, one when only one end is in
    /// the cgroup): the entries of its SOCKHASH.
    pub fn sockets(&self) -> Result<usize, EbpfError> {
        count(&self.socks)
    }
}

impl std::fmt::Debug for Acceleration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceleration")
            .field("proxy_port", &self.proxy_port)
            .field("bpf", &self.bpf)
            .finish_non_exhaustive()
    }
}

/// The acceleration attached to one cgroup: pinned in bpffs ([`Acceleration::install`], or
/// [`Accelerated::open`] from any process), where dropping the handle changes nothing, or held
/// by this handle alone ([`Acceleration::attach`]), detached when it is dropped.
#[derive(Debug)]
pub struct Accelerated {
    cgroup: PathBuf,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// Pinned in `dir` (`<capture dir>/accel`).
    Pinned { dir: PathBuf },
    /// The `sockops` link's only file descriptor, and one of the SOCKHASH's (which keeps the
    /// `sk_msg` program attached to it).
    Held { link: OwnedFd, _map: OwnedFd },
}

impl Accelerated {
    /// The acceleration pinned in `bpffs` for the cgroup v2 directory `cgroup_dir`, by
    /// whichever process installed it; `None` when there is none.
    pub fn open(bpffs: &Bpffs, cgroup_dir: &Path) -> Result<Option<Self>, EbpfError> {
        let dir = bpffs.dir_of(cgroup_dir)?.join(SUBDIR);
        Ok(dir.exists().then(|| Accelerated {
            cgroup: cgroup_dir.to_path_buf(),
            kind: Kind::Pinned { dir },
        }))
    }

    /// The cgroup directory its `sockops` program is attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The bpffs directory holding its link, map and program, if it is pinned.
    pub fn pin_dir(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Pinned { dir } => Some(dir),
            Kind::Held { .. } => None,
        }
    }

    /// How many sockets the pinned map holds now; `None` for an acceleration held by this
    /// handle (its [`Acceleration::sockets`] says).
    pub fn sockets(&self) -> Result<Option<usize>, EbpfError> {
        let Kind::Pinned { dir } = &self.kind else {
            return Ok(None);
        };
        let map_err = |source| EbpfError::Map { map: MAP, source };
        let data = MapData::from_pin(dir.join(MAP)).map_err(map_err)?;
        let map = Map::from_map_data(data).map_err(map_err)?;
        let socks = SockHash::<MapData, RawKey>::try_from(map).map_err(map_err)?;
        count(&socks).map(Some)
    }

    /// Detach the `sockops` program (no connection is accelerated from now on) and remove the
    /// pins and the `accel/` directory. Connections accelerated before stay so until they close
    /// (see [`Acceleration`], *Lifetime*). Everything is attempted even if one step fails;
    /// the first error is returned.
    pub fn remove(self) -> Result<(), EbpfError> {
        if matches!(self.kind, Kind::Held { .. }) {
            return self.remove_pins();
        }
        // A cgroup already gone has no lock to take (and no installer to wait for).
        let _lock = CgroupLock::take_unless_gone(&self.cgroup)?;
        self.remove_pins()
    }

    /// [`Accelerated::remove`] without the cgroup's lock (the caller holds it, or there is
    /// none: a handle that is not pinned).
    fn remove_pins(self) -> Result<(), EbpfError> {
        let dir = match self.kind {
            Kind::Held { link, .. } => {
                return sys::link_detach(link.as_fd()).map_err(|e| link_err("detach", None, e))
            }
            Kind::Pinned { dir } => dir,
        };
        let link_pin = dir.join(LINK_PIN);
        let detached = match sys::obj_get(&link_pin) {
            Ok(link) => sys::link_detach(link.as_fd())
                .map_err(|e| link_err("detach", Some(link_pin.clone()), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(link_err("open", Some(link_pin.clone()), e)),
        };
        let mut results = vec![detached];
        for name in [LINK_PIN, PROG_PIN, MAP] {
            results.push(pins::unlink(&dir.join(name)));
        }
        results.push(match std::fs::remove_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(EbpfError::Pin {
                path: dir.clone(),
                action: "remove",
                source: e,
            }),
            _ => Ok(()),
        });
        results.into_iter().collect()
    }
}

/// Load `bpf/accel.c` for `proxy_port`, its map pinned at `pin` (created and pinned there if
/// absent), and attach the `sk_msg` program to the map. The map, taken out of the object.
fn load(
    proxy_port: u16,
    pin: Option<&Path>,
) -> Result<(Ebpf, SockHash<MapData, RawKey>), EbpfError> {
    let mut loader = EbpfLoader::new();
    loader.override_global("proxy_port", &proxy_port, true);
    if let Some(path) = pin {
        loader.map_pin_path(MAP, path);
    }
    let mut bpf = loader.load(OBJECT).map_err(EbpfError::Object)?;
    let map = bpf.take_map(MAP).ok_or(EbpfError::Missing {
        kind: "map",
        name: MAP,
    })?;
    let socks = SockHash::<MapData, RawKey>::try_from(map)
        .map_err(|source| EbpfError::Map { map: MAP, source })?;
    let program_err = |program| move |source| EbpfError::Program { program, source };
    sockops(&mut bpf)?.load().map_err(program_err(SOCKOPS))?;
    let msg = msg_program(&mut bpf)?;
    msg.load().map_err(program_err(MSG))?;
    let link = msg.attach(socks.fd()).map_err(program_err(MSG))?;
    let link = msg.take_link(link).map_err(program_err(MSG))?;
    // The map holds the program from here on, while it has a pin or an open file descriptor;
    // aya's own handle would detach it when dropped, the bare attachment does not.
    let _attached: ProgAttachLink = link.into();
    Ok((bpf, socks))
}

fn sockops(bpf: &mut Ebpf) -> Result<&mut SockOps, EbpfError> {
    let program = bpf.program_mut(SOCKOPS).ok_or(EbpfError::Missing {
        kind: "program",
        name: SOCKOPS,
    })?;
    program.try_into().map_err(|source| EbpfError::Program {
        program: SOCKOPS,
        source,
    })
}

fn sockops_fd(bpf: &mut Ebpf) -> Result<std::os::fd::BorrowedFd<'_>, EbpfError> {
    let fd = sockops(bpf)?.fd().map_err(|source| EbpfError::Program {
        program: SOCKOPS,
        source,
    })?;
    Ok(fd.as_fd())
}

fn msg_program(bpf: &mut Ebpf) -> Result<&mut SkMsg, EbpfError> {
    let program = bpf.program_mut(MSG).ok_or(EbpfError::Missing {
        kind: "program",
        name: MSG,
    })?;
    program.try_into().map_err(|source| EbpfError::Program {
        program: MSG,
        source,
    })
}

fn count(socks: &SockHash<MapData, RawKey>) -> Result<usize, EbpfError> {
    socks.keys().try_fold(0, |n, k| {
        k.map(|_| n + 1)
            .map_err(|source| EbpfError::Map { map: MAP, source })
    })
}

fn link_err(action: &'static str, path: Option<PathBuf>, source: std::io::Error) -> EbpfError {
    EbpfError::Link {
        program: SOCKOPS,
        path,
        action,
        source,
    }
}

fn open_cgroup(dir: &Path) -> Result<File, EbpfError> {
    File::open(dir).map_err(|source| EbpfError::Cgroup {
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_mirrors_struct_accel_key() {
        // struct accel_key: two __u32[4], then two __u16 (bpf/accel.h).
        assert_eq!(std::mem::size_of::<RawKey>(), 36);
        assert_eq!(std::mem::offset_of!(RawKey, remote), 16);
        assert_eq!(std::mem::offset_of!(RawKey, local_port), 32);
        assert_eq!(std::mem::offset_of!(RawKey, remote_port), 34);
    }
}
