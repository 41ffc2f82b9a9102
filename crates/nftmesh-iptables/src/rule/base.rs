//! The options every rule has: `-p`, `-s`, `-d`, `-i`, `-o`; and the one rule per
//! (source, destination) pair that comma lists in `-s`/`-d` make.

use super::helpers::{addrs, err};
use super::modules::Module;
use super::{Addrs, RuleParser};
use crate::ast::{IptMatch, IptRule, Span, Spanned, Target};
use crate::error::{ParseError, ParseErrorKind as K};
use crate::lex::Token;
use ipnet::IpNet;
use nftmesh_model::expr::{Direction, L4Proto};

/// `-p PROTO`: a protocol match; `tcp` and `udp` also load their match module.
pub(super) fn protocol(p: &mut RuleParser<'_>, t: &Token, negate: bool) -> Result<(), ParseError> {
    let v = p.next(t)?;
    if p.proto.is_some() {
        return Err(err(t, K::Duplicate));
    }
    let proto = proto_name(&v)?;
    if proto.is_none() && negate {
        return Err(err(t, K::BadNegation));
    }
    if let Some(proto) = proto {
        p.push(IptMatch::Protocol { negate, proto }, t);
        if !negate && matches!(proto, L4Proto::Tcp | L4Proto::Udp) {
            let name = if proto == L4Proto::Tcp { "tcp" } else { "udp" };
            p.modules.push(Module {
                name: name.into(),
                tok: v.clone(),
                used: false,
                implicit: true,
            });
        }
    }
    p.proto = Some((negate, proto, v));
    Ok(())
}

/// A protocol name or number; `None` for `all`.
fn proto_name(t: &Token) -> Result<Option<L4Proto>, ParseError> {
    let p = match t.text.to_ascii_lowercase().as_str() {
        "all" | "0" => return Ok(None),
        "tcp" => L4Proto::Tcp,
        "udp" => L4Proto::Udp,
        "icmp" => L4Proto::Icmp,
        "icmpv6" | "ipv6-icmp" => L4Proto::Icmpv6,
        "sctp" => L4Proto::Other(132),
        "udplite" => L4Proto::Other(136),
        "gre" => L4Proto::Other(47),
        "esp" => L4Proto::Other(50),
        "ah" => L4Proto::Other(51),
        s => match s.parse::<u8>() {
            Ok(n) => L4Proto::from_number(n),
            Err(_) => return Err(err(t, K::BadProtocol)),
        },
    };
    Ok(Some(p))
}

/// `-s ADDRS` or `-d ADDRS`: kept aside until the end, where a list makes one rule per item.
pub(super) fn address(p: &mut RuleParser<'_>, t: &Token, negate: bool) -> Result<(), ParseError> {
    let v = p.next(t)?;
    let src = matches!(t.text.as_str(), "-s" | "--source" | "--src");
    let opt = if src { "-s" } else { "-d" };
    let nets = addrs(&v, p.family, opt)?;
    let slot = if src { &mut p.srcs } else { &mut p.dsts };
    if slot.is_some() {
        return Err(err(t, K::Duplicate));
    }
    if negate && nets.len() > 1 {
        return Err(err(&v, K::BadNegation));
    }
    *slot = Some((negate, nets, t.span));
    Ok(())
}

/// `-i NAME` or `-o NAME`: an interface match.
pub(super) fn interface(p: &mut RuleParser<'_>, t: &Token, negate: bool) -> Result<(), ParseError> {
    let v = p.next(t)?;
    let input = matches!(t.text.as_str(), "-i" | "--in-interface");
    let name = iface(&v)?;
    if p.matches
        .iter()
        .any(|m| matches!(&m.node, IptMatch::Interface { input: x, .. } if *x == input))
    {
        return Err(err(t, K::Duplicate));
    }
    p.push(
        IptMatch::Interface {
            input,
            negate,
            name,
        },
        t,
    );
    Ok(())
}

/// An interface name as iptables takes it: up to 15 characters, `+` only at the end.
fn iface(t: &Token) -> Result<String, ParseError> {
    let n = &t.text;
    let body = n.strip_suffix('+').unwrap_or(n);
    if n.is_empty()
        || n.len() > 15
        || body.contains('+')
        || n.chars().any(|c| c == '/' || c.is_whitespace())
    {
        return Err(err(t, K::BadInterface));
    }
    Ok(n.clone())
}

/// One rule per (source, destination) pair, sources outermost, as iptables expands them; the
/// address matches come first.
pub(super) fn expand(
    span: Span,
    srcs: &Option<Addrs>,
    dsts: &Option<Addrs>,
    matches: &[Spanned<IptMatch>],
    target: Option<Spanned<Target>>,
) -> Vec<IptRule> {
    let mut out = Vec::new();
    for s in each(srcs) {
        for d in each(dsts) {
            let mut ms = Vec::new();
            for (dir, a) in [(Direction::Src, s), (Direction::Dst, d)] {
                if let Some((negate, net, span)) = a {
                    ms.push(Spanned {
                        node: IptMatch::Addr { dir, negate, net },
                        span,
                    });
                }
            }
            ms.extend(matches.iter().cloned());
            out.push(IptRule {
                span,
                matches: ms,
                target: target.clone(),
            });
        }
    }
    out
}

/// Each address of `-s` or `-d` on its own; one `None` when the option was not given.
fn each(x: &Option<Addrs>) -> Vec<Option<(bool, IpNet, Span)>> {
    match x {
        None => vec![None],
        Some((n, nets, s)) => nets.iter().map(|net| Some((*n, *net, *s))).collect(),
    }
}
