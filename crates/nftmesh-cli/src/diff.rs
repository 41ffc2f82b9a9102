//! `nftmesh diff`: the live tables compared with what the capture flags compile to, reported
//! as `diff` commands report: nothing and exit 0 when equal, every difference on stdout and
//! exit 1 on drift, exit 2 when the check could not run ([`outcome`], also `ambient diff`'s).

use crate::capture_args::CaptureInArgs;
use crate::error::CliError;

/// Run `nftmesh diff`.
pub fn run(args: &CaptureInArgs) -> Result<(), CliError> {
    outcome((|| {
        let capture = args.capture()?;
        Ok(args.namespace()?.check(&capture)?)
    })())
}

/// A drift check's outcome as a `diff` command's: success when nothing differs,
/// [`CliError::Drift`] (exit 1) when something does, [`CliError::CheckFailed`] (exit 2) when
/// the check could not run.
pub fn outcome(checked: Result<Vec<nftmesh::Drift>, CliError>) -> Result<(), CliError> {
    match checked {
        Ok(drift) if drift.is_empty() => Ok(()),
        Ok(drift) => Err(CliError::Drift(drift)),
        Err(e) => Err(CliError::CheckFailed(Box::new(e))),
    }
}
