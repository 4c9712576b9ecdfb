//! The `--where` grammar ([`Filter::parse`]): a tokenizer and a recursive-descent
//! parser whose errors name the position.

use super::filter::{error_at, Filter};
use crate::error::Result;
use serde_json::Value;

/// Deepest nesting of parentheses and `not`: a bound, so that no input can exhaust the stack.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(Value),
    Op(&'static str),
    Open,
    Close,
    Comma,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Str(s) => format!("the string {s:?}"),
            Tok::Num(n) => format!("the number {n}"),
            Tok::Op(o) => format!("`{o}`"),
            Tok::Open => "`(`".into(),
            Tok::Close => "`)`".into(),
            Tok::Comma => "`,`".into(),
            Tok::End => "the end".into(),
        }
    }
    fn keyword(&self, k: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(k))
    }
}

fn tokens(text: &str) -> Result<Vec<(usize, Tok)>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => (out.push((i, Tok::Open)), i += 1).1,
            b')' => (out.push((i, Tok::Close)), i += 1).1,
            b',' => (out.push((i, Tok::Comma)), i += 1).1,
            b'=' => (out.push((i, Tok::Op("="))), i += if b.get(i + 1) == Some(&b'=') { 2 } else { 1 }).1,
            b'!' if b.get(i + 1) == Some(&b'=') => (out.push((i, Tok::Op("!="))), i += 2).1,
            b'<' | b'>' => {
                let eq = b.get(i + 1) == Some(&b'=');
                let op = match (c, eq) {
                    (b'<', true) => "<=",
                    (b'<', false) => "<",
                    (_, true) => ">=",
                    _ => ">",
                };
                out.push((i, Tok::Op(op)));
                i += 1 + eq as usize;
            }
            b'"' => {
                // A JSON string: find its closing quote, skipping escapes, and let
                // serde_json decode it.
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                if j >= b.len() {
                    return Err(error_at(text, start, "the string has no closing quote"));
                }
                let s: String = serde_json::from_str(&text[i..=j]).map_err(|e| error_at(text, start, format!("bad string: {e}")))?;
                out.push((i, Tok::Str(s)));
                i = j + 1;
            }
            _ if c == b'-' || c == b'+' || c.is_ascii_digit() => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || matches!(b[j], b'.' | b'-' | b'+' | b'_')) {
                    j += 1;
                }
                let word = &text[i..j];
                match serde_json::from_str::<Value>(word.trim_start_matches('+')) {
                    Ok(n @ Value::Number(_)) => out.push((i, Tok::Num(n))),
                    _ => out.push((i, Tok::Word(word.to_string()))),
                }
                i = j;
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || matches!(b[j], b'_' | b'-' | b'.') || b[j] >= 0x80) {
                    j += 1;
                }
                out.push((i, Tok::Word(text[i..j].to_string())));
                i = j;
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(error_at(text, start, format!("unexpected `{ch}`")));
            }
        }
    }
    out.push((text.len(), Tok::End));
    Ok(out)
}

struct Parser<'a> {
    text: &'a str,
    toks: Vec<(usize, Tok)>,
    at: usize,
    depth: usize,
}

impl Filter {
    /// Parses the `--where` grammar:
    ///
    /// ```text
    /// expr  := and ("or" and)*
    /// and   := unary ("and" unary)*
    /// unary := "not" unary | "(" expr ")" | "exists" "(" KEY ")"
    ///        | KEY ("=" | "!=" | "<" | "<=" | ">" | ">=") VALUE
    ///        | KEY "in" "(" VALUE ("," VALUE)* ")"
    /// VALUE := a JSON number, string ("..."), true, false or null; or a bare word (a string)
    /// KEY   := letters, digits, `_`, `-` and `.` (nested fields)
    /// ```
    ///
    /// Keywords are case-insensitive. An error names the position (1-based, in
    /// characters) and what was expected there.
    pub fn parse(text: &str) -> Result<Filter> {
        parse(text)
    }
}

fn parse(text: &str) -> Result<Filter> {
    if text.trim().is_empty() {
        return Err(error_at(text, 0, "the filter is empty"));
    }
    let mut p = Parser { text, toks: tokens(text)?, at: 0, depth: 0 };
    let f = p.or()?;
    match p.peek() {
        Tok::End => Ok(f),
        t => Err(p.error(format!("expected `and`, `or` or the end, found {}", t.describe()))),
    }
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].1
    }
    fn next(&mut self) -> Tok {
        let t = self.toks[self.at].1.clone();
        if t != Tok::End {
            self.at += 1;
        }
        t
    }
    fn error(&self, what: impl std::fmt::Display) -> crate::error::Error {
        error_at(self.text, self.toks[self.at].0, what)
    }
    fn expect(&mut self, want: Tok) -> Result<()> {
        if *self.peek() == want {
            self.next();
            Ok(())
        } else {
            Err(self.error(format!("expected {}, found {}", want.describe(), self.peek().describe())))
        }
    }

    fn or(&mut self) -> Result<Filter> {
        let mut parts = vec![self.and()?];
        while self.peek().keyword("or") {
            self.next();
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 { parts.pop().expect("one") } else { Filter::Or(parts) })
    }

    fn and(&mut self) -> Result<Filter> {
        let mut parts = vec![self.unary()?];
        while self.peek().keyword("and") {
            self.next();
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 { parts.pop().expect("one") } else { Filter::And(parts) })
    }

    fn unary(&mut self) -> Result<Filter> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nested more than {MAX_DEPTH} deep")));
        }
        let f = self.unary_inner();
        self.depth -= 1;
        f
    }

    fn unary_inner(&mut self) -> Result<Filter> {
        if self.peek().keyword("not") {
            self.next();
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if *self.peek() == Tok::Open {
            self.next();
            let f = self.or()?;
            self.expect(Tok::Close)?;
            return Ok(f);
        }
        if self.peek().keyword("exists") && self.toks.get(self.at + 1).is_some_and(|t| t.1 == Tok::Open) {
            self.next();
            self.next();
            let key = self.key()?;
            self.expect(Tok::Close)?;
            return Ok(Filter::Exists(key));
        }
        let key = self.key()?;
        match self.next() {
            Tok::Op(op) => {
                let v = self.value()?;
                Ok(match op {
                    "=" => Filter::Eq(key, v),
                    "!=" => Filter::Ne(key, v),
                    "<" => Filter::Lt(key, v),
                    "<=" => Filter::Le(key, v),
                    ">" => Filter::Gt(key, v),
                    _ => Filter::Ge(key, v),
                })
            }
            t if t.keyword("in") => {
                self.expect(Tok::Open)?;
                let mut vs = vec![self.value()?];
                while *self.peek() == Tok::Comma {
                    self.next();
                    vs.push(self.value()?);
                }
                self.expect(Tok::Close)?;
                Ok(Filter::In(key, vs))
            }
            t => {
                self.at -= usize::from(t != Tok::End);
                Err(self.error(format!("expected an operator (=, !=, <, <=, >, >=, in) after `{key}`, found {}", t.describe())))
            }
        }
    }

    fn key(&mut self) -> Result<String> {
        match self.peek().clone() {
            Tok::Word(w) if !["and", "or", "not", "in"].iter().any(|k| w.eq_ignore_ascii_case(k)) => {
                self.next();
                Ok(w)
            }
            Tok::Str(s) => {
                self.next();
                Ok(s)
            }
            t => Err(self.error(format!("expected a metadata key, found {}", t.describe()))),
        }
    }

    fn value(&mut self) -> Result<Value> {
        match self.peek().clone() {
            Tok::Num(n) => (self.next(), Ok(n)).1,
            Tok::Str(s) => (self.next(), Ok(Value::String(s))).1,
            Tok::Word(w) => {
                self.next();
                Ok(match w.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    "null" => Value::Null,
                    _ => Value::String(w),
                })
            }
            t => Err(self.error(format!("expected a value, found {}", t.describe()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn grammar_precedence_and_values() {
        let f = parse(r#"a = 1 or b != "x y" and not (c < 2.5 or exists(d.e))"#).unwrap();
        let want = Filter::eq("a", 1).or(Filter::ne("b", "x y").and(Filter::lt("c", 2.5).or(Filter::exists("d.e")).not()));
        assert_eq!(f, want);
        assert_eq!(parse("tag in (net, \"web\", 3, true)").unwrap(), Filter::In("tag".into(), vec![json!("net"), json!("web"), json!(3), json!(true)]));
        assert_eq!(parse("YEAR >= -3 AND x == null").unwrap(), Filter::ge("YEAR", -3).and(Filter::Eq("x".into(), Value::Null)));
        assert_eq!(parse("ver = 1.2.3").unwrap(), Filter::eq("ver", "1.2.3"));
    }

    #[test]
    fn errors_name_the_position() {
        for (text, pos, what) in [
            ("", 1, "empty"),
            ("a =", 4, "expected a value"),
            ("a 3", 3, "expected an operator"),
            ("(a = 1", 7, "expected `)`"),
            ("a = 1 b = 2", 7, "expected `and`, `or`"),
            ("a = \"open", 5, "no closing quote"),
            ("a = 1 and", 10, "expected a metadata key"),
            ("a in 1", 6, "expected `(`"),
            ("a ~ 1", 3, "unexpected `~`"),
            ("exists(", 8, "expected a metadata key"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(&format!("position {pos} ")) && e.contains(what), "`{text}`: {e}");
        }
        let deep = format!("{}a = 1{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep).unwrap_err().to_string().contains("nested more than 64"));
    }
}
