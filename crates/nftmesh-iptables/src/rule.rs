//! One rule's options (everything after `-A CHAIN`): matches, match modules and the target
//! with its options.
//!
//! Options are resolved the way iptables resolves them: `-p tcp`/`-p udp` loads the protocol's
//! match implicitly, `-m NAME` loads a module, and an option belongs to the most recently loaded
//! module that has it. Comma lists in `-s`/`-d` make one rule per address, as iptables does.

use crate::ast::{IptMatch, IptRule, IptTable, OwnerKind, PortModule, Span, Spanned, Target};
use crate::error::{ParseError, ParseErrorKind as K};
use crate::lex::Token;
use ipnet::IpNet;
use nftmesh_model::expr::{CtStates, Direction, IpVersion, L4Proto, Owner, PortRange};
use std::net::IpAddr;

/// Target names nftmesh reads (a user chain may not take one of these names).
pub const TARGETS: [&str; 13] = [
    "ACCEPT", "DROP", "RETURN", "REDIRECT", "TPROXY", "MARK", "CONNMARK", "CT", "LOG", "QUEUE",
    "NFQUEUE", "REJECT", "SNAT",
];

const MODULES: [&str; 10] = [
    "tcp",
    "udp",
    "multiport",
    "owner",
    "mark",
    "connmark",
    "conntrack",
    "state",
    "socket",
    "set",
];
const MODULE_COMMENT: &str = "comment";

/// The most matches one rule may have: each takes at least two of the kernel's
/// [`nftmesh_model::limits::RULE_EXPRS_MAX`] expressions per rule.
pub const MAX_MATCHES: usize = nftmesh_model::limits::RULE_EXPRS_MAX / 2;

fn err(t: &Token, kind: K) -> ParseError {
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

fn value_mask(t: &Token) -> Result<(u32, u32), ParseError> {
    let (v, m) = match t.text.split_once('/') {
        Some((v, m)) => (parse_u32(v), parse_u32(m)),
        None => (parse_u32(&t.text), Some(u32::MAX)),
    };
    match (v, m) {
        (Some(v), Some(m)) => Ok((v, m)),
        _ => Err(err(t, K::BadNumber)),
    }
}

fn port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn port_range(t: &Token, s: &str) -> Result<PortRange, ParseError> {
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

fn owner(t: &Token) -> Result<Owner, ParseError> {
    let s = t.text.as_str();
    // `1000-2000` is a range; a name may hold a dash too (`istio-proxy`).
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if let Some((a, b)) = s.split_once('-').filter(|(a, _)| digits(a)) {
        return match (a.parse::<u32>(), b.parse::<u32>()) {
            (Ok(a), Ok(b)) if a <= b => Ok(Owner::Range(a, b)),
            _ => Err(err(t, K::BadNumber)),
        };
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(Owner::Id).map_err(|_| err(t, K::BadNumber));
    }
    let name_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if name_ok {
        Ok(Owner::Name(s.to_string()))
    } else {
        Err(err(t, K::BadNumber))
    }
}

fn protocol(t: &Token) -> Result<Option<L4Proto>, ParseError> {
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

fn addrs(t: &Token, family: IpVersion, opt: &'static str) -> Result<Vec<IpNet>, ParseError> {
    let mut out = Vec::new();
    for part in t.text.split(',') {
        let net = if let Some((a, m)) = part.split_once('/') {
            let addr: IpAddr = a.parse().map_err(|_| err(t, K::BadAddress(opt)))?;
            let len = match m.parse::<u8>() {
                Ok(l) => l,
                Err(_) => {
                    // A dotted mask: it must be contiguous.
                    let mask: IpAddr = m.parse().map_err(|_| err(t, K::BadAddress(opt)))?;
                    mask_len(mask).ok_or_else(|| err(t, K::BadAddress(opt)))?
                }
            };
            IpNet::new(addr, len).map_err(|_| err(t, K::BadAddress(opt)))?
        } else {
            let addr: IpAddr = part.parse().map_err(|_| err(t, K::BadAddress(opt)))?;
            IpNet::from(addr)
        };
        if IpVersion::of_net(&net) != family {
            return Err(err(t, K::BadAddress(opt)));
        }
        // iptables keeps the network: `10.1.2.3/8` is `10.0.0.0/8`.
        out.push(net.trunc());
    }
    Ok(out)
}

fn mask_len(mask: IpAddr) -> Option<u8> {
    let (bits, width) = match mask {
        IpAddr::V4(m) => (u128::from(u32::from(m)) << 96, 32),
        IpAddr::V6(m) => (u128::from(m), 128),
    };
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0 && len <= width).then_some(len as u8)
}

fn states(t: &Token) -> Result<CtStates, ParseError> {
    let mut s = CtStates::default();
    for part in t.text.split(',') {
        s = s.union(match part {
            "INVALID" => CtStates::INVALID,
            "NEW" => CtStates::NEW,
            "ESTABLISHED" => CtStates::ESTABLISHED,
            "RELATED" => CtStates::RELATED,
            "UNTRACKED" => CtStates::UNTRACKED,
            _ => return Err(err(t, K::BadState)),
        });
    }
    Ok(s)
}

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

/// A loaded match module and whether an option of it was seen.
struct Module {
    name: String,
    tok: Token,
    used: bool,
    implicit: bool,
}

/// Parse the options of one rule of `table`. Returns one rule per combination of
/// `-s`/`-d` addresses (usually one).
pub fn parse_rule(
    table: &IptTable,
    span: Span,
    toks: &[Token],
    family: IpVersion,
) -> Result<Vec<IptRule>, ParseError> {
    let mut matches: Vec<Spanned<IptMatch>> = Vec::new();
    let mut modules: Vec<Module> = Vec::new();
    let mut target: Option<(Spanned<Target>, String)> = None;
    let mut target_opts: Vec<(Token, Option<Token>)> = Vec::new();
    let mut proto: Option<(bool, Option<L4Proto>, Token)> = None;
    let mut srcs: Option<(bool, Vec<IpNet>, Span)> = None;
    let mut dsts: Option<(bool, Vec<IpNet>, Span)> = None;
    let mut i = 0;
    let mut comments = 0usize;
    let next = |i: &mut usize, opt: &Token| -> Result<Token, ParseError> {
        *i += 1;
        toks.get(*i)
            .cloned()
            .ok_or_else(|| err(opt, K::MissingValue))
    };
    while i < toks.len() {
        let mut t = toks[i].clone();
        let mut negate = false;
        if t.text == "!" {
            negate = true;
            i += 1;
            t = toks
                .get(i)
                .cloned()
                .ok_or_else(|| err(&toks[i - 1], K::BadNegation))?;
        }
        let span = t.span;
        let push =
            |m: IptMatch, ms: &mut Vec<Spanned<IptMatch>>| ms.push(Spanned { node: m, span });
        match t.text.as_str() {
            "-p" | "--protocol" => {
                let v = next(&mut i, &t)?;
                if proto.is_some() {
                    return Err(err(&t, K::Duplicate));
                }
                let p = protocol(&v)?;
                if p.is_none() && negate {
                    return Err(err(&t, K::BadNegation));
                }
                if let Some(p) = p {
                    push(IptMatch::Protocol { negate, proto: p }, &mut matches);
                    if !negate && matches!(p, L4Proto::Tcp | L4Proto::Udp) {
                        let name = if p == L4Proto::Tcp { "tcp" } else { "udp" };
                        modules.push(Module {
                            name: name.into(),
                            tok: v.clone(),
                            used: false,
                            implicit: true,
                        });
                    }
                }
                proto = Some((negate, p, v));
            }
            "-s" | "--source" | "--src" | "-d" | "--destination" | "--dst" => {
                let v = next(&mut i, &t)?;
                let src = matches!(t.text.as_str(), "-s" | "--source" | "--src");
                let opt = if src { "-s" } else { "-d" };
                let nets = addrs(&v, family, opt)?;
                let slot = if src { &mut srcs } else { &mut dsts };
                if slot.is_some() {
                    return Err(err(&t, K::Duplicate));
                }
                if negate && nets.len() > 1 {
                    return Err(err(&v, K::BadNegation));
                }
                *slot = Some((negate, nets, span));
            }
            "-i" | "--in-interface" | "-o" | "--out-interface" => {
                let v = next(&mut i, &t)?;
                let input = matches!(t.text.as_str(), "-i" | "--in-interface");
                let name = iface(&v)?;
                if matches
                    .iter()
                    .any(|m| matches!(&m.node, IptMatch::Interface { input: x, .. } if *x == input))
                {
                    return Err(err(&t, K::Duplicate));
                }
                push(
                    IptMatch::Interface {
                        input,
                        negate,
                        name,
                    },
                    &mut matches,
                );
            }
            "-m" | "--match" => {
                if negate {
                    return Err(err(&t, K::BadNegation));
                }
                let v = next(&mut i, &t)?;
                if v.text == MODULE_COMMENT || MODULES.contains(&v.text.as_str()) {
                    modules.push(Module {
                        name: v.text.clone(),
                        tok: v.clone(),
                        used: false,
                        implicit: false,
                    });
                } else {
                    return Err(err(&v, K::UnknownMatch));
                }
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                if negate {
                    return Err(err(&t, K::BadNegation));
                }
                let v = next(&mut i, &t)?;
                if target.is_some() {
                    return Err(err(&t, K::Duplicate));
                }
                let goto = matches!(t.text.as_str(), "-g" | "--goto");
                let tgt = match v.text.as_str() {
                    _ if goto || !TARGETS.contains(&v.text.as_str()) => {
                        let Some(c) = table.chain(&v.text) else {
                            return Err(err(
                                &v,
                                if goto {
                                    K::UnknownChain
                                } else {
                                    K::UnknownTarget
                                },
                            ));
                        };
                        if c.policy.is_some() {
                            return Err(err(&v, K::BuiltinChain));
                        }
                        if goto {
                            Target::Goto(v.text.clone())
                        } else {
                            Target::Jump(v.text.clone())
                        }
                    }
                    "ACCEPT" => Target::Accept,
                    "DROP" => Target::Drop,
                    "RETURN" => Target::Return,
                    "REDIRECT" => Target::Redirect { to_port: None },
                    "TPROXY" => Target::Tproxy {
                        on_port: 0,
                        on_ip: None,
                        mark: None,
                    },
                    "MARK" => Target::Mark { value: 0, mask: 0 },
                    "CONNMARK" => Target::ConnmarkSave,
                    "CT" => Target::CtZone(0),
                    "LOG" => Target::Log { prefix: None },
                    "SNAT" => Target::Snat {
                        to: IpAddr::from([0u8; 4]),
                    },
                    _ => return Err(err(&v, K::UnknownTarget)),
                };
                target = Some((
                    Spanned {
                        node: tgt,
                        span: v.span,
                    },
                    v.text.clone(),
                ));
            }
            opt if opt.starts_with("--")
                && target.as_ref().is_some_and(|(_, n)| target_has(n, opt)) =>
            {
                if negate {
                    return Err(err(&t, K::BadNegation));
                }
                let takes_value = !matches!(
                    opt,
                    "--save-mark"
                        | "--restore-mark"
                        | "--notrack"
                        | "--random"
                        | "--random-fully"
                        | "--persistent"
                        | "--log-tcp-sequence"
                        | "--log-tcp-options"
                        | "--log-ip-options"
                        | "--log-uid"
                );
                let v = if takes_value {
                    Some(next(&mut i, &t)?)
                } else {
                    None
                };
                if target_opts.iter().any(|(o, _)| o.text == t.text) {
                    return Err(err(&t, K::Duplicate));
                }
                target_opts.push((t.clone(), v));
            }
            opt if opt.starts_with("--") => {
                let owner_mod = |o: &str| -> Option<&'static str> {
                    Some(match o {
                        "--dport" | "--destination-port" | "--sport" | "--source-port" => "tcp|udp",
                        "--dports" | "--destination-ports" | "--sports" | "--source-ports" => {
                            "multiport"
                        }
                        "--uid-owner" | "--gid-owner" | "--socket-exists" => "owner",
                        "--match-set" => "set",
                        "--mark" => "mark|connmark",
                        "--ctstate" => "conntrack",
                        "--state" => "state",
                        "--transparent" => "socket",
                        "--comment" => "comment",
                        _ => return None,
                    })
                };
                let Some(wanted) = owner_mod(opt) else {
                    return Err(err(&t, K::UnsupportedOption));
                };
                let Some(m) = modules
                    .iter_mut()
                    .rev()
                    .find(|m| wanted.split('|').any(|w| w == m.name))
                else {
                    return Err(err(
                        &t,
                        if wanted == "tcp|udp" {
                            K::NeedsProtocol
                        } else {
                            K::UnsupportedOption
                        },
                    ));
                };
                m.used = true;
                let module = m.name.clone();
                let node = match opt {
                    "--dport" | "--destination-port" | "--sport" | "--source-port" => {
                        let v = next(&mut i, &t)?;
                        let dir = if opt.starts_with("--d") {
                            Direction::Dst
                        } else {
                            Direction::Src
                        };
                        let p = if module == "tcp" {
                            L4Proto::Tcp
                        } else {
                            L4Proto::Udp
                        };
                        IptMatch::Port {
                            module: PortModule::Proto,
                            proto: p,
                            dir,
                            negate,
                            ports: vec![port_range(&v, &v.text)?],
                        }
                    }
                    "--dports" | "--destination-ports" | "--sports" | "--source-ports" => {
                        let v = next(&mut i, &t)?;
                        let dir = if opt.starts_with("--d") {
                            Direction::Dst
                        } else {
                            Direction::Src
                        };
                        let mut ports = Vec::new();
                        let mut weight = 0;
                        for part in v.text.split(',') {
                            let r = port_range(&v, part)?;
                            weight += if r.first == r.last { 1 } else { 2 };
                            ports.push(r);
                        }
                        if weight > 15 {
                            return Err(err(&v, K::BadPort));
                        }
                        // The protocol is checked once the whole rule is read.
                        IptMatch::Port {
                            module: PortModule::Multiport,
                            proto: L4Proto::Tcp,
                            dir,
                            negate,
                            ports,
                        }
                    }
                    "--uid-owner" | "--gid-owner" => {
                        let v = next(&mut i, &t)?;
                        let kind = if opt == "--uid-owner" {
                            OwnerKind::Uid
                        } else {
                            OwnerKind::Gid
                        };
                        IptMatch::Owner {
                            kind,
                            negate,
                            owner: owner(&v)?,
                        }
                    }
                    "--mark" => {
                        let v = next(&mut i, &t)?;
                        let (value, mask) = value_mask(&v)?;
                        if module == "mark" {
                            IptMatch::Mark {
                                negate,
                                value,
                                mask,
                            }
                        } else {
                            IptMatch::Connmark {
                                negate,
                                value,
                                mask,
                            }
                        }
                    }
                    "--ctstate" | "--state" => {
                        let v = next(&mut i, &t)?;
                        IptMatch::CtState {
                            negate,
                            states: states(&v)?,
                        }
                    }
                    "--transparent" => {
                        if negate {
                            return Err(err(&t, K::BadNegation));
                        }
                        IptMatch::SocketTransparent
                    }
                    "--socket-exists" => IptMatch::SocketExists { negate },
                    "--match-set" => {
                        let name = next(&mut i, &t)?;
                        let flags = next(&mut i, &t)?;
                        let ok = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
                        if name.text.is_empty()
                            || name.text.len() > 31
                            || !name.text.chars().all(ok)
                        {
                            return Err(err(&name, K::BadSetName));
                        }
                        let dir = match flags.text.as_str() {
                            "src" => Direction::Src,
                            "dst" => Direction::Dst,
                            // Several dimensions (`src,dst`) name a set of tuples.
                            _ => return Err(err(&flags, K::UnsupportedOption)),
                        };
                        IptMatch::IpSet {
                            dir,
                            negate,
                            name: name.text.clone(),
                        }
                    }
                    _ => {
                        // --comment
                        let v = next(&mut i, &t)?;
                        if negate {
                            return Err(err(&t, K::BadNegation));
                        }
                        if v.text.len() > 256 {
                            return Err(err(&v, K::BadComment));
                        }
                        comments += 1;
                        IptMatch::Comment(v.text.clone())
                    }
                };
                push(node, &mut matches);
            }
            _ => return Err(err(&t, K::UnsupportedOption)),
        }
        // Every match takes at least two kernel expressions (a load and a compare), so a rule
        // with more than half the kernel's expressions per rule in matches can never be loaded.
        if matches.len() - comments > MAX_MATCHES {
            return Err(err(&t, K::TooManyMatches));
        }
        i += 1;
    }
    // Every module but the protocol ones needs one of its options.
    if let Some(m) = modules
        .iter()
        .find(|m| !m.used && !m.implicit && !matches!(m.name.as_str(), "tcp" | "udp"))
    {
        return Err(err(&m.tok, K::MissingValue));
    }
    // Port matches need a non-negated `-p tcp` or `-p udp` matching their module.
    let rule_proto = match &proto {
        Some((false, Some(p @ (L4Proto::Tcp | L4Proto::Udp)), _)) => Some(*p),
        _ => None,
    };
    for m in &modules {
        if !m.implicit && matches!(m.name.as_str(), "tcp" | "udp" | "multiport") {
            let want = match m.name.as_str() {
                "tcp" => Some(L4Proto::Tcp),
                "udp" => Some(L4Proto::Udp),
                _ => None,
            };
            if rule_proto.is_none() || (want.is_some() && want != rule_proto) {
                return Err(err(&m.tok, K::NeedsProtocol));
            }
        }
    }
    for m in &mut matches {
        if let IptMatch::Port { proto, .. } = &mut m.node {
            match rule_proto {
                Some(p) => *proto = p,
                None => return Err(ParseError::new(m.span, "port", K::NeedsProtocol)),
            }
        }
    }
    let target = match target {
        None => {
            if let Some((o, _)) = target_opts.first() {
                return Err(err(o, K::UnsupportedOption));
            }
            None
        }
        Some((mut tgt, name)) => {
            finish_target(&mut tgt, &name, &target_opts, rule_proto, family)?;
            Some(tgt)
        }
    };
    // One rule per (source, destination) pair, sources outermost, as iptables expands them.
    let one = |x: &Option<(bool, Vec<IpNet>, Span)>| -> Vec<Option<(bool, IpNet, Span)>> {
        match x {
            None => vec![None],
            Some((n, nets, s)) => nets.iter().map(|net| Some((*n, *net, *s))).collect(),
        }
    };
    let mut out = Vec::new();
    for s in one(&srcs) {
        for d in one(&dsts) {
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
    Ok(out)
}

fn target_has(target: &str, opt: &str) -> bool {
    let opts: &[&str] = match target {
        "REDIRECT" => &["--to-ports", "--to-port", "--random"],
        "TPROXY" => &["--on-port", "--on-ip", "--tproxy-mark"],
        "MARK" => &[
            "--set-mark",
            "--set-xmark",
            "--and-mark",
            "--or-mark",
            "--xor-mark",
        ],
        "CONNMARK" => &[
            "--save-mark",
            "--restore-mark",
            "--set-mark",
            "--set-xmark",
            "--nfmask",
            "--ctmask",
            "--mask",
        ],
        "CT" => &[
            "--zone",
            "--notrack",
            "--helper",
            "--ctevents",
            "--expevents",
            "--timeout",
            "--zone-orig",
            "--zone-reply",
        ],
        "SNAT" => &["--to-source", "--random", "--random-fully", "--persistent"],
        "LOG" => &[
            "--log-prefix",
            "--log-level",
            "--log-tcp-sequence",
            "--log-tcp-options",
            "--log-ip-options",
            "--log-uid",
        ],
        _ => &[],
    };
    opts.contains(&opt)
}

fn finish_target(
    tgt: &mut Spanned<Target>,
    name: &str,
    opts: &[(Token, Option<Token>)],
    rule_proto: Option<L4Proto>,
    family: IpVersion,
) -> Result<(), ParseError> {
    let here = Token {
        text: name.to_string(),
        span: tgt.span,
    };
    let get = |o: &str| {
        opts.iter()
            .find(|(t, _)| t.text == o)
            .and_then(|(_, v)| v.clone())
    };
    let has = |o: &str| opts.iter().any(|(t, _)| t.text == o);
    match name {
        "REDIRECT" => {
            if let Some((t, _)) = opts.iter().find(|(t, _)| t.text == "--random") {
                return Err(err(t, K::UnsupportedOption));
            }
            if has("--to-ports") && has("--to-port") {
                return Err(err(&here, K::Duplicate));
            }
            if let Some(v) = get("--to-ports").or_else(|| get("--to-port")) {
                if rule_proto.is_none() {
                    return Err(err(&here, K::NeedsProtocol));
                }
                let r = port_range(&v, &v.text)?;
                if r.first != r.last {
                    return Err(err(
                        &v,
                        K::BadTarget("REDIRECT to a port range is not supported"),
                    ));
                }
                tgt.node = Target::Redirect {
                    to_port: Some(r.first),
                };
            }
        }
        "TPROXY" => {
            if rule_proto.is_none() {
                return Err(err(&here, K::NeedsProtocol));
            }
            let p = get("--on-port")
                .ok_or_else(|| err(&here, K::BadTarget("TPROXY needs --on-port")))?;
            let on_port = port(&p.text).ok_or_else(|| err(&p, K::BadPort))?;
            let on_ip = match get("--on-ip") {
                None => None,
                Some(v) => Some(
                    v.text
                        .parse::<IpAddr>()
                        .map_err(|_| err(&v, K::BadAddress("--on-ip")))?,
                ),
            }
            // iptables-save writes `--on-ip 0.0.0.0` for "no address": both let the kernel
            // choose the local address (the incoming device's, else the destination).
            .filter(|a| !a.is_unspecified());
            let mark = match get("--tproxy-mark") {
                None => None,
                Some(v) => Some(value_mask(&v)?),
            };
            tgt.node = Target::Tproxy {
                on_port,
                on_ip,
                mark,
            };
        }
        "MARK" => {
            if opts.len() != 1 {
                return Err(err(&here, K::BadTarget("MARK needs exactly one of --set-mark, --set-xmark, --and-mark, --or-mark, --xor-mark")));
            }
            let (o, v) = &opts[0];
            let Some(v) = v else {
                return Err(err(o, K::MissingValue));
            };
            let (value, mask) = match o.text.as_str() {
                "--set-xmark" => value_mask(v)?,
                "--set-mark" => {
                    let (val, m) = value_mask(v)?;
                    (val, val | m)
                }
                _ => {
                    let m = parse_u32(&v.text).ok_or_else(|| err(v, K::BadNumber))?;
                    match o.text.as_str() {
                        "--and-mark" => (0, !m),
                        "--or-mark" => (m, m),
                        _ => (m, 0),
                    }
                }
            };
            tgt.node = Target::Mark { value, mask };
        }
        "CONNMARK" => {
            for mask_opt in ["--nfmask", "--ctmask", "--mask"] {
                if let Some(v) = get(mask_opt) {
                    if parse_u32(&v.text) != Some(u32::MAX) {
                        return Err(err(
                            &v,
                            K::BadTarget("CONNMARK masks other than 0xffffffff are not supported"),
                        ));
                    }
                }
            }
            let modes: Vec<&(Token, Option<Token>)> = opts
                .iter()
                .filter(|(t, _)| {
                    matches!(
                        t.text.as_str(),
                        "--save-mark" | "--restore-mark" | "--set-mark" | "--set-xmark"
                    )
                })
                .collect();
            let [(o, v)] = modes.as_slice() else {
                return Err(err(&here, K::BadTarget("CONNMARK needs exactly one of --save-mark, --restore-mark, --set-mark, --set-xmark")));
            };
            tgt.node = match o.text.as_str() {
                "--save-mark" => Target::ConnmarkSave,
                "--restore-mark" => Target::ConnmarkRestore,
                mode => {
                    let Some(v) = v else {
                        return Err(err(o, K::MissingValue));
                    };
                    let (val, m) = value_mask(v)?;
                    let mask = if mode == "--set-mark" { val | m } else { m };
                    Target::ConnmarkSet { value: val, mask }
                }
            };
            if opts.len() != 1 && matches!(tgt.node, Target::ConnmarkSet { .. }) {
                return Err(err(
                    &here,
                    K::BadTarget("CONNMARK --set-mark takes no --nfmask/--ctmask"),
                ));
            }
        }
        "CT" => {
            if let Some((t, _)) = opts.iter().find(|(t, _)| t.text != "--zone") {
                return Err(err(t, K::UnsupportedOption));
            }
            let v = get("--zone").ok_or_else(|| err(&here, K::BadTarget("CT needs --zone")))?;
            let z = v.text.parse::<u16>().map_err(|_| err(&v, K::BadNumber))?;
            tgt.node = Target::CtZone(z);
        }
        "SNAT" => {
            if let Some((t, _)) = opts.iter().find(|(t, _)| t.text != "--to-source") {
                return Err(err(t, K::UnsupportedOption));
            }
            let v = get("--to-source")
                .ok_or_else(|| err(&here, K::BadTarget("SNAT needs --to-source")))?;
            // One address: ranges (`A-B`) and ports (`A:P`) are not supported.
            let to: IpAddr = v
                .text
                .parse()
                .map_err(|_| err(&v, K::BadAddress("--to-source")))?;
            if IpVersion::of(to) != family {
                return Err(err(&v, K::BadAddress("--to-source")));
            }
            tgt.node = Target::Snat { to };
        }
        "LOG" => {
            if let Some((t, _)) = opts.iter().find(|(t, _)| t.text != "--log-prefix") {
                return Err(err(t, K::UnsupportedOption));
            }
            if let Some(p) = get("--log-prefix") {
                if p.text.len() > 29 {
                    return Err(err(
                        &p,
                        K::BadTarget("LOG prefix longer than 29 characters"),
                    ));
                }
                tgt.node = Target::Log {
                    prefix: Some(p.text),
                };
            }
        }
        _ => {}
    }
    Ok(())
}
