//! Loading the programs with a configuration and attaching them to a cgroup, pinned.

use crate::attachment::{self, Attachment};
use crate::error::EbpfError;
use crate::maps;
use crate::netns::NetnsCookie;
use crate::pins::{self, Bpffs, CgroupLock};
use crate::programs;
use crate::settings::{Dns, Settings};
use aya::{Ebpf, EbpfLoader};
use nftmesh_model::config::CaptureConfig;
use std::path::Path;

/// The object `build.rs` compiled from `bpf/capture.c`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capture.bpf.o"));

/// An outbound capture loaded into the kernel, not attached yet: the programs of
/// `bpf/capture.c`, verified, and their maps holding one [`CaptureConfig`]'s outbound settings.
///
/// One capture serves one pod: its maps of original destinations are keyed by loopback
/// 4-tuples, which are only unique within one network namespace.
#[derive(Debug)]
pub struct EbpfCapture {
    settings: Settings,
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
    ///
    /// The capture applies to the cgroup's sockets in **every** network namespace; see
    /// [`EbpfCapture::in_namespace`] for one (what nftmesh's installers use).
    pub fn new(cfg: &CaptureConfig) -> Result<Self, EbpfError> {
        Self::with(Settings::from_config(cfg)?)
    }

    /// [`EbpfCapture::new`], applying only to the cgroup's sockets in the network namespace
    /// `netns` (the pod's), as nf_tables' capture applies in its namespace only: a process of
    /// the cgroup that connects from another namespace is not captured, and its
    /// `getsockopt(SO_ORIGINAL_DST)` is the kernel's.
    pub fn in_namespace(cfg: &CaptureConfig, netns: NetnsCookie) -> Result<Self, EbpfError> {
        let mut settings = Settings::from_config(cfg)?;
        settings.netns_cookie = netns.get();
        Self::with(settings)
    }

    fn with(settings: Settings) -> Result<Self, EbpfError> {
        let bpf = load(&settings, None)?;
        Ok(EbpfCapture { settings, bpf })
    }

    /// The network namespace the capture applies in; `None`: every one.
    pub fn namespace(&self) -> Option<NetnsCookie> {
        (self.settings.netns_cookie != 0).then(|| NetnsCookie::from_raw(self.settings.netns_cookie))
    }

    /// Attach the programs to the cgroup v2 directory `cgroup_dir` for as long as the returned
    /// [`Attachment`] lives (not pinned: [`Attachment::remove`], dropping it, or the end of
    /// this process detaches them). New BPF links beside programs others attached there,
    /// getsockopt and sockops first and connect4 last, so no connection is redirected without
    /// its original destination being answerable. For a capture that outlives the process, and
    /// for replacing one, see [`EbpfCapture::install`].
    pub fn attach(&mut self, cgroup_dir: &Path) -> Result<Attachment, EbpfError> {
        let cgroup = open_cgroup(cgroup_dir)?;
        let state = maps::state_fds(&self.bpf)?;
        let dns = self.dns();
        let links = attachment::link_held(&mut self.bpf, &cgroup, dns)?;
        Ok(Attachment::held(cgroup_dir, links, state))
    }

    /// Install the capture on the cgroup v2 directory `cgroup_dir`, pinned in `bpffs` under
    /// `nftmesh/<cgroup inode>/`: from then on the TCP connects of its processes are captured,
    /// until [`Attachment::remove`] (from any process: [`Attachment::open`]), whatever happens
    /// to this one.
    ///
    /// A cgroup with no capture gets new BPF links, as [`EbpfCapture::attach`] makes them, and
    /// pins them. A cgroup that has one (pinned by any process) has it **replaced**: each
    /// pinned link is given its new program in one step (`BPF_LINK_UPDATE`), so no connect
    /// runs without a capture, and the maps of original destinations are kept, so connections
    /// redirected before the replace are still answered.
    ///
    /// The programs are loaded again here, over the pinned maps; from now on
    /// [`EbpfCapture::tracked`] reads those.
    pub fn install(&mut self, bpffs: &Bpffs, cgroup_dir: &Path) -> Result<Attachment, EbpfError> {
        let dir = bpffs.dir_of(cgroup_dir)?;
        // Held to the end: no other install or removal of this cgroup interleaves.
        let lock = CgroupLock::take(cgroup_dir)?;
        let cgroup = open_cgroup(cgroup_dir)?;
        pins::create_dir(&dir)?;
        let fresh = !attachment::linked(&dir);
        let attached = Attachment::pinned(bpffs, cgroup_dir, dir.clone());
        match self.install_in(&cgroup, &dir) {
            Ok(()) => Ok(attached),
            Err(e) => {
                // A first install leaves nothing behind; a failed replace leaves the capture
                // working (each link runs its old or its new program; they share the maps).
                if fresh {
                    let _ = attached.remove_as(Some(&lock));
                }
                Err(e)
            }
        }
    }

    fn install_in(&mut self, cgroup: &std::fs::File, dir: &Path) -> Result<(), EbpfError> {
        maps::check_pinned(dir)?;
        let mut bpf = load(&self.settings, Some(dir))?;
        attachment::link_all(&mut bpf, cgroup, dir, self.dns())?;
        self.bpf = bpf;
        Ok(())
    }

    /// Whether DNS capture is on (its programs are linked).
    fn dns(&self) -> bool {
        self.settings.dns != Dns::Off
    }

    /// How many connections the maps of original destinations hold now.
    pub fn tracked(&self) -> Result<Tracked, EbpfError> {
        maps::counts(&self.bpf)
    }
}

fn open_cgroup(dir: &Path) -> Result<std::fs::File, EbpfError> {
    std::fs::File::open(dir).map_err(|source| EbpfError::Cgroup {
        path: dir.to_path_buf(),
        source,
    })
}

/// Load the object with `settings` written into its maps and its programs verified; with
/// `pins`, the maps of original destinations are the ones pinned there (created and pinned if
/// absent).
fn load(settings: &Settings, pins: Option<&Path>) -> Result<Ebpf, EbpfError> {
    let mut loader = EbpfLoader::new();
    for (name, size) in maps::set_sizes(settings) {
        loader.map_max_entries(name, size);
    }
    if let Some(dir) = pins {
        for name in maps::SHARED_MAPS {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut bpf = loader.load(OBJECT).map_err(EbpfError::Object)?;
    maps::write(&mut bpf, settings)?;
    programs::load_all(&mut bpf)?;
    Ok(bpf)
}
