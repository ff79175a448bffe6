//! A syntax check that runs before cel-parser.
//!
//! cel-parser 0.10 panics on some malformed input (`1 +`, `(`, `.`: its ANTLR visitor reaches an
//! error node, cel-rust issues #191 and #194), and a panic traps the Wasm VM. This recognizer
//! accepts a strict subset of the CEL grammar (`CEL.g4`), so cel-parser only sees well-formed
//! input, and it reports the first error with its position. It also bounds the depth of the tree,
//! since the parser, the compiler and the interpreter all recurse on it.
//!
//! Left out on purpose (refused here): optional syntax (`a.?b`, `a[?b]`, `?x` entries), message
//! construction (`T{f: 1}`), leading-dot names (`.a`), empty entries (`[,]`).

/// Deepest tree accepted: nesting (parentheses, calls, lists, maps) plus chained operators and
/// member selections, which the parser nests one level each. ANTLR's recursive descent spends
/// several KiB of stack per level even in a release build (16 levels: under 256 KiB natively),
/// and a Wasm module has 1 MiB of stack.
pub(super) const MAX_DEPTH: usize = 16;

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Literal,
    Punct(&'static str),
    Eof,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
    col: usize,
}

/// Punctuation, longest first so that `<=` wins over `<`.
const PUNCT: &[&str] = &[
    "&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "+", "-", "*", "/", "%", "?", ":", ".", ",",
    "(", ")", "[", "]", "{", "}",
];

fn err(line: usize, col: usize, msg: impl std::fmt::Display) -> String {
    format!("syntax error at line {line}, column {col}: {msg}")
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    col: usize,
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn starts_with(&self, s: &str) -> bool {
        s.chars().enumerate().all(|(i, c)| self.peek(i) == Some(c))
    }

    fn digits(&mut self, radix: u32) -> usize {
        let mut n = 0;
        while self.peek(0).is_some_and(|c| c.is_digit(radix)) {
            self.bump();
            n += 1;
        }
        n
    }

    fn tokens(mut self) -> Result<Vec<Token>, String> {
        let mut out = Vec::new();
        loop {
            // Whitespace and `//` comments.
            while let Some(c) = self.peek(0) {
                if matches!(c, ' ' | '\t' | '\r' | '\n' | '\u{c}') {
                    self.bump();
                } else if self.starts_with("//") {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                } else {
                    break;
                }
            }
            let (line, col) = (self.line, self.col);
            let Some(c) = self.peek(0) else {
                out.push(Token {
                    tok: Tok::Eof,
                    line,
                    col,
                });
                return Ok(out);
            };
            let tok = if c.is_ascii_digit()
                || (c == '.' && self.peek(1).is_some_and(|d| d.is_ascii_digit()))
            {
                self.number(line, col)?
            } else if matches!(c, '"' | '\'') {
                self.string(false, line, col)?
            } else if matches!(c, 'r' | 'R' | 'b' | 'B') && self.string_prefix() {
                self.string_with_prefix(line, col)?
            } else if c.is_ascii_alphabetic() || c == '_' {
                let mut name = String::new();
                while let Some(c) = self
                    .peek(0)
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    name.push(c);
                    self.bump();
                }
                match name.as_str() {
                    "true" | "false" | "null" => Tok::Literal,
                    "in" => Tok::Punct("in"),
                    _ => Tok::Ident(name),
                }
            } else if let Some(p) = PUNCT.iter().find(|p| self.starts_with(p)) {
                for _ in 0..p.len() {
                    self.bump();
                }
                Tok::Punct(p)
            } else {
                return Err(err(line, col, format!("unexpected character `{c}`")));
            };
            out.push(Token { tok, line, col });
        }
    }

    fn number(&mut self, line: usize, col: usize) -> Result<Tok, String> {
        if self.starts_with("0x") || self.starts_with("0X") {
            self.bump();
            self.bump();
            if self.digits(16) == 0 {
                return Err(err(line, col, "hexadecimal literal without digits"));
            }
            if matches!(self.peek(0), Some('u' | 'U')) {
                self.bump();
            }
            return Ok(Tok::Literal);
        }
        let int_digits = self.digits(10);
        let mut float = false;
        if self.peek(0) == Some('.') && self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            self.digits(10);
            float = true;
        }
        if matches!(self.peek(0), Some('e' | 'E')) {
            let sign = usize::from(matches!(self.peek(1), Some('+' | '-')));
            if self.peek(1 + sign).is_some_and(|c| c.is_ascii_digit()) {
                for _ in 0..=sign {
                    self.bump();
                }
                self.digits(10);
                float = true;
            } else {
                return Err(err(line, col, "malformed exponent"));
            }
        }
        if !float && int_digits > 0 && matches!(self.peek(0), Some('u' | 'U')) {
            self.bump();
        }
        if self
            .peek(0)
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(err(line, col, "malformed number"));
        }
        Ok(Tok::Literal)
    }

    /// `r"..."`, `b'...'`, `br"..."` (any case).
    fn string_prefix(&self) -> bool {
        let is_quote = |c: Option<char>| matches!(c, Some('"' | '\''));
        is_quote(self.peek(1))
            || (matches!(self.peek(0), Some('b' | 'B'))
                && matches!(self.peek(1), Some('r' | 'R'))
                && is_quote(self.peek(2)))
    }

    fn string_with_prefix(&mut self, line: usize, col: usize) -> Result<Tok, String> {
        let mut raw = false;
        while let Some(c) = self.peek(0).filter(|c| !matches!(c, '"' | '\'')) {
            raw |= matches!(c, 'r' | 'R');
            self.bump();
        }
        self.string(raw, line, col)
    }

    fn string(&mut self, raw: bool, line: usize, col: usize) -> Result<Tok, String> {
        let Some(quote) = self.bump() else {
            return Err(err(line, col, "expected a string"));
        };
        let triple: String = [quote; 3].iter().collect();
        let long = self.peek(0) == Some(quote) && self.peek(1) == Some(quote);
        if long {
            self.bump();
            self.bump();
        }
        loop {
            if long && self.starts_with(&triple) {
                for _ in 0..3 {
                    self.bump();
                }
                return Ok(Tok::Literal);
            }
            let Some(c) = self.bump() else {
                return Err(err(line, col, "unterminated string"));
            };
            match c {
                c if !long && c == quote => return Ok(Tok::Literal),
                '\n' | '\r' if !long => return Err(err(line, col, "unterminated string")),
                '\\' if !raw => self.escape(line, col)?,
                _ => {}
            }
        }
    }

    fn escape(&mut self, line: usize, col: usize) -> Result<(), String> {
        let bad = || err(line, col, "invalid escape sequence in string");
        let c = self.bump().ok_or_else(bad)?;
        let hex = |lexer: &mut Self, n: usize| -> Result<(), String> {
            for _ in 0..n {
                if !lexer.bump().is_some_and(|c| c.is_ascii_hexdigit()) {
                    return Err(bad());
                }
            }
            Ok(())
        };
        match c {
            'a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '"' | '\'' | '\\' | '?' | '`' => Ok(()),
            'x' | 'X' => hex(self, 2),
            'u' => hex(self, 4),
            'U' => hex(self, 8),
            '0'..='3' => {
                for _ in 0..2 {
                    if !self.bump().is_some_and(|c| ('0'..='7').contains(&c)) {
                        return Err(bad());
                    }
                }
                Ok(())
            }
            _ => Err(bad()),
        }
    }
}

struct Recognizer {
    tokens: Vec<Token>,
    pos: usize,
}

const RELATIONS: &[&str] = &["<", "<=", ">=", ">", "==", "!=", "in"];
const ARITHMETIC: &[&str] = &["*", "/", "%", "+", "-"];

impl Recognizer {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.pos).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn is(&self, p: &str) -> bool {
        matches!(self.peek(), Tok::Punct(q) if *q == p)
    }

    fn unexpected(&self, expected: &str) -> String {
        let (line, col, found) = match self.tokens.get(self.pos) {
            Some(t) => (
                t.line,
                t.col,
                match &t.tok {
                    Tok::Ident(name) => format!("`{name}`"),
                    Tok::Literal => "a literal".to_string(),
                    Tok::Punct(p) => format!("`{p}`"),
                    Tok::Eof => "the end of the expression".to_string(),
                },
            ),
            None => (0, 0, "the end of the expression".to_string()),
        };
        err(line, col, format!("expected {expected}, found {found}"))
    }

    fn expect(&mut self, p: &str) -> Result<(), String> {
        if self.is(p) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{p}`")))
        }
    }

    fn check_depth(&self, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            let (line, col) = self
                .tokens
                .get(self.pos)
                .map_or((0, 0), |t| (t.line, t.col));
            Err(err(
                line,
                col,
                format!("expression nests deeper than {MAX_DEPTH} levels"),
            ))
        } else {
            Ok(())
        }
    }

    /// Each function returns the depth of what it read.
    fn expr(&mut self, depth: usize) -> Result<usize, String> {
        self.check_depth(depth)?;
        let mut d = self.or(depth)?;
        if self.is("?") {
            self.pos += 1;
            d = d.max(self.or(depth + 1)?);
            self.expect(":")?;
            d = d.max(self.expr(depth + 1)?);
        }
        Ok(d)
    }

    fn or(&mut self, depth: usize) -> Result<usize, String> {
        let mut d = self.and(depth)?;
        while self.is("||") {
            self.pos += 1;
            d = d.max(self.and(depth)?);
        }
        Ok(d)
    }

    fn and(&mut self, depth: usize) -> Result<usize, String> {
        let mut d = self.binary(depth)?;
        while self.is("&&") {
            self.pos += 1;
            d = d.max(self.binary(depth)?);
        }
        Ok(d)
    }

    /// Relations and arithmetic: left-recursive in the grammar, so each operator nests one level.
    fn binary(&mut self, depth: usize) -> Result<usize, String> {
        let mut d = self.unary(depth)?;
        let mut level = depth;
        while RELATIONS.iter().chain(ARITHMETIC).any(|p| self.is(p)) {
            self.pos += 1;
            level += 1;
            self.check_depth(level)?;
            d = d.max(self.unary(level)?).max(level);
        }
        Ok(d)
    }

    fn unary(&mut self, depth: usize) -> Result<usize, String> {
        for op in ["!", "-"] {
            if self.is(op) {
                while self.is(op) {
                    self.pos += 1;
                }
                return self.member(depth);
            }
        }
        self.member(depth)
    }

    fn member(&mut self, depth: usize) -> Result<usize, String> {
        let mut d = self.primary(depth)?;
        let mut level = depth;
        loop {
            if self.is(".") {
                self.pos += 1;
                if !matches!(self.peek(), Tok::Ident(_)) {
                    return Err(self.unexpected("a field or method name"));
                }
                self.pos += 1;
                if self.is("(") {
                    self.pos += 1;
                    d = d.max(self.list(")", level + 1)?);
                }
            } else if self.is("[") {
                self.pos += 1;
                d = d.max(self.expr(level + 1)?);
                self.expect("]")?;
            } else {
                return Ok(d.max(level));
            }
            level += 1;
            self.check_depth(level)?;
        }
    }

    /// `e, e, ...` up to `close` (consumed); a trailing comma only in list literals.
    fn list(&mut self, close: &str, depth: usize) -> Result<usize, String> {
        let mut d = depth;
        if self.is(close) {
            self.pos += 1;
            return Ok(d);
        }
        loop {
            d = d.max(self.expr(depth)?);
            if self.is(",") {
                self.pos += 1;
                if close == "]" && self.is(close) {
                    self.pos += 1;
                    return Ok(d);
                }
            } else {
                self.expect(close)?;
                return Ok(d);
            }
        }
    }

    fn primary(&mut self, depth: usize) -> Result<usize, String> {
        self.check_depth(depth)?;
        match self.peek().clone() {
            Tok::Literal => {
                self.pos += 1;
                Ok(depth)
            }
            Tok::Ident(_) => {
                self.pos += 1;
                if self.is("(") {
                    self.pos += 1;
                    return self.list(")", depth + 1);
                }
                if self.is("{") {
                    return Err(
                        self.unexpected("an operator (message construction is not supported)")
                    );
                }
                Ok(depth)
            }
            Tok::Punct("(") => {
                self.pos += 1;
                let d = self.expr(depth + 1)?;
                self.expect(")")?;
                Ok(d)
            }
            Tok::Punct("[") => {
                self.pos += 1;
                self.list("]", depth + 1)
            }
            Tok::Punct("{") => {
                self.pos += 1;
                let mut d = depth + 1;
                if self.is("}") {
                    self.pos += 1;
                    return Ok(d);
                }
                loop {
                    d = d.max(self.expr(depth + 1)?);
                    self.expect(":")?;
                    d = d.max(self.expr(depth + 1)?);
                    if self.is(",") {
                        self.pos += 1;
                        if self.is("}") {
                            self.pos += 1;
                            return Ok(d);
                        }
                    } else {
                        self.expect("}")?;
                        return Ok(d);
                    }
                }
            }
            _ => Err(self.unexpected("a value")),
        }
    }
}

/// `Ok` when `source` is well-formed in the subset cel-parser handles without panicking.
pub(super) fn check(source: &str) -> Result<(), String> {
    let lexer = Lexer {
        chars: source.chars().collect(),
        pos: 0,
        line: 1,
        col: 1,
    };
    let tokens = lexer.tokens()?;
    let mut r = Recognizer { tokens, pos: 0 };
    r.expr(0)?;
    if *r.peek() != Tok::Eof {
        return Err(r.unexpected("an operator or the end of the expression"));
    }
    Ok(())
}
