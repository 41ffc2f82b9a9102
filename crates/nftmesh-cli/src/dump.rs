//! `nftmesh dump`: nftmesh's live tables read back over netlink, decoded, and printed as nft
//! text.

use crate::error::CliError;
use crate::netns_arg::NetnsArg;

/// Run `nftmesh dump`.
pub fn run(args: &NetnsArg) -> Result<(), CliError> {
    let ns = nftmesh::Namespace::open_or_current(args.network_namespace.as_deref())?;
    let live = ns.live()?;
    if live.tables.is_empty() {
        // stdout stays an (empty) nft script; the person reading learns why it is empty.
        eprintln!("nftmesh: no nftmesh table in this namespace");
    }
    print!("{}", nftmesh_model::render(&live));
    Ok(())
}
