//! Finding the items of a `kind: List` in its text, so that each item can be parsed on its own
//! (see `document::read`). Only the plain shapes `kubectl get -o yaml|json` prints are split;
//! anything else gives `None` and the whole document is parsed. The pieces are only a guess:
//! the caller parses the rest and every item, and falls back on the whole parse if any of them
//! fails, so a wrong guess costs time, never a different reading.

use std::ops::Range;

/// A List's text cut in pieces.
pub(super) struct Split {
    /// The document without its items (`items:` left empty, or `"items": []`).
    pub(super) rest: String,
    /// Each item's text: YAML, a one-entry block sequence (`- ...` with its indentation);
    /// JSON, the value.
    pub(super) items: Vec<Range<usize>>,
}

/// A YAML document that is a block mapping with `items:` at column 0 followed by a block
/// sequence, one document only (no `---`), `\n` line breaks and no tabs in indentation.
#[cfg(feature = "yaml")]
pub(super) fn yaml(text: &str) -> Option<Split> {
    if text.contains(['\r', '\u{85}', '\u{2028}', '\u{2029}']) {
        return None;
    }
    let mut items = Vec::new();
    let mut seq_start = None;
    let mut seq_column = None;
    let mut seq_end = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        if line.starts_with("---") || line.starts_with("...") || line.starts_with('\t') {
            return None;
        }
        let content = line.trim_start_matches(' ');
        let blank = content.trim().is_empty() || content.starts_with('#');
        if seq_start.is_none() {
            if let Some(after) = line.strip_prefix("items:") {
                let after = after.trim();
                if !(after.is_empty() || after.starts_with('#')) {
                    return None;
                }
                seq_start = Some(offset);
            }
            continue;
        }
        if seq_end.is_some() || blank {
            continue;
        }
        let indent = line.len() - content.len();
        let dash = content.starts_with('-')
            && content
                .get(1..)
                .is_some_and(|r| r.is_empty() || r.starts_with([' ', '\n']));
        match seq_column {
            None if dash => {
                seq_column = Some(indent);
                items.push(start);
            }
            None => return None,
            Some(c) if indent > c => {}
            Some(c) if indent == c && dash => items.push(start),
            Some(_) if indent == 0 => seq_end = Some(start),
            Some(_) => return None,
        }
    }
    let begin = seq_start?;
    let end = seq_end.unwrap_or(text.len());
    items.first()?;
    let mut rest = String::with_capacity(begin + (text.len() - end));
    rest.push_str(text.get(..begin)?);
    rest.push_str(text.get(end..)?);
    let ranges = items
        .iter()
        .zip(items.iter().skip(1).chain(std::iter::once(&end)))
        .map(|(&a, &b)| a..b)
        .collect();
    Some(Split {
        rest,
        items: ranges,
    })
}

/// A JSON object whose `"items"` key holds an array.
pub(super) fn json(text: &str) -> Option<Split> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        match b.get(i)? {
            b'}' => return None,
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let key_end = skip_string(b, i)?;
        let key = b.get(i + 1..key_end - 1)?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        if key == b"items" && b.get(i) == Some(&b'[') {
            let array_start = i;
            let mut items = Vec::new();
            i += 1;
            loop {
                i = skip_ws(b, i);
                match b.get(i)? {
                    b']' => break,
                    b',' => {
                        i += 1;
                        continue;
                    }
                    _ => {}
                }
                let end = skip_value(b, i)?;
                items.push(i..end);
                i = end;
            }
            let array_end = i + 1;
            let mut rest = String::with_capacity(array_start + 2 + (b.len() - array_end));
            rest.push_str(text.get(..array_start)?);
            rest.push_str("[]");
            rest.push_str(text.get(array_end..)?);
            return Some(Split { rest, items });
        }
        i = skip_value(b, i)?;
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    {
        i += 1;
    }
    i
}

/// From an opening `"` to just after its closing one.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match b.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// From the start of a value to just after it.
fn skip_value(b: &[u8], mut i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'[' | b'{' => {
            let mut depth = 0usize;
            loop {
                match b.get(i)? {
                    b'"' => i = skip_string(b, i)?,
                    b'[' | b'{' => {
                        depth += 1;
                        i += 1;
                    }
                    b']' | b'}' => {
                        depth = depth.checked_sub(1)?;
                        i += 1;
                        if depth == 0 {
                            return Some(i);
                        }
                    }
                    _ => i += 1,
                }
            }
        }
        _ => {
            while b
                .get(i)
                .is_some_and(|c| !matches!(c, b',' | b']' | b'}') && !c.is_ascii_whitespace())
            {
                i += 1;
            }
            Some(i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "yaml")]
    #[test]
    fn splits_kubectl_yaml() {
        let text = "apiVersion: v1\nitems:\n- a: 1\n  b: [1]\n# c\n- x\nkind: List\n";
        let s = yaml(text).unwrap();
        assert_eq!(s.rest, "apiVersion: v1\nitems:\nkind: List\n");
        let items: Vec<&str> = s.items.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(items, ["- a: 1\n  b: [1]\n# c\n", "- x\n"]);
        let indented = "items:\n  - a\n  -\n    b\nkind: List";
        let s = yaml(indented).unwrap();
        assert_eq!(s.items.len(), 2);
        assert_eq!(s.rest, "items:\nkind: List");
        assert!(yaml("items: []\n").is_none());
        assert!(yaml("a: 1\n---\nitems:\n- x\n").is_none());
    }

    #[test]
    fn splits_kubectl_json() {
        let text = r#"{"apiVersion": "v1", "x": {"items": [1]}, "items": [ {"a": "]\"}"}, [1, 2] ,3 ], "kind": "List"}"#;
        let s = json(text).unwrap();
        assert_eq!(
            s.rest,
            r#"{"apiVersion": "v1", "x": {"items": [1]}, "items": [], "kind": "List"}"#
        );
        let items: Vec<&str> = s.items.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(items, [r#"{"a": "]\"}"}"#, "[1, 2]", "3"]);
        assert!(json(r#"[{"items": []}]"#).is_none());
        assert!(json(r#"{"kind": "List"}"#).is_none());
    }
}
