//! Helpers more than one extension uses: numbers, value/mask pairs, ports and addresses.

use crate::error::{ParseError, ParseErrorKind as K};
use crate::lex::Token;
use ipnet::IpNet;
use nftmesh_model::expr::{IpVersion, PortRange};
use std::net::IpAddr;

/// The error `kind` at token `t`.
pub(super) fn err(t: &Token, kind: K) -> ParseError {
    ParseError::new(t.span, &t.text, kind)
}

/// Parse a number as iptables does (`strtoul` base 0: `0x` hex, leading `0` octal, decimal).
pub fn parse_u32(s: &str) -> Option<u32> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if h.is_empty() {
            return None;
        }
        u32::from_str_radix(h, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u32::from_str_radix(&s[1..], 8).ok()
    } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// `VALUE[/MASK]`, the mask all ones when not given.
pub(super) fn value_mask(t: &Token) -> Result<(u32, u32), ParseError> {
    let (v, m) = match t.text.split_once('/') {
        Some((v, m)) => (parse_u32(v), parse_u32(m)),
        None => (parse_u32(&t.text), Some(u32::MAX)),
    };
    match (v, m) {
        (Some(v), Some(m)) => Ok((v, m)),
        _ => Err(err(t, K::BadNumber)),
    }
}

/// A port number: decimal digits only.
pub(super) fn port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `PORT` or `FIRST:LAST` (either end may be left out) from `s`, a part of token `t`.
pub(super) fn port_range(t: &Token, s: &str) -> Result<PortRange, ParseError> {
    let r = match s.split_once(':') {
        Some((a, b)) => {
            let first = if a.is_empty() { Some(0) } else { port(a) };
            let last = if b.is_empty() {
                Some(u16::MAX)
            } else {
                port(b)
            };
            match (first, last) {
                (Some(first), Some(last)) if first <= last => PortRange { first, last },
                _ => return Err(err(t, K::BadPort)),
            }
        }
        None => PortRange::single(port(s).ok_or_else(|| err(t, K::BadPort))?),
    };
    Ok(r)
}

/// A comma list of addresses or prefixes of `family` (the value of option `opt`), each
/// reduced to its network.
pub(super) fn addrs(
    t: &Token,
    family: IpVersion,
    opt: &'static str,
) -> Result<Vec<IpNet>, ParseError> {
    let mut out = Vec::new();
    for part in t.text.split(',') {
        let net = addr(t, part, opt)?;
        if IpVersion::of_net(&net) != family {
            return Err(err(t, K::BadAddress(opt)));
        }
        // iptables keeps the network: `10.1.2.3/8` is `10.0.0.0/8`.
        out.push(net.trunc());
    }
    Ok(out)
}

/// One `ADDR`, `ADDR/LEN` or `ADDR/MASK` of token `t`.
fn addr(t: &Token, part: &str, opt: &'static str) -> Result<IpNet, ParseError> {
    let Some((a, m)) = part.split_once('/') else {
        let addr: IpAddr = part.parse().map_err(|_| err(t, K::BadAddress(opt)))?;
        return Ok(IpNet::from(addr));
    };
    let addr: IpAddr = a.parse().map_err(|_| err(t, K::BadAddress(opt)))?;
    let len = match m.parse::<u8>() {
        Ok(l) => l,
        Err(_) => {
            // A dotted mask: it must be contiguous.
            let mask: IpAddr = m.parse().map_err(|_| err(t, K::BadAddress(opt)))?;
            mask_len(mask).ok_or_else(|| err(t, K::BadAddress(opt)))?
        }
    };
    IpNet::new(addr, len).map_err(|_| err(t, K::BadAddress(opt)))
}

/// The prefix length of a contiguous dotted mask.
fn mask_len(mask: IpAddr) -> Option<u8> {
    let (bits, width) = match mask {
        IpAddr::V4(m) => (u128::from(u32::from(m)) << 96, 32),
        IpAddr::V6(m) => (u128::from(m), 128),
    };
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0 && len <= width).then_some(len as u8)
}
