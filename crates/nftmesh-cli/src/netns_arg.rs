//! `--network-namespace`: where a subcommand works, shared by the subcommands that only need
//! that.

use std::path::PathBuf;

/// Where to work.
#[derive(clap::Args)]
pub struct NetnsArg {
    /// Network namespace to work in (`/proc/PID/ns/net`, `/var/run/netns/NAME`); default: ours.
    #[arg(long, value_name = "PATH", env = "NETWORK_NAMESPACE")]
    pub network_namespace: Option<PathBuf>,
}
