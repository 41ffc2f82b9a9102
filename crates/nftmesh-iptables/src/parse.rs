//! iptables-restore input → [`IptRuleset`]: table blocks, chain declarations and the commands
//! `-N -A -I -F -X -P -Z`, applied in order as iptables-restore applies them, then checked at
//! each `COMMIT` (see [`crate::validate`]).
//!
//! A `*table` block starts from an empty table (iptables-restore without `--noflush` flushes
//! every table it writes); a table written twice keeps its last block. Lines starting with `#`
//! and blank lines are ignored; a leading `[packets:bytes]` counter on a rule is accepted and
//! dropped (counters are not rules).

use crate::ast::{ChainPolicy, IptChain, IptRuleset, IptTable, Span, TableName};
use crate::error::{ParseError, ParseErrorKind as K};
use crate::lex::{tokenize, Token};
use crate::rule::parse_rule;
use nftmesh_model::expr::IpVersion;

/// Parse iptables-save / iptables-restore text of one family (`IpVersion::V4` for
/// `iptables-restore`, `V6` for `ip6tables-restore`).
pub fn parse(text: &str, family: IpVersion) -> Result<IptRuleset, ParseError> {
    parse_lines(text.lines().enumerate().map(|(i, l)| (i + 1, l)), family)
}

/// Parse numbered lines (line numbers as in the original input).
pub fn parse_lines<'a>(
    lines: impl IntoIterator<Item = (usize, &'a str)>,
    family: IpVersion,
) -> Result<IptRuleset, ParseError> {
    let mut out = IptRuleset {
        family,
        tables: Vec::new(),
    };
    let mut open: Option<(IptTable, Span)> = None;
    let mut last_line = 0;
    for (lineno, line) in lines {
        last_line = lineno;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut toks = tokenize(line, lineno)?;
        // A leading rule counter, as `iptables-save -c` writes it.
        if toks.len() > 1 && is_counter(&toks[0].text) {
            toks.remove(0);
        }
        let first = toks[0].clone();
        if let Some(rest) = first.text.strip_prefix('*') {
            if open.is_some() {
                return Err(ParseError::new(
                    first.span,
                    &first.text,
                    K::TableNotCommitted,
                ));
            }
            let (name_tok, extra) = if rest.is_empty() {
                (toks.get(1).cloned(), toks.get(2))
            } else {
                (
                    Some(Token {
                        text: rest.to_string(),
                        span: Span {
                            line: first.span.line,
                            col: first.span.col + 1,
                        },
                    }),
                    toks.get(1),
                )
            };
            let name_tok =
                name_tok.ok_or_else(|| ParseError::new(first.span, "*", K::MissingValue))?;
            if let Some(x) = extra {
                return Err(ParseError::new(x.span, &x.text, K::UnknownCommand));
            }
            let name = TableName::from_keyword(&name_tok.text)
                .ok_or_else(|| ParseError::new(name_tok.span, &name_tok.text, K::UnknownTable))?;
            let chains = name
                .builtin_chains()
                .iter()
                .map(|c| IptChain {
                    name: c.to_string(),
                    policy: Some(ChainPolicy::Accept),
                    rules: Vec::new(),
                })
                .collect();
            open = Some((IptTable { name, chains }, first.span));
            continue;
        }
        let Some((table, _)) = open.as_mut() else {
            return Err(ParseError::new(first.span, &first.text, K::OutsideTable));
        };
        if first.text == "COMMIT" {
            if let Some(x) = toks.get(1) {
                return Err(ParseError::new(x.span, &x.text, K::UnknownCommand));
            }
            let Some((table, _)) = open.take() else {
                unreachable!("checked above");
            };
            crate::validate::validate(&table)?;
            out.tables.retain(|t| t.name != table.name);
            out.tables.push(table);
            continue;
        }
        if let Some(name) = first.text.strip_prefix(':') {
            declare(table, &first, name, &toks[1..])?;
            continue;
        }
        command(table, &toks, family)?;
    }
    if let Some((_, span)) = open {
        return Err(ParseError::new(
            Span {
                line: last_line.max(span.line),
                col: 1,
            },
            "end of input",
            K::MissingCommit,
        ));
    }
    Ok(out)
}

fn is_counter(s: &str) -> bool {
    s.strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.split_once(':'))
        .is_some_and(|(p, b)| {
            !p.is_empty()
                && !b.is_empty()
                && p.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        })
}

fn is_builtin(table: &IptTable, name: &str) -> bool {
    table.name.builtin_chains().contains(&name)
}

/// Check a user chain name as iptables does: 1 to 28 characters, no blank, not starting with
/// `-` or `!`, not a target name.
fn check_chain_name(tok: &Token, name: &str) -> Result<(), ParseError> {
    let reserved = crate::rule::TARGETS.contains(&name);
    if name.is_empty()
        || name.chars().count() > 28
        || name.starts_with('-')
        || name.starts_with('!')
        || reserved
    {
        return Err(ParseError::new(tok.span, name, K::BadChainName));
    }
    Ok(())
}

fn declare(
    table: &mut IptTable,
    first: &Token,
    name: &str,
    rest: &[Token],
) -> Result<(), ParseError> {
    let Some(pol) = rest.first() else {
        return Err(ParseError::new(first.span, &first.text, K::MissingValue));
    };
    if let Some(x) = rest.get(1) {
        if !is_counter(&x.text) || rest.len() > 2 {
            let x = rest
                .get(if is_counter(&x.text) { 2 } else { 1 })
                .unwrap_or(x);
            return Err(ParseError::new(x.span, &x.text, K::UnknownCommand));
        }
    }
    if is_builtin(table, name) {
        let policy = match pol.text.as_str() {
            "ACCEPT" => ChainPolicy::Accept,
            "DROP" => ChainPolicy::Drop,
            _ => return Err(ParseError::new(pol.span, &pol.text, K::BadPolicy)),
        };
        if let Some(c) = table.chains.iter_mut().find(|c| c.name == name) {
            c.policy = Some(policy);
        }
        return Ok(());
    }
    if pol.text != "-" {
        return Err(ParseError::new(pol.span, &pol.text, K::BadPolicy));
    }
    new_chain(table, first, name)
}

fn new_chain(table: &mut IptTable, tok: &Token, name: &str) -> Result<(), ParseError> {
    if is_builtin(table, name) || table.chain(name).is_some() {
        return Err(ParseError::new(tok.span, name, K::ChainExists));
    }
    check_chain_name(tok, name)?;
    table.chains.push(IptChain {
        name: name.to_string(),
        policy: None,
        rules: Vec::new(),
    });
    Ok(())
}

fn chain_index(table: &IptTable, tok: &Token) -> Result<usize, ParseError> {
    table
        .chains
        .iter()
        .position(|c| c.name == tok.text)
        .ok_or_else(|| ParseError::new(tok.span, &tok.text, K::UnknownChain))
}

fn command(table: &mut IptTable, toks: &[Token], family: IpVersion) -> Result<(), ParseError> {
    let cmd = &toks[0];
    let arg = toks.get(1);
    let need_arg = || {
        arg.cloned()
            .ok_or_else(|| ParseError::new(cmd.span, &cmd.text, K::MissingValue))
    };
    match cmd.text.as_str() {
        "-N" | "--new-chain" => {
            let a = need_arg()?;
            if let Some(x) = toks.get(2) {
                return Err(ParseError::new(x.span, &x.text, K::UnknownCommand));
            }
            new_chain(table, &a, &a.text)
        }
        "-A" | "--append" | "-I" | "--insert" => {
            let a = need_arg()?;
            let idx = chain_index(table, &a)?;
            let insert = matches!(cmd.text.as_str(), "-I" | "--insert");
            let mut rest = &toks[2..];
            let mut pos = if insert { Some(0) } else { None };
            if insert {
                if let Some(n) = rest
                    .first()
                    .filter(|t| t.text.bytes().all(|b| b.is_ascii_digit()))
                {
                    let v: usize = n
                        .text
                        .parse()
                        .map_err(|_| ParseError::new(n.span, &n.text, K::BadNumber))?;
                    if v == 0 || v > table.chains[idx].rules.len() + 1 {
                        return Err(ParseError::new(n.span, &n.text, K::BadPosition));
                    }
                    pos = Some(v - 1);
                    rest = &rest[1..];
                }
            }
            let rules = parse_rule(table, cmd.span, rest, family)?;
            let chain = &mut table.chains[idx];
            match pos {
                None => chain.rules.extend(rules),
                Some(p) => {
                    for (k, r) in rules.into_iter().enumerate() {
                        chain.rules.insert(p + k, r);
                    }
                }
            }
            Ok(())
        }
        "-F" | "--flush" => {
            match arg {
                None => table.chains.iter_mut().for_each(|c| c.rules.clear()),
                Some(a) => {
                    let idx = chain_index(table, a)?;
                    table.chains[idx].rules.clear();
                }
            }
            extra(toks, 2)
        }
        "-Z" | "--zero" => {
            if let Some(a) = arg {
                chain_index(table, a)?;
            }
            extra(toks, 2)
        }
        "-X" | "--delete-chain" => {
            extra(toks, 2)?;
            let names: Vec<(String, Span)> = match arg {
                None => table
                    .chains
                    .iter()
                    .filter(|c| c.policy.is_none())
                    .map(|c| (c.name.clone(), cmd.span))
                    .collect(),
                Some(a) => {
                    let idx = chain_index(table, a)?;
                    if table.chains[idx].policy.is_some() {
                        return Err(ParseError::new(a.span, &a.text, K::BuiltinChain));
                    }
                    vec![(a.text.clone(), a.span)]
                }
            };
            for (name, span) in &names {
                let own_rules = table.chain(name).is_some_and(|c| !c.rules.is_empty());
                // Without an argument, chains are deleted together: references among them go
                // too (they are empty, so there are none left to check but the built-ins').
                let others_refer = table
                    .chains
                    .iter()
                    .filter(|c| arg.is_some() || !names.iter().any(|(n, _)| n == &c.name))
                    .flat_map(|c| &c.rules)
                    .any(|r| {
                        matches!(&r.target, Some(t) if matches!(&t.node,
                        crate::ast::Target::Jump(c) | crate::ast::Target::Goto(c) if c == name))
                    });
                // As iptables: a deleted chain must be empty, with or without a name given.
                if own_rules || others_refer {
                    return Err(ParseError::new(*span, name, K::ChainInUse));
                }
            }
            table
                .chains
                .retain(|c| !names.iter().any(|(n, _)| n == &c.name));
            Ok(())
        }
        "-P" | "--policy" => {
            let a = need_arg()?;
            let idx = chain_index(table, &a)?;
            let pol = toks
                .get(2)
                .ok_or_else(|| ParseError::new(a.span, &a.text, K::MissingValue))?;
            extra(toks, 3)?;
            if table.chains[idx].policy.is_none() {
                return Err(ParseError::new(a.span, &a.text, K::BadPolicy));
            }
            table.chains[idx].policy = Some(match pol.text.as_str() {
                "ACCEPT" => ChainPolicy::Accept,
                "DROP" => ChainPolicy::Drop,
                _ => return Err(ParseError::new(pol.span, &pol.text, K::BadPolicy)),
            });
            Ok(())
        }
        _ => Err(ParseError::new(cmd.span, &cmd.text, K::UnknownCommand)),
    }
}

fn extra(toks: &[Token], n: usize) -> Result<(), ParseError> {
    match toks.get(n) {
        Some(x) => Err(ParseError::new(x.span, &x.text, K::UnknownCommand)),
        None => Ok(()),
    }
}
