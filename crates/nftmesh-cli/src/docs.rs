//! `nftmesh completions SHELL` and `nftmesh man`: shell completions and man pages generated
//! from the command's own clap definitions, so they never disagree with `--help`.

use crate::error::CliError;
use crate::stdout::write_stdout;
use clap::CommandFactory;
use std::path::{Path, PathBuf};

/// `nftmesh completions`: the shell to complete for.
#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell. Install, e.g. for bash:
    /// `nftmesh completions bash > /etc/bash_completion.d/nftmesh`.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// `nftmesh man`: where the pages go.
#[derive(clap::Args)]
pub struct ManArgs {
    /// Write `nftmesh.1` and one page per subcommand (`nftmesh-apply.1`, ...) into DIR
    /// (e.g. /usr/local/share/man/man1) instead of printing `nftmesh.1` on stdout.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

/// Print the completion script for `args.shell` on stdout.
pub fn completions<C: CommandFactory>(args: &CompletionsArgs) -> Result<(), CliError> {
    let mut cmd = C::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "nftmesh", &mut out);
    write_stdout(&out)
}

/// Print `nftmesh.1`, or write every page into `--out-dir`.
pub fn man<C: CommandFactory>(args: &ManArgs) -> Result<(), CliError> {
    let cmd = C::command();
    match &args.out_dir {
        None => write_stdout(&render(cmd)?),
        Some(dir) => {
            let written = write_pages(cmd, dir)?;
            eprintln!(
                "nftmesh: wrote {written} man page(s) into {}",
                dir.display()
            );
            Ok(())
        }
    }
}

/// The roff text of one command's page.
fn render(cmd: clap::Command) -> Result<Vec<u8>, CliError> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .map_err(CliError::io("rendering the man page"))?;
    Ok(out)
}

/// Write `cmd`'s page and, recursively, one per subcommand (named `PARENT-SUB.1`, as git's
/// are) into `dir`; how many pages were written.
fn write_pages(cmd: clap::Command, dir: &Path) -> Result<usize, CliError> {
    let name = cmd.get_name().to_string();
    let version = cmd.get_version().unwrap_or_default().to_string();
    let mut written = 0;
    for sub in cmd.get_subcommands() {
        let sub = sub
            .clone()
            .name(format!("{name}-{}", sub.get_name()))
            .version(version.clone());
        written += write_pages(sub, dir)?;
    }
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, render(cmd)?).map_err(CliError::io(path.display()))?;
    Ok(written + 1)
}
