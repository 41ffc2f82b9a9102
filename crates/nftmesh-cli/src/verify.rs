//! `nftmesh verify`: capture checked with real connections, like Istio's validation: one from
//! a non-proxy uid to the probe must land on the outbound capture port, one from the proxy uid
//! must not.

use crate::capture_args::CaptureInArgs;
use crate::error::CliError;
use nftmesh::CaptureError;

/// `nftmesh verify`: the capture to check, where, and the probe.
#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    target: CaptureInArgs,
    /// Destination of the probe connections: an address routed out of the namespace and not
    /// excluded from capture (nothing needs to answer there).
    #[arg(long, value_name = "ADDR:PORT", default_value = "192.0.2.1:15002")]
    probe: std::net::SocketAddr,
    /// The uid (and gid) of the connection that must be captured.
    #[arg(long, value_name = "UID", default_value_t = 65534)]
    app_uid: u32,
}

/// Run `nftmesh verify`.
pub fn run(args: &VerifyArgs) -> Result<(), CliError> {
    let capture = args.target.capture()?;
    let probe =
        nftmesh::verify::Probe::new(&capture, args.probe, args.app_uid).map_err(|e| match e {
            CaptureError::Verify(why) => CliError::Config(why.replace("app uid", "--app-uid")),
            e => e.into(),
        })?;
    let verified = args.target.namespace()?.verify(&probe)?;
    eprintln!("nftmesh: {}", verified.summary);
    Ok(())
}
