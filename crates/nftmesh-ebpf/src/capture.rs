//! Loading the programs with a configuration, attaching them to a cgroup, and detaching them.

use crate::error::EbpfError;
use crate::maps;
use crate::settings::Settings;
use aya::programs::cgroup_sock_addr::CgroupSockAddrLink;
use aya::programs::cgroup_sockopt::CgroupSockoptLink;
use aya::programs::links::Link;
use aya::programs::sock_ops::SockOpsLink;
use aya::programs::{CgroupAttachMode, CgroupSockAddr, CgroupSockopt, ProgramError, SockOps};
use aya::{Ebpf, EbpfLoader};
use nftmesh_model::config::CaptureConfig;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The object `build.rs` compiled from `bpf/capture.c`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capture.bpf.o"));

/// The programs' names (their function names in `bpf/capture.c`).
const CONNECT4: &str = "nftmesh_connect4";
const SOCKOPS: &str = "nftmesh_sockops";
const GETSOCKOPT: &str = "nftmesh_getsockopt";

/// An outbound capture loaded into the kernel, not attached yet: the programs of
/// `bpf/capture.c`, verified, and their maps holding one [`CaptureConfig`]'s outbound settings.
///
/// One `EbpfCapture` serves one pod: its maps of original destinations are keyed by loopback
/// 4-tuples, which are only unique within one network namespace.
#[derive(Debug)]
pub struct EbpfCapture {
    bpf: Ebpf,
}

/// How many connections the capture is tracking, per map; for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tracked {
    /// Redirected connects not established yet (keyed by socket cookie).
    pub connecting: usize,
    /// Established redirected connections whose proxy socket is not closed yet (keyed by the
    /// 4-tuple the proxy sees).
    pub established: usize,
}

impl EbpfCapture {
    /// Check `cfg`, load the programs (the kernel's verifier runs here) and write `cfg`'s
    /// outbound settings into their maps. Settings this backend cannot apply exactly are
    /// [`EbpfError::Unsupported`]; inbound settings are ignored (inbound stays with nf_tables).
    pub fn new(cfg: &CaptureConfig) -> Result<Self, EbpfError> {
        let settings = Settings::from_config(cfg)?;
        let mut loader = EbpfLoader::new();
        for (name, size) in maps::set_sizes(&settings) {
            loader.map_max_entries(name, size);
        }
        let mut bpf = loader.load(OBJECT).map_err(EbpfError::Object)?;
        maps::write(&mut bpf, &settings)?;
        load::<CgroupSockAddr>(&mut bpf, CONNECT4, |p| p.load())?;
        load::<SockOps>(&mut bpf, SOCKOPS, |p| p.load())?;
        load::<CgroupSockopt>(&mut bpf, GETSOCKOPT, |p| p.load())?;
        Ok(EbpfCapture { bpf })
    }

    /// Attach the programs to the cgroup v2 directory `cgroup_dir` (as BPF links, beside
    /// programs others attached there): from then on the TCP connects of its processes are captured. The
    /// getsockopt and sockops programs go first and connect4 last, so no connection is
    /// redirected without its original destination being answerable.
    ///
    /// The capture lasts as long as the returned [`Attachment`]: [`Attachment::remove`] (or
    /// dropping it) detaches the programs. Nothing is pinned in bpffs yet.
    pub fn attach(&mut self, cgroup_dir: &Path) -> Result<Attachment, EbpfError> {
        let cgroup = File::open(cgroup_dir).map_err(|source| EbpfError::Cgroup {
            path: cgroup_dir.to_path_buf(),
            source,
        })?;
        // A BPF link (kernel 5.7 and later, what aya uses there) always sits beside the other
        // programs of the cgroup, and the kernel refuses any attach flag on it: hence the
        // default mode, which sets none. (Before 5.7 it would make the attachment exclusive.)
        let mode = CgroupAttachMode::Single;
        let mut links = Vec::with_capacity(3);
        links.push(Attached::GetSockopt(program::<CgroupSockopt, _>(
            &mut self.bpf,
            GETSOCKOPT,
            |p| {
                let id = p.attach(&cgroup, mode)?;
                p.take_link(id)
            },
        )?));
        links.push(Attached::SockOps(program::<SockOps, _>(
            &mut self.bpf,
            SOCKOPS,
            |p| {
                let id = p.attach(&cgroup, mode)?;
                p.take_link(id)
            },
        )?));
        links.push(Attached::Connect4(program::<CgroupSockAddr, _>(
            &mut self.bpf,
            CONNECT4,
            |p| {
                let id = p.attach(&cgroup, mode)?;
                p.take_link(id)
            },
        )?));
        Ok(Attachment {
            cgroup: cgroup_dir.to_path_buf(),
            links,
        })
    }

    /// How many connections the maps of original destinations hold now.
    pub fn tracked(&self) -> Result<Tracked, EbpfError> {
        let (connecting, established) = maps::counts(&self.bpf)?;
        Ok(Tracked {
            connecting,
            established,
        })
    }
}

/// The programs attached to one cgroup; detached by [`Attachment::remove`] or when dropped.
#[derive(Debug)]
pub struct Attachment {
    cgroup: PathBuf,
    links: Vec<Attached>,
}

#[derive(Debug)]
enum Attached {
    Connect4(CgroupSockAddrLink),
    SockOps(SockOpsLink),
    GetSockopt(CgroupSockoptLink),
}

impl Attached {
    fn detach(self) -> Result<(), EbpfError> {
        let (program, result) = match self {
            Attached::Connect4(l) => (CONNECT4, l.detach()),
            Attached::SockOps(l) => (SOCKOPS, l.detach()),
            Attached::GetSockopt(l) => (GETSOCKOPT, l.detach()),
        };
        result.map_err(|source| EbpfError::Program { program, source })
    }
}

impl Attachment {
    /// The cgroup directory the programs are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// Detach every program: connect4 first (no new redirects), then sockops and getsockopt.
    /// Connections redirected before stay with the proxy. Every program is detached even if
    /// one fails; the first error is returned.
    pub fn remove(mut self) -> Result<(), EbpfError> {
        let mut first = Ok(());
        // Attached in the order getsockopt, sockops, connect4: detach in reverse.
        while let Some(link) = self.links.pop() {
            if let Err(e) = link.detach() {
                first = first.and(Err(e));
            }
        }
        first
    }
}

/// Run `f` on the program `name` of type `P`, naming it in any error.
fn program<P, T>(
    bpf: &mut Ebpf,
    name: &'static str,
    f: impl FnOnce(&mut P) -> Result<T, ProgramError>,
) -> Result<T, EbpfError>
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p = bpf.program_mut(name).ok_or(EbpfError::Missing {
        kind: "program",
        name,
    })?;
    let p: &mut P = p.try_into().map_err(|source| EbpfError::Program {
        program: name,
        source,
    })?;
    f(p).map_err(|source| EbpfError::Program {
        program: name,
        source,
    })
}

/// Load (verify) the program `name` of type `P`.
fn load<P>(
    bpf: &mut Ebpf,
    name: &'static str,
    f: impl FnOnce(&mut P) -> Result<(), ProgramError>,
) -> Result<(), EbpfError>
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    program(bpf, name, f)
}
