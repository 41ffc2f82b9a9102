//! `nftmesh linkerd-network-validator`, and the binary invoked as `linkerd2-network-validator`:
//! the contract of Linkerd's network validator (`validator/src/main.rs` of
//! linkerd/linkerd2-proxy-init at 183e791d99dcc6d4fa765b7331cbaec7ce40c2de). It listens on the
//! proxy's outbound port, connects to an address nothing should answer, and succeeds when that
//! connection lands on its own listener (the capture redirected it): the listener sends a random
//! token, which the client must read back. Anything else (no capture, a failure, the timeout,
//! SIGINT or SIGTERM) exits 95, Linkerd's code. Needs no capability: Linkerd runs it as uid
//! 65534 with every capability dropped.

use crate::error::CliError;
use nftmesh::log::{Format, Level, Logger};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Who speaks in error lines.
pub const SPEAKER: &str = "linkerd2-network-validator";

/// Linkerd's validator's exit code on failure (ERRNO 95, "Operation not supported").
pub const FAILED: u8 = 95;

/// The validator's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ValidatorArgs {
    /// Log level: trace, debug, info, warn or error
    #[arg(
        long,
        env = "LINKERD_NETWORK_VALIDATOR_LOG_LEVEL",
        default_value = "info"
    )]
    log_level: String,
    /// Log format: plain or json
    #[arg(
        long,
        env = "LINKERD_NETWORK_VALIDATOR_LOG_FORMAT",
        default_value = "plain"
    )]
    log_format: String,
    /// How long validation may take (a number with ms, s, m, h or d; `0` alone)
    #[arg(long, default_value = "10s", value_parser = parse_timeout)]
    timeout: Duration,
    /// Address to which connections are supposed to be redirected by the capture
    #[arg(long, default_value = "0.0.0.0:4140")]
    listen_addr: SocketAddr,
    /// Address to which the client will attempt to connect
    #[arg(long, default_value = "192.0.2.2:1404")]
    connect_addr: SocketAddr,
}

/// The validator as its own command (the binary invoked as `linkerd2-network-validator`).
#[derive(clap::Parser, Debug)]
#[command(
    name = "linkerd2-network-validator",
    version,
    about = "Validate that a container's networking is set up for the Linkerd proxy"
)]
pub struct ValidatorCli {
    #[command(flatten)]
    args: ValidatorArgs,
}

impl ValidatorCli {
    /// The flags.
    pub fn into_args(self) -> ValidatorArgs {
        self.args
    }
}

/// A duration as the validator reads `--timeout`: digits then `ms`, `s`, `m`, `h` or `d`;
/// `0` alone.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let digits = s
        .rfind(|c: char| c.is_ascii_digit())
        .ok_or_else(|| format!("{s} does not contain a timeout duration value"))?;
    let (magnitude, unit) = s.split_at(digits + 1);
    let n: u64 = magnitude
        .parse()
        .map_err(|_| format!("invalid timeout {s:?}"))?;
    let ms_per = match unit {
        "" if n == 0 => 0,
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "invalid duration unit {unit} (expected one of 'ms', 's', 'm', 'h', or 'd')"
            ))
        }
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("Timeout value {s} overflows when converted to 'ms'"))
}

/// 63 random letters and digits and a newline: what the listener sends, so the client knows it
/// reached this process and nothing else.
fn token() -> Result<Vec<u8>, CliError> {
    const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = [0u8; 63];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(|source| CliError::Io {
            what: "/dev/urandom".into(),
            source,
        })?;
    let mut t: Vec<u8> = raw
        .iter()
        .map(|b| ALPHANUMERIC[usize::from(*b) % ALPHANUMERIC.len()])
        .collect();
    t.push(b'\n');
    Ok(t)
}

/// Listen, connect and compare, within `deadline`.
fn validate(a: &ValidatorArgs, log: &Logger, deadline: Instant) -> Result<(), String> {
    let listener = TcpListener::bind(a.listen_addr)
        .map_err(|e| format!("listening on {}: {e}", a.listen_addr))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    log.info(&format!("Listening for connections on {}", a.listen_addr));
    let token = token().map_err(|e| e.to_string())?;
    let served = token.clone();
    std::thread::spawn(move || {
        // Serve until the process exits (bounded by the deadline, after which it does).
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.write_all(&served);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    log.info(&format!("Connecting to {}", a.connect_addr));
    let left = deadline.saturating_duration_since(Instant::now());
    let mut s = TcpStream::connect_timeout(&a.connect_addr, left.max(Duration::from_millis(1)))
        .map_err(|e| {
            format!(
                "Unable to connect to validator ({e}). Please ensure the capture rules are \
                 rewriting traffic as expected"
            )
        })?;
    let mut got = Vec::with_capacity(token.len());
    while got.len() < token.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left))
            .map_err(|e| format!("client: {e}"))?;
        let mut buf = [0u8; 128];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("reading from {}: {e}", a.connect_addr)),
        }
    }
    if got != token {
        return Err(format!(
            "expected client to receive {:?}; got {:?} instead",
            String::from_utf8_lossy(&token),
            String::from_utf8_lossy(&got)
        ));
    }
    Ok(())
}

/// Exit 95 on SIGINT or SIGTERM, as the validator does (the signals are blocked in every
/// thread and waited for on one of their own).
fn exit_on_signals() -> Result<(), CliError> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().map_err(|source| CliError::System {
        what: "blocking SIGINT and SIGTERM".into(),
        source,
    })?;
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            eprintln!("{SPEAKER}: Killed by {sig}");
            std::process::exit(i32::from(FAILED));
        }
    });
    Ok(())
}

/// Run as the validator.
pub fn run(a: &ValidatorArgs) -> Result<(), CliError> {
    let format = if a.log_format == "json" {
        Format::Json
    } else {
        Format::Text
    };
    let min = match a.log_level.to_ascii_lowercase().as_str() {
        "trace" | "debug" => Level::Debug,
        "warn" => Level::Warn,
        "error" => Level::Error,
        _ => Level::Info,
    };
    let log = Logger::stderr(format, min);
    exit_on_signals()?;
    let deadline = Instant::now() + a.timeout;
    // The check runs on a thread of its own so that the timeout holds whatever it waits on.
    let (tx, rx) = std::sync::mpsc::channel();
    let (args, thread_log) = (a.clone(), Logger::stderr(format, min));
    std::thread::spawn(move || {
        let _ = tx.send(validate(&args, &thread_log, deadline));
    });
    let outcome = rx.recv_timeout(a.timeout).unwrap_or_else(|_| {
        Err(format!(
            "Failed to validate networking configuration within {:?}. Please ensure the \
                 capture rules are rewriting traffic as expected.",
            a.timeout
        ))
    });
    match outcome {
        Ok(()) => {
            log.info("Validated");
            Ok(())
        }
        Err(e) => Err(CliError::NetworkValidation(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_as_the_validator_reads_them() {
        for (s, ms) in [
            ("10s", 10_000),
            ("500ms", 500),
            ("2m", 120_000),
            ("1d", 86_400_000),
            ("0", 0),
        ] {
            assert_eq!(parse_timeout(s).unwrap(), Duration::from_millis(ms), "{s}");
        }
        for s in ["", "s", "10", "10x", "99999999999999999999d"] {
            assert!(parse_timeout(s).is_err(), "{s}");
        }
    }

    #[test]
    fn tokens_are_63_alphanumerics_and_a_newline_and_differ() {
        let (a, b) = (token().unwrap(), token().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a[..63].iter().all(u8::is_ascii_alphanumeric) && a[63] == b'\n');
        assert_ne!(a, b);
    }
}
