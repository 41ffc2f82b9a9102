//! `nftmesh translate` and `nftmesh restore`: iptables-save text read by nftmesh-iptables,
//! printed as nft text or applied natively in one nf_tables transaction.

use crate::error::CliError;
use nftmesh_iptables::{parse, parse_trace, translate_all, IptRuleset};
use nftmesh_model::expr::IpVersion;
use nftmesh_model::ruleset::Ruleset;
use std::io::Read;
use std::path::PathBuf;

/// What to read and how.
#[derive(clap::Args)]
pub struct InputArgs {
    /// The iptables-save / iptables-restore file; `-` or nothing reads standard input.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// The input is ip6tables-save text (IPv6).
    #[arg(short = '6', long)]
    ipv6: bool,
    /// The input is an istio-iptables command trace (as in Istio's golden files): the
    /// `iptables-save`/`ip6tables-save` lines are skipped and a repeated table name starts the
    /// IPv6 part.
    #[arg(long, conflicts_with = "ipv6")]
    istio_trace: bool,
}

impl InputArgs {
    fn name(&self) -> String {
        match &self.file {
            Some(p) if p.as_os_str() != "-" => p.display().to_string(),
            _ => "<stdin>".into(),
        }
    }

    fn text(&self) -> Result<String, CliError> {
        match &self.file {
            Some(p) if p.as_os_str() != "-" => {
                std::fs::read_to_string(p).map_err(CliError::io(p.display()))
            }
            _ => {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(CliError::io("<stdin>"))?;
                Ok(s)
            }
        }
    }

    /// Parse, resolve owner names through the system databases, and translate.
    pub fn ruleset(&self) -> Result<Ruleset, CliError> {
        let text = self.text()?;
        let name = self.name();
        let mut parts: Vec<IptRuleset> = if self.istio_trace {
            parse_trace(&text).map_err(CliError::input(&name))?.parts()
        } else {
            let family = if self.ipv6 {
                IpVersion::V6
            } else {
                IpVersion::V4
            };
            vec![parse(&text, family).map_err(CliError::input(&name))?]
        };
        for p in &mut parts {
            let unknown = p.resolve_owners(&crate::host::uid_of, &crate::host::gid_of);
            if let Some(n) = unknown.first() {
                return Err(CliError::input(name)(format!(
                    "unknown user or group `{n}`"
                )));
            }
        }
        translate_all(&parts).map_err(CliError::input(name))
    }
}

/// `nftmesh restore`: where, and whether to only check.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// What to read and how.
    #[command(flatten)]
    pub input: InputArgs,
    /// Network namespace to work in (`/proc/PID/ns/net`, `/var/run/netns/NAME`); default: ours.
    #[arg(long, value_name = "PATH", env = "NETWORK_NAMESPACE")]
    pub network_namespace: Option<PathBuf>,
    /// Only parse and translate (like `iptables-restore --test`); change nothing.
    #[arg(short = 't', long)]
    pub test: bool,
}

/// Print the translation as nft text.
pub fn translate(args: &InputArgs) -> Result<(), CliError> {
    print!("{}", nftmesh_model::render(&args.ruleset()?));
    Ok(())
}

/// Apply the translation in one transaction; tables the input writes are replaced (as
/// iptables-restore without `--noflush` does), every other table is left alone.
pub fn restore(args: &RestoreArgs) -> Result<(), CliError> {
    let ruleset = args.input.ruleset()?;
    if args.test {
        eprintln!(
            "nftmesh: {} rule(s) in {} table(s) parse and translate",
            ruleset.rule_count(),
            ruleset.tables.len()
        );
        return Ok(());
    }
    let n = (ruleset.rule_count(), ruleset.tables.len());
    let ns = nftmesh::Namespace::open_or_current(args.network_namespace.as_deref())?;
    let r = ns.restore(&ruleset)?;
    // Acknowledged: the socket's release need not delay this command's exit.
    ns.close_after_exit();
    eprintln!(
        "nftmesh: restored {} rule(s) in {} table(s): one transaction of {} messages, {} bytes",
        n.0, n.1, r.messages, r.bytes
    );
    Ok(())
}
