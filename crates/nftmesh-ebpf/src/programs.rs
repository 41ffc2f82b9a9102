//! The programs of `bpf/capture.c` by kind: how each is loaded, its attach type, and where its
//! link is pinned.

use crate::error::EbpfError;
use aya::programs::{CgroupSockAddr, CgroupSockopt, Program, ProgramError, SockOps};
use aya::Ebpf;
use std::os::fd::{AsFd, BorrowedFd};

/// One program of `bpf/capture.c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prog {
    GetSockopt,
    SockOps,
    GetPeerName4,
    GetPeerName6,
    RecvMsg4,
    RecvMsg6,
    Connect4,
    Connect6,
    SendMsg4,
    SendMsg6,
}

/// Every program, in the order they are attached: the ones that answer for redirected
/// connections first, the redirecting ones last (and detached first).
pub(crate) const PROGRAMS: [Prog; 10] = [
    Prog::GetSockopt,
    Prog::SockOps,
    Prog::GetPeerName4,
    Prog::GetPeerName6,
    Prog::RecvMsg4,
    Prog::RecvMsg6,
    Prog::Connect4,
    Prog::Connect6,
    Prog::SendMsg4,
    Prog::SendMsg6,
];

impl Prog {
    /// Its function name in `bpf/capture.c`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Prog::GetSockopt => "nftmesh_getsockopt",
            Prog::SockOps => "nftmesh_sockops",
            Prog::GetPeerName4 => "nftmesh_getpeername4",
            Prog::GetPeerName6 => "nftmesh_getpeername6",
            Prog::Connect4 => "nftmesh_connect4",
            Prog::Connect6 => "nftmesh_connect6",
            Prog::RecvMsg4 => "nftmesh_recvmsg4",
            Prog::SendMsg4 => "nftmesh_sendmsg4",
            Prog::RecvMsg6 => "nftmesh_recvmsg6",
            Prog::SendMsg6 => "nftmesh_sendmsg6",
        }
    }

    /// The file its link is pinned as, in the capture's bpffs directory.
    pub(crate) fn link_pin(self) -> &'static str {
        match self {
            Prog::GetSockopt => "link_getsockopt",
            Prog::SockOps => "link_sockops",
            Prog::GetPeerName4 => "link_getpeername4",
            Prog::GetPeerName6 => "link_getpeername6",
            Prog::Connect4 => "link_connect4",
            Prog::Connect6 => "link_connect6",
            Prog::RecvMsg4 => "link_recvmsg4",
            Prog::SendMsg4 => "link_sendmsg4",
            Prog::RecvMsg6 => "link_recvmsg6",
            Prog::SendMsg6 => "link_sendmsg6",
        }
    }

    /// Whether it only serves DNS capture: then it is linked only when DNS capture is on (or
    /// its link is pinned already, from an earlier install, and gets the new program).
    pub(crate) fn dns_only(self) -> bool {
        matches!(
            self,
            Prog::RecvMsg4 | Prog::SendMsg4 | Prog::RecvMsg6 | Prog::SendMsg6
        )
    }
}

impl Prog {
    /// Its `enum bpf_attach_type` (`linux/bpf.h`).
    pub(crate) fn attach_type(self) -> u32 {
        match self {
            Prog::SockOps => 3,       // BPF_CGROUP_SOCK_OPS
            Prog::Connect4 => 10,     // BPF_CGROUP_INET4_CONNECT
            Prog::Connect6 => 11,     // BPF_CGROUP_INET6_CONNECT
            Prog::SendMsg4 => 14,     // BPF_CGROUP_UDP4_SENDMSG
            Prog::SendMsg6 => 15,     // BPF_CGROUP_UDP6_SENDMSG
            Prog::RecvMsg4 => 19,     // BPF_CGROUP_UDP4_RECVMSG
            Prog::RecvMsg6 => 20,     // BPF_CGROUP_UDP6_RECVMSG
            Prog::GetSockopt => 21,   // BPF_CGROUP_GETSOCKOPT
            Prog::GetPeerName4 => 29, // BPF_CGROUP_INET4_GETPEERNAME
            Prog::GetPeerName6 => 30, // BPF_CGROUP_INET6_GETPEERNAME
        }
    }
}

/// What the crate does with a program of any of its kinds.
pub(crate) trait Hook {
    /// Verify and load it.
    fn load_hook(&mut self) -> Result<(), ProgramError>;
    /// Its file descriptor (it must be loaded).
    fn prog_fd(&self) -> Result<BorrowedFd<'_>, ProgramError>;
}

macro_rules! hook {
    ($($ty:ty),*) => {$(
        impl Hook for $ty {
            fn load_hook(&mut self) -> Result<(), ProgramError> {
                self.load()
            }

            fn prog_fd(&self) -> Result<BorrowedFd<'_>, ProgramError> {
                Ok(self.fd()?.as_fd())
            }
        }
    )*};
}

hook!(CgroupSockAddr, SockOps, CgroupSockopt);

/// The program `p` of `bpf`, as what it is.
pub(crate) fn hook(bpf: &mut Ebpf, p: Prog) -> Result<&mut dyn Hook, EbpfError> {
    let name = p.name();
    let program: &mut Program = bpf.program_mut(name).ok_or(EbpfError::Missing {
        kind: "program",
        name,
    })?;
    let err = |source| EbpfError::Program {
        program: name,
        source,
    };
    Ok(match p {
        Prog::Connect4
        | Prog::Connect6
        | Prog::GetPeerName4
        | Prog::GetPeerName6
        | Prog::SendMsg4
        | Prog::RecvMsg4
        | Prog::SendMsg6
        | Prog::RecvMsg6 => <&mut CgroupSockAddr>::try_from(program).map_err(err)?,
        Prog::SockOps => <&mut SockOps>::try_from(program).map_err(err)?,
        Prog::GetSockopt => <&mut CgroupSockopt>::try_from(program).map_err(err)?,
    })
}

/// Load (verify) every program of `bpf`.
pub(crate) fn load_all(bpf: &mut Ebpf) -> Result<(), EbpfError> {
    for p in PROGRAMS {
        hook(bpf, p)?
            .load_hook()
            .map_err(|source| EbpfError::Program {
                program: p.name(),
                source,
            })?;
    }
    Ok(())
}
