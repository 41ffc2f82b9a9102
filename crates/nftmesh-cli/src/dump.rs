//! `nftmesh dump`: nftmesh's live tables read back over netlink, decoded, and printed as nft
//! text; with `--cgroup`, also what the eBPF backend has attached to that cgroup (on stderr,
//! so stdout stays an nft script).

use crate::capture_args::EbpfArgs;
use crate::error::CliError;
use crate::netns_arg::NetnsArg;

/// `nftmesh dump`'s arguments.
#[derive(clap::Args)]
pub struct DumpArgs {
    /// Where.
    #[command(flatten)]
    pub netns: NetnsArg,
    /// The eBPF backend's cgroup and BPF file system.
    #[command(flatten)]
    pub ebpf: EbpfArgs,
}

/// Run `nftmesh dump`.
pub fn run(args: &DumpArgs) -> Result<(), CliError> {
    let ns = nftmesh::Namespace::open_or_current(args.netns.network_namespace.as_deref())?;
    let live = ns.live()?;
    if live.tables.is_empty() {
        // stdout stays an (empty) nft script; the person reading learns why it is empty.
        eprintln!("nftmesh: no nftmesh table in this namespace");
    }
    print!("{}", nftmesh_model::render(&live));
    if let Some(ebpf) = args.ebpf.backend()? {
        let cgroup = ebpf.cgroup().display();
        match ebpf.attached()? {
            Some(attached) => eprintln!("nftmesh: attached to {cgroup}: {attached}"),
            None => eprintln!("nftmesh: no eBPF program is attached to {cgroup}"),
        }
    }
    Ok(())
}
