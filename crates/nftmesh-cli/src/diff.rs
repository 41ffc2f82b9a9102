//! `nftmesh diff`: the live tables compared with what the capture flags compile to, reported
//! as `diff` commands report: nothing and exit 0 when equal, every difference on stdout and
//! exit 1 on drift, exit 2 when the check could not run ([`outcome`], also `ambient diff`'s).
//! With `--cgroup` (the eBPF backend) the tables are compared with the inbound capture and
//! stderr says which programs are attached to the cgroup; none attached fails the check
//! (exit 2).

use crate::capture_args::CaptureInArgs;
use crate::error::CliError;

/// Run `nftmesh diff`.
pub fn run(args: &CaptureInArgs) -> Result<(), CliError> {
    outcome((|| {
        let Some(ebpf) = args.ebpf.backend()? else {
            let capture = args.capture()?;
            return Ok(args.namespace()?.check(&capture)?);
        };
        let inbound = nftmesh::ebpf::EbpfBackend::inbound(&args.config()?)?;
        let drift = args.namespace()?.check(&inbound)?;
        let cgroup = ebpf.cgroup().display();
        match ebpf.attached()? {
            Some(attached) => eprintln!("nftmesh: attached to {cgroup}: {attached}"),
            None => {
                eprintln!("nftmesh: no eBPF program is attached to {cgroup}");
                if drift.is_empty() {
                    return Err(CliError::Config(format!(
                        "no eBPF program is attached to {cgroup}"
                    )));
                }
            }
        }
        Ok(drift)
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
