//! Limits checked on the raw text before any parser sees it, in one linear pass.
//!
//! * Nesting depth: serde_json stops at 128 levels, but the YAML parser (libyaml) spends time
//!   proportional to the flow depth on every token, so `{"a":` x 100,000 took more than a minute.
//!   Istio objects nest about 12 levels (a List, its items, `spec.rules[].from[].source.principals[]`);
//!   [`MAX_DEPTH`] leaves ample room and refuses anything deeper with one message, in linear time.
//! * Characters YAML does not allow (NUL and other control characters): reported at their line and
//!   column (libyaml only gives a byte offset).
//!
//! The depth scan follows YAML's tokens closely enough to count what the parser would count:
//! flow collections (`[`, `{`) wherever a token starts, block collections (`- `, `key:`, `? `)
//! by their columns, and it skips what cannot open a collection: quoted scalars, comments,
//! block scalars (`|`, `>`) and plain scalars. JSON is YAML here, so the same scan serves both.
//! Where it must guess it counts more rather than less: a deeper-looking input is refused, a
//! deeper one is never let through.

/// How deep objects may nest (flow and block levels together; a `[`/`{` is one level, so is a
/// block sequence or mapping).
pub(crate) const MAX_DEPTH: usize = 64;

/// Where a problem is in the text (1-based, columns in characters as YAML parsers count them).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TextError {
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) message: String,
}

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (line {}, column {})",
            self.message, self.line, self.column
        )
    }
}

/// The first character YAML refuses (libyaml's printable set: tab, line breaks, and everything
/// from space up except DEL, C1 controls other than NEL, U+FEFF inside the text, U+FFFE/U+FFFF).
/// A leading byte-order mark is allowed (the caller strips it).
#[cfg(feature = "yaml")]
pub(crate) fn check_yaml_characters(text: &str) -> Result<(), TextError> {
    let (mut line, mut column) = (1, 1);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let allowed = matches!(c, '\t' | '\n' | '\r' | '\u{85}')
            || (' '..='~').contains(&c)
            || ('\u{a0}'..='\u{d7ff}').contains(&c)
            || (('\u{e000}'..='\u{fffd}').contains(&c) && c != '\u{feff}')
            || c >= '\u{10000}';
        if !allowed {
            return Err(TextError {
                line,
                column,
                message: format!(
                    "control character U+{:04X} is not allowed in YAML (remove it, or write it escaped inside a double-quoted string)",
                    u32::from(c)
                ),
            });
        }
        if is_break(c) {
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    Ok(())
}

#[cfg(feature = "yaml")]
fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Sequence,
    Mapping,
}

/// The depth scanner's state: a position in the text (bytes; everything YAML treats as
/// structure is ASCII, anything else is content).
struct Scanner<'a> {
    text: &'a [u8],
    pos: usize,
    line: usize,
    /// Byte where the current line starts.
    line_start: usize,
    flow: usize,
    block: Vec<(usize, Block)>,
}

/// Refuses nesting deeper than [`MAX_DEPTH`], in one pass over `text`.
pub(crate) fn check_depth(text: &str) -> Result<(), TextError> {
    let mut s = Scanner {
        text: text.as_bytes(),
        pos: 0,
        line: 1,
        line_start: 0,
        flow: 0,
        block: Vec::new(),
    };
    s.run()
}

impl Scanner<'_> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.text.get(self.pos + ahead).copied()
    }

    /// The length of the line break at `pos + ahead` (0: none): `\n`, `\r`, `\r\n`, NEL, LS, PS.
    fn break_len(&self, ahead: usize) -> usize {
        let at = self.pos + ahead;
        match self
            .text
            .get(at..at + 3)
            .unwrap_or_else(|| self.text.get(at..).unwrap_or(&[]))
        {
            [b'\r', b'\n', ..] => 2,
            [b'\n' | b'\r', ..] => 1,
            [0xC2, 0x85, ..] => 2,
            [0xE2, 0x80, 0xA8 | 0xA9] => 3,
            _ => 0,
        }
    }

    fn is_break(&self, ahead: usize) -> bool {
        self.break_len(ahead) > 0
    }

    /// Column in characters (1-based) of the byte `at` on the current line.
    fn column(&self, at: usize) -> usize {
        let line = self.text.get(self.line_start..at).unwrap_or(&[]);
        String::from_utf8_lossy(line).chars().count() + 1
    }

    /// Checks the depth after a level opened at byte `at`.
    fn check(&self, at: usize) -> Result<(), TextError> {
        if self.flow + self.block.len() <= MAX_DEPTH {
            return Ok(());
        }
        Err(TextError {
            line: self.line,
            column: self.column(at),
            message: format!(
                "nesting deeper than {MAX_DEPTH} levels (Istio objects nest about 12); refused before parsing"
            ),
        })
    }

    /// Consumes the line break at `pos`.
    fn newline(&mut self) {
        self.pos += self.break_len(0).max(1);
        self.line += 1;
        self.line_start = self.pos;
    }

    fn blank_or_end(&self, ahead: usize) -> bool {
        matches!(self.peek(ahead), None | Some(b' ' | b'\t')) || self.is_break(ahead)
    }

    fn flow_indicator(c: u8) -> bool {
        matches!(c, b',' | b'[' | b']' | b'{' | b'}')
    }

    fn skip_to_line_end(&mut self) {
        while self.pos < self.text.len() && !self.is_break(0) {
            self.pos += 1;
        }
    }

    /// The column (bytes) of the innermost block collection (libyaml's indent), `None` at the top.
    fn indent(&self) -> Option<usize> {
        self.block.last().map(|&(c, _)| c)
    }

    fn push_block(&mut self, column: usize, kind: Block) -> Result<(), TextError> {
        if self.flow > 0 {
            return Ok(());
        }
        match self.block.last().copied() {
            Some((c, k)) if c == column && k == kind => return Ok(()),
            // A key at the column of an indentless sequence ends that sequence.
            Some((c, Block::Sequence)) if c == column && kind == Block::Mapping => {
                self.block.pop();
                if self.block.last() == Some(&(column, Block::Mapping)) {
                    return Ok(());
                }
            }
            _ => {}
        }
        self.block.push((column, kind));
        self.check(self.line_start + column)
    }

    fn run(&mut self) -> Result<(), TextError> {
        // A leading byte-order mark.
        if self.text.starts_with("\u{feff}".as_bytes()) {
            self.pos = 3;
            self.line_start = 3;
        }
        let mut continues_plain = false;
        while self.pos < self.text.len() {
            // At a line start: indentation, then the first token.
            let mut indent = 0;
            while self.peek(0) == Some(b' ') {
                self.pos += 1;
                indent += 1;
            }
            let Some(first) = self.peek(0) else { break };
            if self.is_break(0) {
                self.newline();
                continue;
            }
            if first == b'#' {
                self.skip_to_line_end();
                continue;
            }
            if self.flow == 0 && indent == 0 {
                let rest = self.text.get(self.pos..).unwrap_or(&[]);
                if (rest.starts_with(b"---") || rest.starts_with(b"...")) && self.blank_or_end(3) {
                    self.block.clear();
                    self.pos += 3;
                    continues_plain = self.tokens()?;
                    continue;
                }
                if first == b'%' {
                    self.skip_to_line_end();
                    continue;
                }
            }
            if continues_plain && (self.flow > 0 || self.indent().is_none_or(|i| indent > i)) {
                // A multi-line plain scalar goes on (libyaml reads a quote here as part of it).
                continues_plain = self.plain() || self.tokens()?;
                continue;
            }
            if self.flow == 0 {
                while self.indent().is_some_and(|c| c > indent) {
                    self.block.pop();
                }
            }
            continues_plain = self.tokens()?;
        }
        Ok(())
    }

    /// Reads tokens up to the end of the line (or beyond, for quoted and block scalars).
    /// Returns whether a plain scalar runs to the end of the line (it may continue on the next).
    fn tokens(&mut self) -> Result<bool, TextError> {
        loop {
            while matches!(self.peek(0), Some(b' ' | b'\t')) {
                self.pos += 1;
            }
            let Some(c) = self.peek(0) else {
                return Ok(false);
            };
            if self.is_break(0) {
                self.newline();
                return Ok(false);
            }
            let column = self.pos - self.line_start;
            match c {
                b'#' => self.skip_to_line_end(),
                b'[' | b'{' => {
                    self.flow += 1;
                    self.check(self.pos)?;
                    self.pos += 1;
                }
                b']' | b'}' => {
                    self.pos += 1;
                    self.flow = self.flow.saturating_sub(1);
                }
                b',' if self.flow > 0 => self.pos += 1,
                b'-' | b'?' if self.blank_or_end(1) => {
                    self.pos += 1;
                    let kind = if c == b'-' {
                        Block::Sequence
                    } else {
                        Block::Mapping
                    };
                    self.push_block(column, kind)?;
                }
                b':' if self.blank_or_end(1) || self.flow > 0 => self.pos += 1,
                b'"' | b'\'' => {
                    self.quoted(c);
                    self.maybe_key(column)?;
                }
                b'|' | b'>' if self.flow == 0 => {
                    self.block_scalar();
                    return Ok(false);
                }
                b'&' | b'!' => {
                    // Anchor or tag: a name, then the node.
                    while let Some(c) = self.peek(0) {
                        if c == b' '
                            || c == b'\t'
                            || self.is_break(0)
                            || (self.flow > 0 && Self::flow_indicator(c))
                        {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => {
                    let line = self.line;
                    if self.plain() {
                        return Ok(true);
                    }
                    if self.line == line && self.peek(0) == Some(b':') {
                        self.maybe_key(column)?;
                    }
                }
            }
        }
    }

    /// After a scalar at `column`: a `:` makes it a key, which opens a block mapping there.
    fn maybe_key(&mut self, column: usize) -> Result<(), TextError> {
        let mut ahead = 0;
        while matches!(self.peek(ahead), Some(b' ' | b'\t')) {
            ahead += 1;
        }
        if self.peek(ahead) == Some(b':') && (self.flow > 0 || self.blank_or_end(ahead + 1)) {
            self.pos += ahead + 1;
            self.push_block(column, Block::Mapping)?;
        }
        Ok(())
    }

    /// A plain scalar from `pos`: stops before `: `, ` #`, and in flow context before a flow
    /// indicator. Returns whether it reached the end of the line (it may continue there).
    fn plain(&mut self) -> bool {
        let mut prev_blank = false;
        while let Some(c) = self.peek(0) {
            if self.is_break(0) {
                return true;
            }
            if c == b'#' && prev_blank {
                return false;
            }
            if c == b':'
                && (self.blank_or_end(1)
                    || (self.flow > 0 && self.peek(1).is_some_and(Self::flow_indicator)))
            {
                return false;
            }
            if self.flow > 0 && Self::flow_indicator(c) {
                return false;
            }
            prev_blank = c == b' ' || c == b'\t';
            self.pos += 1;
        }
        false
    }

    /// A quoted scalar from its opening quote to its closing one (across lines).
    fn quoted(&mut self, quote: u8) {
        self.pos += 1;
        loop {
            // Bytes that cannot end the scalar, escape or break a line are skipped in one go
            // (the common case; loading cost, issue 12).
            let rest = self.text.get(self.pos..).unwrap_or(&[]);
            self.pos += rest
                .iter()
                .position(|&b| matches!(b, b'"' | b'\\' | b'\'' | b'\n' | b'\r' | 0xC2 | 0xE2))
                .unwrap_or(rest.len());
            let Some(c) = self.peek(0) else {
                break;
            };
            if self.is_break(0) {
                self.newline();
                continue;
            }
            self.pos += 1;
            if quote == b'"' && c == b'\\' {
                // The escaped character (a line break too).
                if self.is_break(0) {
                    self.newline();
                } else if self.peek(0).is_some() {
                    self.pos += 1;
                }
            } else if c == quote {
                if quote == b'\'' && self.peek(0) == Some(b'\'') {
                    self.pos += 1;
                } else {
                    return;
                }
            }
        }
    }

    /// A block scalar: the header line, then every line indented at least as much as its first
    /// non-empty line (which must be deeper than the enclosing block collection), or empty.
    fn block_scalar(&mut self) {
        let explicit = (1..=2)
            .filter_map(|i| self.peek(i))
            .find(u8::is_ascii_digit)
            .map(|d| usize::from(d - b'0'));
        self.skip_to_line_end();
        if self.pos >= self.text.len() {
            return;
        }
        self.newline();
        let parent = self.indent();
        let minimum = parent.map_or(0, |p| p + 1).max(1);
        let mut content_indent = explicit.map(|d| parent.unwrap_or(0) + d);
        loop {
            let line_begin = self.pos;
            let mut spaces = 0;
            while self.peek(spaces) == Some(b' ') {
                spaces += 1;
            }
            if self.peek(spaces).is_none() {
                self.pos += spaces;
                return;
            }
            if self.is_break(spaces) {
                self.pos += spaces;
                self.newline();
                continue;
            }
            let needed = *content_indent.get_or_insert(spaces.max(minimum));
            if spaces < needed {
                // The scalar ended; this line is read normally.
                self.pos = line_begin;
                return;
            }
            self.pos += spaces;
            self.skip_to_line_end();
            if self.pos >= self.text.len() {
                return;
            }
            self.newline();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_error(text: &str) -> Option<(usize, usize)> {
        check_depth(text).err().map(|e| (e.line, e.column))
    }

    #[test]
    fn deep_json_is_refused_where_it_gets_too_deep() {
        let deep = r#"{"a":"#.repeat(100_000);
        let e = check_depth(&deep).unwrap_err();
        assert_eq!((e.line, e.column), (1, 5 * MAX_DEPTH + 1));
        assert!(e.message.contains("nesting deeper than 64 levels"), "{e}");
        let ok = format!("{}1{}", r#"{"a":"#.repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert_eq!(depth_error(&ok), None);
        assert_eq!(depth_error(&"[".repeat(65)), Some((1, 65)));
        assert_eq!(depth_error(&"[".repeat(64)), None);
        // Siblings do not add up.
        assert_eq!(
            depth_error(&format!("[{}1]", "[[1]],".repeat(10_000))),
            None
        );
    }

    #[test]
    fn deep_block_yaml_is_refused() {
        // Compact nested sequences: `- - - - x`.
        assert!(depth_error(&"- ".repeat(100_000)).is_some());
        assert_eq!(depth_error(&format!("{}x\n", "- ".repeat(64))), None);
        // Nested mappings by indentation.
        let nested: String = (0..70)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert_eq!(depth_error(&nested), Some((65, 65)));
        let shallow: String = (0..60)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert_eq!(depth_error(&shallow), None);
        // Flow inside block adds up.
        let mixed = format!("{shallow}{}[[[[[[", " ".repeat(60));
        assert!(depth_error(&mixed).is_some());
    }

    #[test]
    fn brackets_inside_scalars_do_not_count() {
        let many = "[".repeat(200);
        for text in [
            format!("a: \"{many}\"\n"),
            format!("a: '{many}'\n"),
            format!("a: x{many}\n"),
            format!("a: x # {many}\n"),
            format!("# {many}\n"),
            format!("a: |\n  {many}\n  {many}\nb: 1\n"),
            format!("- a: >-\n    {many}\n\n    {many}\n- b\n"),
            format!("{{\"a\": \"{many}\\\"{many}\"}}"),
            // A whole kubectl annotation holding JSON.
            "metadata:\n  annotations:\n    last: |\n      {\"a\":{\"b\":[1,2]}}\n".to_string(),
        ] {
            assert_eq!(depth_error(&text), None, "{text}");
        }
    }

    #[test]
    fn what_libyaml_reads_as_structure_is_counted() {
        let many = "[".repeat(200);
        for text in [
            // A quote in the middle of a plain scalar does not start a quoted scalar.
            format!("a: x\"y\n{many}"),
            format!("[ abc\n\"{many}\"]"),
            // A line less indented than a block scalar's first line ends it.
            format!("a: |\n    text\n  {many}\n"),
            // `\r` alone is a line break.
            format!("a: b\r{many}"),
        ] {
            assert!(depth_error(&text).is_some(), "{text:?}");
        }
    }

    #[cfg(feature = "yaml")]
    #[test]
    fn control_characters_are_found_where_they_are() {
        let e = check_yaml_characters("a: 1\nname: x\u{0}y\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 8));
        assert!(e.message.contains("U+0000"), "{e}");
        assert!(check_yaml_characters("a: \"é\t\u{1F600}\"\r\n").is_ok());
        assert_eq!(
            check_yaml_characters("a\r\nb\u{7f}").map_err(|e| (e.line, e.column)),
            Err((2, 2))
        );
    }
}
