//! The CEL parser: source text to the syntax tree that the compiler ([`super::compile`]) checks and
//! rewrites and cel-interpreter evaluates (`cel_parser::ast`).
//!
//! A recursive descent over the grammar of the CEL specification (`CEL.g4`, langdef.md), written
//! here rather than taken from cel-parser 0.10, whose ANTLR parser panics on some malformed input
//! (cel-rust issues #191, #194: a panic traps the Wasm VM), reads `!!x` as `!x` and `--1` as `-1`,
//! keeps the backslash of `\"` in single-quoted strings, and was 29 % of the module's code and 23 %
//! of V8's compile time at every Envoy start. The tree has the shape cel-parser builds (operators
//! as calls named `_+_`, `@in`, ...; macros expanded into comprehensions over `@result`), which
//! `tests.rs` checks against cel-parser on generated input.
//!
//! Left out on purpose (refused with a syntax error): optional syntax (`a.?b`, `a[?b]`, `?x`
//! entries), message construction (`T{f: 1}`). A leading dot (`.a`, the root namespace) names
//! what the name without it names, as in cel-parser; a backquoted field name (`` a.`x-y` ``)
//! selects the field `x-y`.
//! Errors carry the line and column (counted in characters, from 1).

use cel_parser::ast::{
    operators, CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedEntryExpr, IdedExpr, ListExpr,
    MapEntryExpr, MapExpr, SelectExpr,
};
use cel_parser::reference::Val;

/// Deepest nesting accepted (parentheses, calls, lists, maps, chained operators and member
/// selections each count one level): the compiler, the cost estimate and the interpreter all
/// recurse on the tree, and a Wasm module has 1 MiB of stack.
pub(super) const MAX_DEPTH: usize = 16;

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// A backquoted field name (`` `content-type` ``), without the backquotes.
    Quoted(String),
    /// An integer literal's digits (decimal, or hexadecimal after `0x`), without sign.
    Int {
        digits: String,
        radix: u32,
    },
    UInt {
        digits: String,
        radix: u32,
    },
    /// A floating-point literal's text, without sign.
    Double(String),
    Str(String),
    Bytes(Vec<u8>),
    Bool(bool),
    Null,
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

    fn digits(&mut self, radix: u32, into: &mut String) -> usize {
        let mut n = 0;
        while let Some(c) = self.peek(0).filter(|c| c.is_digit(radix)) {
            into.push(c);
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
                Tok::Str(self.string(false, line, col)?)
            } else if matches!(c, 'r' | 'R' | 'b' | 'B') && self.string_prefix() {
                self.string_with_prefix(line, col)?
            } else if c == '`' {
                self.bump();
                let mut name = String::new();
                while let Some(c) = self.peek(0).filter(|c| *c != '`') {
                    if !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ' ')) {
                        return Err(err(
                            line,
                            col,
                            format!("`{c}` in a backquoted field name (letters, digits and `_.-/ ` only)"),
                        ));
                    }
                    name.push(c);
                    self.bump();
                }
                if self.bump().is_none() || name.is_empty() {
                    return Err(err(
                        line,
                        col,
                        "unterminated or empty backquoted field name",
                    ));
                }
                Tok::Quoted(name)
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
                    "true" => Tok::Bool(true),
                    "false" => Tok::Bool(false),
                    "null" => Tok::Null,
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
            let mut digits = String::new();
            if self.digits(16, &mut digits) == 0 {
                return Err(err(line, col, "hexadecimal literal without digits"));
            }
            let unsigned = matches!(self.peek(0), Some('u' | 'U'));
            if unsigned {
                self.bump();
            }
            self.end_of_number(line, col)?;
            return Ok(if unsigned {
                Tok::UInt { digits, radix: 16 }
            } else {
                Tok::Int { digits, radix: 16 }
            });
        }
        let mut text = String::new();
        let int_digits = self.digits(10, &mut text);
        let mut float = false;
        if self.peek(0) == Some('.') && self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
            text.push('.');
            self.bump();
            self.digits(10, &mut text);
            float = true;
        }
        if let Some(e) = self.peek(0).filter(|c| matches!(c, 'e' | 'E')) {
            let sign = self.peek(1).filter(|c| matches!(c, '+' | '-'));
            let at = 1 + usize::from(sign.is_some());
            if !self.peek(at).is_some_and(|c| c.is_ascii_digit()) {
                return Err(err(line, col, "malformed exponent"));
            }
            text.push(e);
            self.bump();
            if let Some(s) = sign {
                text.push(s);
                self.bump();
            }
            self.digits(10, &mut text);
            float = true;
        }
        let unsigned = !float && int_digits > 0 && matches!(self.peek(0), Some('u' | 'U'));
        if unsigned {
            self.bump();
        }
        self.end_of_number(line, col)?;
        Ok(if float {
            Tok::Double(text)
        } else if unsigned {
            Tok::UInt {
                digits: text,
                radix: 10,
            }
        } else {
            Tok::Int {
                digits: text,
                radix: 10,
            }
        })
    }

    fn end_of_number(&self, line: usize, col: usize) -> Result<(), String> {
        if self
            .peek(0)
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(err(line, col, "malformed number"));
        }
        Ok(())
    }

    /// `r"..."`, `b'...'`, `br"..."`, `rb'...'` (any case).
    fn string_prefix(&self) -> bool {
        let is_quote = |c: Option<char>| matches!(c, Some('"' | '\''));
        let pair = match (self.peek(0), self.peek(1)) {
            (Some(a), Some(b)) => {
                let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
                (a == 'b' && b == 'r') || (a == 'r' && b == 'b')
            }
            _ => false,
        };
        is_quote(self.peek(1)) || (pair && is_quote(self.peek(2)))
    }

    fn string_with_prefix(&mut self, line: usize, col: usize) -> Result<Tok, String> {
        let (mut raw, mut bytes) = (false, false);
        while let Some(c) = self.peek(0).filter(|c| !matches!(c, '"' | '\'')) {
            raw |= matches!(c, 'r' | 'R');
            bytes |= matches!(c, 'b' | 'B');
            self.bump();
        }
        if bytes {
            Ok(Tok::Bytes(self.literal(raw, true, line, col)?))
        } else {
            Ok(Tok::Str(self.string(raw, line, col)?))
        }
    }

    fn string(&mut self, raw: bool, line: usize, col: usize) -> Result<String, String> {
        let bytes = self.literal(raw, false, line, col)?;
        // Only whole characters and escapes of code points went in.
        String::from_utf8(bytes).map_err(|_| err(line, col, "invalid string literal"))
    }

    /// The contents of a quoted literal (the lexer is on the opening quote), escapes decoded
    /// unless `raw`: UTF-8 for a string, and for bytes the characters' UTF-8 with `\x` and octal
    /// escapes as single bytes.
    fn literal(
        &mut self,
        raw: bool,
        bytes: bool,
        line: usize,
        col: usize,
    ) -> Result<Vec<u8>, String> {
        let Some(quote) = self.bump() else {
            return Err(err(line, col, "expected a string"));
        };
        let long = self.peek(0) == Some(quote) && self.peek(1) == Some(quote);
        if long {
            self.bump();
            self.bump();
        }
        let triple = String::from_iter([quote; 3]);
        let mut out = Vec::new();
        let mut buf = [0u8; 4];
        loop {
            if long && self.starts_with(&triple) {
                for _ in 0..3 {
                    self.bump();
                }
                return Ok(out);
            }
            let Some(c) = self.bump() else {
                return Err(err(line, col, "unterminated string"));
            };
            match c {
                c if !long && c == quote => return Ok(out),
                '\n' | '\r' if !long => return Err(err(line, col, "unterminated string")),
                '\\' if !raw => self.escape(bytes, &mut out, line, col)?,
                c => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
            }
        }
    }

    fn escape(
        &mut self,
        bytes: bool,
        out: &mut Vec<u8>,
        line: usize,
        col: usize,
    ) -> Result<(), String> {
        let bad = || err(line, col, "invalid escape sequence in string");
        let c = self.bump().ok_or_else(bad)?;
        let number = |lexer: &mut Self, n: usize, radix: u32| -> Result<u32, String> {
            let mut digits = String::new();
            for _ in 0..n {
                match lexer.bump().filter(|c| c.is_digit(radix)) {
                    Some(c) => digits.push(c),
                    None => return Err(bad()),
                }
            }
            u32::from_str_radix(&digits, radix).map_err(|_| bad())
        };
        let simple = match c {
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            '"' | '\'' | '\\' | '?' | '`' => Some(c),
            _ => None,
        };
        let code = match (simple, c) {
            (Some(s), _) => u32::from(s),
            (None, 'x' | 'X') => number(self, 2, 16)?,
            (None, 'u') if !bytes => number(self, 4, 16)?,
            (None, 'U') if !bytes => number(self, 8, 16)?,
            (None, '0'..='3') => {
                let rest = number(self, 2, 8)?;
                c.to_digit(8).unwrap_or(0) * 64 + rest
            }
            _ => return Err(bad()),
        };
        let is_byte = bytes && matches!(c, 'x' | 'X' | '0'..='3');
        if is_byte {
            out.push(u8::try_from(code).map_err(|_| bad())?);
        } else {
            let ch = char::from_u32(code)
                .ok_or_else(|| err(line, col, "invalid unicode code point in string"))?;
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        }
        Ok(())
    }
}

const RELATIONS: &[(&str, &str)] = &[
    ("<", operators::LESS),
    ("<=", operators::LESS_EQUALS),
    (">=", operators::GREATER_EQUALS),
    (">", operators::GREATER),
    ("==", operators::EQUALS),
    ("!=", operators::NOT_EQUALS),
    ("in", operators::IN),
];
const ADDITIVE: &[(&str, &str)] = &[("+", operators::ADD), ("-", operators::SUBSTRACT)];
const MULTIPLICATIVE: &[(&str, &str)] = &[
    ("*", operators::MULTIPLY),
    ("/", operators::DIVIDE),
    ("%", operators::MODULO),
];
/// The binary operators by precedence, loosest first (CEL.g4's `relation` and `calc`).
const BINARY: [&[(&str, &str)]; 3] = [RELATIONS, ADDITIVE, MULTIPLICATIVE];

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    next_id: u64,
}

/// A parsed argument with where it began (for the macros' errors).
struct Arg {
    expr: IdedExpr,
    line: usize,
    col: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.pos).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        self.tokens
            .get(self.pos + ahead)
            .map_or(&Tok::Eof, |t| &t.tok)
    }

    fn at(&self) -> (usize, usize) {
        self.tokens
            .get(self.pos)
            .or_else(|| self.tokens.last())
            .map_or((0, 0), |t| (t.line, t.col))
    }

    fn is(&self, p: &str) -> bool {
        matches!(self.peek(), Tok::Punct(q) if *q == p)
    }

    fn node(&mut self, expr: Expr) -> IdedExpr {
        let id = self.next_id;
        self.next_id += 1;
        IdedExpr { id, expr }
    }

    fn call(&mut self, func: &str, target: Option<IdedExpr>, args: Vec<IdedExpr>) -> IdedExpr {
        self.node(Expr::Call(CallExpr {
            func_name: func.to_string(),
            target: target.map(Box::new),
            args,
        }))
    }

    fn unexpected(&self, expected: &str) -> String {
        let (line, col) = self.at();
        let found = match self.peek() {
            Tok::Ident(name) => format!("`{name}`"),
            Tok::Quoted(name) => format!("`` `{name}` ``"),
            Tok::Punct(p) => format!("`{p}`"),
            Tok::Eof => "the end of the expression".to_string(),
            _ => "a literal".to_string(),
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
            let (line, col) = self.at();
            Err(err(
                line,
                col,
                format!("expression nests deeper than {MAX_DEPTH} levels"),
            ))
        } else {
            Ok(())
        }
    }

    /// `or ? or : expr` (right-associative).
    fn expr(&mut self, depth: usize) -> Result<IdedExpr, String> {
        self.check_depth(depth)?;
        let cond = self.or(depth)?;
        if !self.is("?") {
            return Ok(cond);
        }
        self.pos += 1;
        let if_true = self.or(depth + 1)?;
        self.expect(":")?;
        let if_false = self.expr(depth + 1)?;
        Ok(self.call(operators::CONDITIONAL, None, vec![cond, if_true, if_false]))
    }

    fn or(&mut self, depth: usize) -> Result<IdedExpr, String> {
        self.logic("||", operators::LOGICAL_OR, depth)
    }

    /// A chain of `||` (or `&&`) becomes a balanced tree, as CEL's parsers build it, so that a
    /// long chain does not nest deeply.
    fn logic(&mut self, op: &str, func: &str, depth: usize) -> Result<IdedExpr, String> {
        let next = |p: &mut Self| {
            if op == "||" {
                p.logic("&&", operators::LOGICAL_AND, depth)
            } else {
                p.relation(depth)
            }
        };
        let mut terms = vec![next(self)?];
        while self.is(op) {
            self.pos += 1;
            terms.push(next(self)?);
        }
        Ok(self.balanced(func, terms))
    }

    fn balanced(&mut self, func: &str, mut terms: Vec<IdedExpr>) -> IdedExpr {
        if terms.len() <= 1 {
            return terms.pop().unwrap_or_default();
        }
        // The middle operator at the root: the left half gets the extra term when odd.
        let mid = terms.len().div_ceil(2);
        let right = terms.split_off(mid);
        let left = self.balanced(func, terms);
        let right = self.balanced(func, right);
        self.call(func, None, vec![left, right])
    }

    /// Relations, then `+ -`, then `* / %` ([`BINARY`]): left-associative binary operators, each
    /// nesting one level deeper in the tree.
    fn relation(&mut self, depth: usize) -> Result<IdedExpr, String> {
        self.binary(0, depth, &mut 0)
    }

    /// The operators of precedence `level` (an index into [`BINARY`]) and above; `nested` counts
    /// the operators read so far in this expression (each one level of the tree).
    fn binary(
        &mut self,
        level: usize,
        depth: usize,
        nested: &mut usize,
    ) -> Result<IdedExpr, String> {
        let Some(ops) = BINARY.get(level) else {
            return self.unary(depth + *nested);
        };
        let mut lhs = self.binary(level + 1, depth, nested)?;
        while let Some((_, func)) = ops.iter().find(|(p, _)| self.is(p)) {
            self.pos += 1;
            *nested += 1;
            self.check_depth(depth + *nested)?;
            let rhs = self.binary(level + 1, depth, nested)?;
            lhs = self.call(func, None, vec![lhs, rhs]);
        }
        Ok(lhs)
    }

    /// `!`s or `-`s before a member: an even number cancels out (CEL's parsers return the operand
    /// itself), an odd number applies once. A `-` right before a number is that literal's sign.
    fn unary(&mut self, depth: usize) -> Result<IdedExpr, String> {
        for (op, func) in [("!", operators::LOGICAL_NOT), ("-", operators::NEGATE)] {
            if !self.is(op) {
                continue;
            }
            let mut count = 0;
            while self.is(op) {
                count += 1;
                self.pos += 1;
            }
            if op == "-" && matches!(self.peek(), Tok::Int { .. } | Tok::Double(_)) {
                // The last `-` is the literal's sign.
                count -= 1;
                self.pos -= 1;
            }
            let operand = self.member(depth)?;
            return Ok(if count % 2 == 1 {
                self.call(func, None, vec![operand])
            } else {
                operand
            });
        }
        self.member(depth)
    }

    fn member(&mut self, depth: usize) -> Result<IdedExpr, String> {
        let mut e = self.primary(depth)?;
        let mut level = depth;
        loop {
            if self.is(".") {
                self.pos += 1;
                let (name, quoted) = match self.peek().clone() {
                    Tok::Ident(name) => (name, false),
                    Tok::Quoted(name) => (name, true),
                    _ => return Err(self.unexpected("a field or method name")),
                };
                self.pos += 1;
                if !quoted && self.is("(") {
                    self.pos += 1;
                    let args = self.args(")", level + 1)?;
                    e = self.call_or_macro(&name, Some(e), args)?;
                } else {
                    e = self.node(Expr::Select(SelectExpr {
                        operand: Box::new(e),
                        field: name,
                        test: false,
                    }));
                }
            } else if self.is("[") {
                self.pos += 1;
                let index = self.expr(level + 1)?;
                self.expect("]")?;
                e = self.call(operators::INDEX, None, vec![e, index]);
            } else {
                return Ok(e);
            }
            level += 1;
            self.check_depth(level)?;
        }
    }

    /// `e, e, ...` up to `close` (consumed); a trailing comma only in list literals.
    fn args(&mut self, close: &str, depth: usize) -> Result<Vec<Arg>, String> {
        let mut out = Vec::new();
        if self.is(close) {
            self.pos += 1;
            return Ok(out);
        }
        loop {
            let (line, col) = self.at();
            let expr = self.expr(depth)?;
            out.push(Arg { expr, line, col });
            if self.is(",") {
                self.pos += 1;
                if close == "]" && self.is(close) {
                    self.pos += 1;
                    return Ok(out);
                }
            } else {
                self.expect(close)?;
                return Ok(out);
            }
        }
    }

    fn primary(&mut self, depth: usize) -> Result<IdedExpr, String> {
        self.check_depth(depth)?;
        let (line, col) = self.at();
        let negative = self.is("-");
        let tok = if negative {
            self.peek_at(1).clone()
        } else {
            self.peek().clone()
        };
        let value = match tok {
            Tok::Int { digits, radix } => {
                let text = if negative {
                    format!("-{digits}")
                } else {
                    digits
                };
                let v = i64::from_str_radix(&text, radix)
                    .map_err(|_| err(line, col, "invalid int literal"))?;
                Some(Val::Int(v))
            }
            Tok::Double(text) => {
                let text = if negative { format!("-{text}") } else { text };
                match text.parse::<f64>() {
                    Ok(d) if d.is_finite() => Some(Val::Double(d)),
                    _ => return Err(err(line, col, "invalid double literal")),
                }
            }
            _ if negative => None,
            Tok::UInt { digits, radix } => Some(Val::UInt(
                u64::from_str_radix(&digits, radix)
                    .map_err(|_| err(line, col, "invalid uint literal"))?,
            )),
            Tok::Str(s) => Some(Val::String(s)),
            Tok::Bytes(b) => Some(Val::Bytes(b)),
            Tok::Bool(b) => Some(Val::Boolean(b)),
            Tok::Null => Some(Val::Null),
            _ => None,
        };
        if let Some(value) = value {
            self.pos += 1 + usize::from(negative);
            return Ok(self.node(Expr::Literal(value)));
        }
        // A leading dot: the name in the root namespace, which is the only one.
        let leading_dot = self.is(".") && matches!(self.peek_at(1), Tok::Ident(_));
        if leading_dot {
            self.pos += 1;
        }
        match self.peek().clone() {
            Tok::Ident(name) => {
                self.pos += 1;
                if self.is("(") {
                    self.pos += 1;
                    let args = self.args(")", depth + 1)?;
                    // As cel-parser names it; no function has such a name.
                    let name = if leading_dot {
                        format!(".{name}")
                    } else {
                        name
                    };
                    return self.call_or_macro(&name, None, args);
                }
                if self.is("{") {
                    return Err(
                        self.unexpected("an operator (message construction is not supported)")
                    );
                }
                Ok(self.node(Expr::Ident(name)))
            }
            Tok::Punct("(") => {
                self.pos += 1;
                let e = self.expr(depth + 1)?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Punct("[") => {
                self.pos += 1;
                let elements = self
                    .args("]", depth + 1)?
                    .into_iter()
                    .map(|a| a.expr)
                    .collect();
                Ok(self.node(Expr::List(ListExpr { elements })))
            }
            Tok::Punct("{") => {
                self.pos += 1;
                let mut entries = Vec::new();
                if self.is("}") {
                    self.pos += 1;
                    return Ok(self.node(Expr::Map(MapExpr { entries })));
                }
                loop {
                    let key = self.expr(depth + 1)?;
                    self.expect(":")?;
                    let value = self.expr(depth + 1)?;
                    let entry = EntryExpr::MapEntry(MapEntryExpr {
                        key,
                        value,
                        optional: false,
                    });
                    let id = self.node(Expr::Unspecified).id;
                    entries.push(IdedEntryExpr { id, expr: entry });
                    if self.is(",") {
                        self.pos += 1;
                        if self.is("}") {
                            self.pos += 1;
                            break;
                        }
                    } else {
                        self.expect("}")?;
                        break;
                    }
                }
                Ok(self.node(Expr::Map(MapExpr { entries })))
            }
            _ => Err(self.unexpected("a value")),
        }
    }

    /// A call, or the macro it spells (`has`, `all`, `exists`, `exists_one`, `map`, `filter`),
    /// expanded as CEL's parsers do.
    fn call_or_macro(
        &mut self,
        name: &str,
        target: Option<IdedExpr>,
        mut args: Vec<Arg>,
    ) -> Result<IdedExpr, String> {
        let n = args.len();
        let target = match (name, target) {
            ("has", None) if n == 1 => {
                let Some(arg) = args.pop() else {
                    return Err(err(0, 0, "has() needs one argument"));
                };
                return match arg.expr.expr {
                    Expr::Select(mut select) => {
                        select.test = true;
                        Ok(self.node(Expr::Select(select)))
                    }
                    _ => Err(err(arg.line, arg.col, "invalid argument to has() macro")),
                };
            }
            ("all" | "exists" | "exists_one" | "existsOne" | "filter", Some(t)) if n == 2 => t,
            ("map", Some(t)) if n == 2 || n == 3 => t,
            (_, target) => {
                let args = args.into_iter().map(|a| a.expr).collect();
                return Ok(self.call(name, target, args));
            }
        };
        let mut args = args.into_iter();
        let (Some(var), Some(second)) = (args.next(), args.next()) else {
            return Err(err(0, 0, "a macro needs two arguments"));
        };
        let third = args.next();
        let Expr::Ident(var_name) = var.expr.expr.clone() else {
            return Err(err(var.line, var.col, "argument must be a simple name"));
        };
        Ok(self.comprehension(
            name,
            target,
            var,
            var_name,
            second.expr,
            third.map(|a| a.expr),
        ))
    }

    fn result(&mut self) -> IdedExpr {
        self.node(Expr::Ident(RESULT.to_string()))
    }

    fn literal(&mut self, v: Val) -> IdedExpr {
        self.node(Expr::Literal(v))
    }

    fn comprehension(
        &mut self,
        name: &str,
        range: IdedExpr,
        var: Arg,
        var_name: String,
        second: IdedExpr,
        third: Option<IdedExpr>,
    ) -> IdedExpr {
        let (init, cond, step, result) = match name {
            "all" | "exists" => {
                let all = name == "all";
                let init = self.literal(Val::Boolean(all));
                let accu = self.result();
                let cond_arg = if all {
                    accu
                } else {
                    self.call(operators::LOGICAL_NOT, None, vec![accu])
                };
                let cond = self.call(operators::NOT_STRICTLY_FALSE, None, vec![cond_arg]);
                let accu = self.result();
                let func = if all {
                    operators::LOGICAL_AND
                } else {
                    operators::LOGICAL_OR
                };
                let step = self.call(func, None, vec![accu, second]);
                (init, cond, step, self.result())
            }
            "exists_one" | "existsOne" => {
                let init = self.literal(Val::Int(0));
                let cond = self.literal(Val::Boolean(true));
                let accu = self.result();
                let one = self.literal(Val::Int(1));
                let plus_one = self.call(operators::ADD, None, vec![accu, one]);
                let accu = self.result();
                let step = self.call(operators::CONDITIONAL, None, vec![second, plus_one, accu]);
                let accu = self.result();
                let one = self.literal(Val::Int(1));
                let result = self.call(operators::EQUALS, None, vec![accu, one]);
                (init, cond, step, result)
            }
            // `map(x, f)`, `map(x, p, f)`, `filter(x, p)`.
            _ => {
                let init = self.node(Expr::List(ListExpr { elements: vec![] }));
                let cond = self.literal(Val::Boolean(true));
                let (filter, element) = match (name, third) {
                    ("filter", _) => (Some(second), var.expr),
                    (_, Some(f)) => (Some(second), f),
                    (_, None) => (None, second),
                };
                let accu = self.result();
                let one = self.node(Expr::List(ListExpr {
                    elements: vec![element],
                }));
                let append = self.call(operators::ADD, None, vec![accu, one]);
                let step = match filter {
                    Some(p) => {
                        let accu = self.result();
                        self.call(operators::CONDITIONAL, None, vec![p, append, accu])
                    }
                    None => append,
                };
                (init, cond, step, self.result())
            }
        };
        self.node(Expr::Comprehension(ComprehensionExpr {
            iter_range: Box::new(range),
            iter_var: var_name,
            iter_var2: None,
            accu_var: RESULT.to_string(),
            accu_init: Box::new(init),
            loop_cond: Box::new(cond),
            loop_step: Box::new(step),
            result: Box::new(result),
        }))
    }
}

/// The accumulator of an expanded macro, a name no expression can spell.
const RESULT: &str = "@result";

/// Parses `source` into a syntax tree, or says what is wrong and where.
pub(super) fn parse(source: &str) -> Result<IdedExpr, String> {
    let lexer = Lexer {
        chars: source.chars().collect(),
        pos: 0,
        line: 1,
        col: 1,
    };
    let tokens = lexer.tokens()?;
    let mut p = Parser {
        tokens,
        pos: 0,
        next_id: 1,
    };
    let e = p.expr(0)?;
    if *p.peek() != Tok::Eof {
        return Err(p.unexpected("an operator or the end of the expression"));
    }
    Ok(e)
}
