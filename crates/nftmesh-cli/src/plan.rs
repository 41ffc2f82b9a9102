//! `nftmesh plan`: the nf_tables ruleset the capture flags compile to, as nft text; changes
//! nothing.

use crate::capture_args::CaptureArgs;
use crate::error::CliError;

/// Run `nftmesh plan`.
pub fn run(args: &CaptureArgs) -> Result<(), CliError> {
    let cfg = args.to_config()?;
    print!("{}", nftmesh_model::render(&nftmesh_model::compile(&cfg)));
    Ok(())
}
