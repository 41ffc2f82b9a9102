//! Splitting one line of iptables-restore input into tokens, as iptables-restore does: blanks
//! separate tokens, `"..."` and `'...'` quote (a backslash escapes the next character inside
//! double quotes), `#` at the start of a line is a comment.

use crate::ast::Span;
use crate::error::{ParseError, ParseErrorKind};

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The token's text, quotes removed.
    pub text: String,
    /// Its position.
    pub span: Span,
}

/// Split `line` (line number `lineno`) into tokens.
pub fn tokenize(line: &str, lineno: usize) -> Result<Vec<Token>, ParseError> {
    let mut out = Vec::new();
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let start = Span {
            line: lineno,
            col: i + 1,
        };
        let mut text = String::new();
        while i < chars.len() && !chars[i].is_whitespace() {
            let c = chars[i];
            if c == '"' || c == '\'' {
                let open = i;
                i += 1;
                loop {
                    let Some(&d) = chars.get(i) else {
                        return Err(ParseError::new(
                            Span {
                                line: lineno,
                                col: open + 1,
                            },
                            chars[open..].iter().collect::<String>(),
                            ParseErrorKind::UnterminatedQuote,
                        ));
                    };
                    i += 1;
                    if d == c {
                        break;
                    }
                    if d == '\\' && c == '"' {
                        if let Some(&e) = chars.get(i) {
                            text.push(e);
                            i += 1;
                            continue;
                        }
                    }
                    text.push(d);
                }
            } else {
                text.push(c);
                i += 1;
            }
        }
        out.push(Token { text, span: start });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_group_and_escape() {
        let t = tokenize(r#"-A X -m comment --comment "a \"b\" c" -j 'Y Z'"#, 3).unwrap();
        let texts: Vec<_> = t.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "Y Z"
            ]
        );
        assert_eq!(t[5].span, Span { line: 3, col: 27 });
    }

    #[test]
    fn unterminated_quote_names_its_column() {
        let e = tokenize("-A X -m comment --comment \"abc", 7).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::UnterminatedQuote);
        assert_eq!(e.span, Span { line: 7, col: 27 });
    }
}
