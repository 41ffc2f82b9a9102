//! Rendering a [`Ruleset`] as text that `nft -f` reads.
//!
//! The output is a command script in the style of Istio's goldens: per table `add table`,
//! `flush table`, `add chain` for every chain (so jumps can point forward), `add set` with its
//! elements, then `add rule` for every rule in order. Loading it replaces the rules of the
//! rendered tables in one `nft` transaction.

use crate::expr::{
    CtStates, Direction, IpVersion, L4Proto, MarkValue, Match, Owner, PortRange, Statement, Values,
    Verdict,
};
use crate::ruleset::{Chain, Policy, Rule, Ruleset, Set, SetElement, Table};
use ipnet::IpNet;
use std::fmt::Write;

/// Render a whole ruleset as an `nft -f` script.
pub fn render(ruleset: &Ruleset) -> String {
    let mut out = String::new();
    for table in &ruleset.tables {
        render_table(&mut out, table);
    }
    out
}

fn render_table(out: &mut String, table: &Table) {
    let t = format!("{} {}", table.family.keyword(), table.name);
    let _ = writeln!(out, "add table {t}");
    let _ = writeln!(out, "flush table {t}");
    for chain in &table.chains {
        let _ = writeln!(out, "add chain {t} {}", chain_spec(chain));
    }
    for set in &table.sets {
        let _ = writeln!(out, "add set {t} {}", set_spec(set));
    }
    for chain in &table.chains {
        for rule in &chain.rules {
            let _ = writeln!(out, "add rule {t} {} {}", chain.name, render_rule(rule));
        }
    }
}

fn chain_spec(chain: &Chain) -> String {
    match &chain.base {
        None => chain.name.clone(),
        Some(b) => format!(
            "{} {{ type {} hook {} priority {} ; policy {} ; }}",
            chain.name,
            b.kind.keyword(),
            b.hook.keyword(),
            b.priority,
            match b.policy {
                Policy::Accept => "accept",
                Policy::Drop => "drop",
            }
        ),
    }
}

fn set_spec(set: &Set) -> String {
    let mut s = format!("{} {{ type {} ;", set.name, set.key_type.keyword());
    if set.interval {
        s.push_str(" flags interval ;");
    }
    if !set.elements.is_empty() {
        let elems: Vec<String> = set.elements.iter().map(set_element).collect();
        let _ = write!(s, " elements = {{ {} }} ;", elems.join(", "));
    }
    s.push_str(" }");
    s
}

fn set_element(e: &SetElement) -> String {
    match e {
        SetElement::Prefix(net) => prefix(net),
        SetElement::Range(a, b) if a == b => a.to_string(),
        SetElement::Range(a, b) => format!("{a}-{b}"),
        SetElement::Name(n) => quote(n),
    }
}

/// Render one rule's body (what follows `add rule FAMILY TABLE CHAIN`).
pub fn render_rule(rule: &Rule) -> String {
    let mut parts: Vec<String> = rule.matches.iter().map(render_match).collect();
    parts.extend(rule.statements.iter().map(render_statement));
    if let Some(c) = &rule.comment {
        parts.push(format!("comment {}", quote(c)));
    }
    parts.join(" ")
}

fn quote(s: &str) -> String {
    format!("\"{s}\"")
}

fn prefix(net: &IpNet) -> String {
    format!("{}/{}", net.addr(), net.prefix_len())
}

fn values<T>(v: &Values<T>, one: impl Fn(&T) -> String) -> String {
    match v {
        Values::One(x) => one(x),
        Values::Set(xs) => {
            let items: Vec<String> = xs.iter().map(one).collect();
            format!("{{ {} }}", items.join(", "))
        }
        Values::Named(n) => format!("@{n}"),
    }
}

fn op(negate: bool) -> &'static str {
    if negate {
        "!= "
    } else {
        ""
    }
}

fn l4proto(p: L4Proto) -> String {
    match p {
        L4Proto::Tcp => "tcp".into(),
        L4Proto::Udp => "udp".into(),
        L4Proto::Icmp => "icmp".into(),
        L4Proto::Icmpv6 => "ipv6-icmp".into(),
        L4Proto::Other(n) => n.to_string(),
    }
}

fn port_range(r: &PortRange) -> String {
    if r.first == r.last {
        r.first.to_string()
    } else {
        format!("{}-{}", r.first, r.last)
    }
}

fn owner(o: &Owner) -> String {
    match o {
        Owner::Id(id) => id.to_string(),
        Owner::Range(a, b) => format!("{a}-{b}"),
        Owner::Name(n) => n.clone(),
    }
}

fn masked(key: &str, negate: bool, mask: u32, value: u32) -> String {
    if mask == u32::MAX {
        format!("{key} {}{value:#x}", op(negate))
    } else {
        let cmp = if negate { "!=" } else { "==" };
        format!("{key} and {mask:#x} {cmp} {value:#x}")
    }
}

fn ct_states(states: CtStates) -> String {
    let names: Vec<&str> = CtStates::NAMES
        .iter()
        .filter(|(s, _)| states.intersects(*s))
        .map(|(_, n)| *n)
        .collect();
    names.join(",")
}

fn ip_keyword(v: IpVersion) -> &'static str {
    match v {
        IpVersion::V4 => "ip",
        IpVersion::V6 => "ip6",
    }
}

fn dir_keyword(d: Direction, addr: bool) -> &'static str {
    match (d, addr) {
        (Direction::Src, true) => "saddr",
        (Direction::Dst, true) => "daddr",
        (Direction::Src, false) => "sport",
        (Direction::Dst, false) => "dport",
    }
}

/// Render one match in `nft` syntax.
pub fn render_match(m: &Match) -> String {
    match m {
        Match::Nfproto { version } => format!(
            "meta nfproto {}",
            match version {
                IpVersion::V4 => "ipv4",
                IpVersion::V6 => "ipv6",
            }
        ),
        Match::L4Proto { negate, proto } => {
            format!("meta l4proto {}{}", op(*negate), l4proto(*proto))
        }
        Match::Addr {
            dir,
            version,
            negate,
            values: v,
        } => format!(
            "{} {} {}{}",
            ip_keyword(*version),
            dir_keyword(*dir, true),
            op(*negate),
            values(v, prefix)
        ),
        Match::Port {
            dir,
            proto,
            negate,
            values: v,
        } => format!(
            "{} {} {}{}",
            l4proto(*proto),
            dir_keyword(*dir, false),
            op(*negate),
            values(v, port_range)
        ),
        Match::Iifname { negate, values: v } => {
            format!("iifname {}{}", op(*negate), values(v, |s| quote(s)))
        }
        Match::Oifname { negate, values: v } => {
            format!("oifname {}{}", op(*negate), values(v, |s| quote(s)))
        }
        Match::SkUid { negate, values: v } => {
            format!("meta skuid {}{}", op(*negate), values(v, owner))
        }
        Match::SkGid { negate, values: v } => {
            format!("meta skgid {}{}", op(*negate), values(v, owner))
        }
        Match::Mark {
            negate,
            mask,
            value,
        } => masked("meta mark", *negate, *mask, *value),
        Match::CtMark {
            negate,
            mask,
            value,
        } => masked("ct mark", *negate, *mask, *value),
        Match::CtState { negate, states } => {
            format!("ct state {}{}", op(*negate), ct_states(*states))
        }
        Match::SocketTransparent => "socket transparent 1".into(),
    }
}

fn mark_value(own: &str, v: &MarkValue) -> String {
    match v {
        MarkValue::Value(x) => format!("{x:#x}"),
        MarkValue::Bitwise { and, xor } => format!("{own} and {and:#x} xor {xor:#x}"),
        MarkValue::FromMark => "meta mark".into(),
        MarkValue::FromCtMark => "ct mark".into(),
    }
}

/// Render one statement in `nft` syntax.
pub fn render_statement(s: &Statement) -> String {
    match s {
        Statement::Counter => "counter".into(),
        Statement::Log { prefix: None } => "log".into(),
        Statement::Log { prefix: Some(p) } => format!("log prefix {}", quote(p)),
        Statement::MarkSet(v) => format!("meta mark set {}", mark_value("meta mark", v)),
        Statement::CtMarkSet(v) => format!("ct mark set {}", mark_value("ct mark", v)),
        Statement::CtZoneSet(z) => format!("ct zone set {z}"),
        Statement::Snat { version, addr } => match version {
            Some(v) => format!("snat {} to {addr}", ip_keyword(*v)),
            None => format!("snat to {addr}"),
        },
        Statement::Redirect { port: None } => "redirect".into(),
        Statement::Redirect { port: Some(p) } => format!("redirect to :{p}"),
        Statement::Tproxy {
            version,
            addr,
            port,
        } => {
            let mut s = String::from("tproxy");
            if let Some(v) = version {
                s.push(' ');
                s.push_str(ip_keyword(*v));
            }
            s.push_str(" to ");
            match addr {
                Some(std::net::IpAddr::V6(a)) => {
                    let _ = write!(s, "[{a}]");
                }
                Some(std::net::IpAddr::V4(a)) => {
                    let _ = write!(s, "{a}");
                }
                None => {}
            }
            if let Some(p) = port {
                let _ = write!(s, ":{p}");
            }
            s
        }
        Statement::Verdict(v) => match v {
            Verdict::Accept => "accept".into(),
            Verdict::Drop => "drop".into(),
            Verdict::Return => "return".into(),
            Verdict::Jump(c) => format!("jump {c}"),
            Verdict::Goto(c) => format!("goto {c}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples;

    #[test]
    fn every_match_variant_renders_as_its_sample_says() {
        let mut seen = std::collections::BTreeSet::new();
        for (m, text) in samples::matches() {
            assert_eq!(render_match(&m), text);
            seen.insert(samples::variant_of_match(&m));
        }
        assert_eq!(seen, samples::MATCH_VARIANTS.into_iter().collect());
    }

    #[test]
    fn every_statement_variant_renders_as_its_sample_says() {
        let mut seen = std::collections::BTreeSet::new();
        for (s, text) in samples::statements() {
            assert_eq!(render_statement(&s), text);
            seen.insert(samples::variant_of_statement(&s));
        }
        assert_eq!(seen, samples::STATEMENT_VARIANTS.into_iter().collect());
    }
}
