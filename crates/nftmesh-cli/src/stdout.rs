//! Printing a command's whole output on stdout, where a reader that went away (`| head`) is
//! not an error: what it wanted to read it has read.

use crate::error::CliError;
use std::io::Write;

/// Write `bytes` to stdout; a reader that went away is not an error.
pub fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::io("stdout")(e)),
        _ => Ok(()),
    }
}
