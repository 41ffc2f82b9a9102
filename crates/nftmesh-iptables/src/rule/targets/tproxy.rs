//! `-j TPROXY --on-port PORT [--on-ip ADDR] [--tproxy-mark VALUE[/MASK]]`: to a local socket
//! without changing the packet.

use super::{ip, Extension, Given};
use crate::ast::Target;
use crate::error::{ParseError, ParseErrorKind as K};
use crate::rule::helpers::{err, port, value_mask};

/// The extension.
pub(super) const EXTENSION: Extension = Extension {
    name: "TPROXY",
    blank: || Target::Tproxy {
        on_port: 0,
        on_ip: None,
        mark: None,
    },
    options: &["--on-port", "--on-ip", "--tproxy-mark"],
    flags: &[],
    finish,
};

/// `--on-port` is required, and so is a port protocol.
fn finish(tgt: &mut Target, g: &Given<'_>) -> Result<(), ParseError> {
    g.needs_protocol()?;
    let p = g
        .get("--on-port")
        .ok_or_else(|| g.err(K::BadTarget("TPROXY needs --on-port")))?;
    let on_port = port(&p.text).ok_or_else(|| err(&p, K::BadPort))?;
    let on_ip = match g.get("--on-ip") {
        None => None,
        Some(v) => Some(ip(&v, "--on-ip")?),
    }
    // iptables-save writes `--on-ip 0.0.0.0` for "no address": both let the kernel
    // choose the local address (the incoming device's, else the destination).
    .filter(|a| !a.is_unspecified());
    let mark = match g.get("--tproxy-mark") {
        None => None,
        Some(v) => Some(value_mask(&v)?),
    };
    *tgt = Target::Tproxy {
        on_port,
        on_ip,
        mark,
    };
    Ok(())
}
