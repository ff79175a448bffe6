//! From text to objects: YAML (one or more `---` documents) or JSON, then each document as one
//! object, a JSON array of objects, or a `kind: List` with `items` (`kubectl get -o yaml|json`).

use serde_json::{Map, Value};

use super::{limits, Loader};
use crate::error::Diagnostic;

mod split;

/// One object of the input, with where it came from (`document 2, items[3]`).
pub(crate) struct RawObject {
    pub(crate) origin: String,
    pub(crate) value: Value,
}

/// Reads `text` (YAML: one or more `---` documents; or JSON) and hands every object to `loader`
/// as soon as it is read. Unparsable documents are errors naming `document N` and the line and
/// column.
///
/// Memory: a parser's tree of a whole document takes 6 to 12 times the text (serde_yaml_ng keeps
/// every event of a document, then a `Value`). A `kind: List` (what `kubectl get -o yaml|json`
/// prints, often tens of megabytes) is therefore read item by item when its text allows it
/// ([`split`]): each item is parsed, decoded and dropped before the next. Whenever that path
/// cannot be sure to read exactly what the whole parse would read (an anchor across items, a
/// parse error, anything unusual), it undoes what it loaded and the whole document is parsed.
pub(crate) fn read(text: &str, loader: &mut Loader<'_>) {
    // PyYAML and kubectl read a leading byte-order mark; so do we (it is not content).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Before any parser: deep nesting is refused in linear time (libyaml is quadratic in it).
    if let Err(e) = limits::check_depth(text) {
        loader.diagnostics.push(Diagnostic::error(
            None,
            "",
            format!("cannot read the input: {e}"),
        ));
        return;
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        if split::json(text).is_some_and(|s| read_split(text, &s, Syntax::Json, loader)) {
            return;
        }
        match strict_json::from_str(text) {
            Ok(v) => {
                objects_of_document(1, v, loader);
                return;
            }
            // Flow-style YAML (`{a: b}`) also starts like this: it goes to the YAML parser. What
            // looks like JSON (`{"`, `[{"`, ...) is JSON and its error is a JSON error.
            Err(e) if !cfg!(feature = "yaml") || looks_like_json(trimmed) => {
                loader.diagnostics.push(Diagnostic::error(
                    None,
                    "document 1",
                    format!("cannot parse JSON: {e}"),
                ));
                return;
            }
            Err(_) => {}
        }
    }
    #[cfg(feature = "yaml")]
    {
        if let Err(e) = limits::check_yaml_characters(text) {
            loader.diagnostics.push(Diagnostic::error(
                None,
                "",
                format!("cannot parse YAML: {e}"),
            ));
            return;
        }
        if split::yaml(text).is_some_and(|s| read_split(text, &s, Syntax::Yaml, loader)) {
            return;
        }
        yaml::parse(text, loader);
    }
    #[cfg(not(feature = "yaml"))]
    {
        if trimmed.is_empty() {
            return;
        }
        loader.diagnostics.push(Diagnostic::error(
            None,
            "document 1",
            "expected JSON (an object or an array of objects); this build reads YAML only with the `yaml` feature",
        ));
    }
}

/// `{"`, `{}`, `[{"`, `["`, `[]`, `[1`: JSON rather than flow-style YAML (`{a: b}`, `[a, b]`).
fn looks_like_json(trimmed: &str) -> bool {
    let rest = trimmed.trim_start_matches(|c: char| c == '{' || c == '[' || c.is_whitespace());
    rest.is_empty()
        || rest.starts_with(['"', '}', ']', '-'])
        || rest.starts_with(|c: char| c.is_ascii_digit())
}

#[derive(Clone, Copy)]
enum Syntax {
    Json,
    #[cfg(feature = "yaml")]
    Yaml,
}

impl Syntax {
    /// One piece of text to a value; `None` on any problem (the caller then parses the whole).
    fn parse(self, text: &str) -> Option<Value> {
        match self {
            Syntax::Json => strict_json::from_str(text).ok(),
            #[cfg(feature = "yaml")]
            Syntax::Yaml => yaml::parse_one(text),
        }
    }

    /// One item's text (JSON: the value; YAML: a one-entry block sequence `- ...`).
    fn parse_item(self, text: &str) -> Option<Value> {
        match self.parse(text)? {
            #[cfg(feature = "yaml")]
            Value::Array(items) if matches!(self, Syntax::Yaml) => {
                let mut items = items.into_iter();
                let item = items.next()?;
                items.next().is_none().then_some(item)
            }
            v => Some(v),
        }
    }
}

/// Reads a List item by item (see [`read`]); `false` (and nothing loaded) when the whole
/// document has to be parsed instead.
fn read_split(text: &str, s: &split::Split, syntax: Syntax, loader: &mut Loader<'_>) -> bool {
    let Some(Value::Object(rest)) = syntax.parse(&s.rest) else {
        return false;
    };
    if !is_list(&rest) || !rest.contains_key("items") || rest.contains_key("spec") {
        return false;
    }
    let item_type = item_type(&rest);
    drop(rest);
    let checkpoint = loader.checkpoint();
    for (i, range) in s.items.iter().enumerate() {
        let Some(item) = text.get(range.clone()).and_then(|t| syntax.parse_item(t)) else {
            loader.rollback(checkpoint);
            return false;
        };
        list_item("document 1", i, item, item_type.as_ref(), 0, loader);
    }
    loader.commit();
    true
}

/// Splits one document into objects. `null` (an empty document) gives none. Arrays and Lists
/// nest (`[{kind: List, items: [...]}]`): every object inside is read, since skipping one could
/// drop a DENY policy.
pub(crate) fn objects_of_document(doc: usize, value: Value, loader: &mut Loader<'_>) {
    collect(format!("document {doc}"), value, 0, loader);
}

/// How deep arrays and Lists may nest (kubectl output nests one level).
const MAX_NESTING: usize = 8;

fn collect(origin: String, value: Value, depth: usize, loader: &mut Loader<'_>) {
    if depth > MAX_NESTING {
        loader.diagnostics.push(Diagnostic::error(
            None,
            origin,
            format!("lists nested more than {MAX_NESTING} levels deep"),
        ));
        return;
    }
    match value {
        Value::Null => {}
        Value::Array(items) => {
            for (i, item) in items.into_iter().enumerate() {
                collect(format!("{origin}, [{i}]"), item, depth + 1, loader);
            }
        }
        Value::Object(map) if is_list(&map) => {
            let mut map = map;
            let item_type = item_type(&map);
            match map.remove("items") {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    drop(map);
                    for (i, item) in items.into_iter().enumerate() {
                        list_item(&origin, i, item, item_type.as_ref(), depth, loader);
                    }
                }
                Some(_) => loader.diagnostics.push(Diagnostic::error(
                    None,
                    format!("{origin}, items"),
                    "expected `items` of a List to be a list of objects",
                )),
            }
        }
        Value::Object(_) => loader.object(RawObject { origin, value }),
        other => loader.diagnostics.push(Diagnostic::error(
            None,
            origin,
            format!(
                "expected a Kubernetes object (a mapping with apiVersion, kind, metadata, spec), found {}",
                super::decode::describe(&other)
            ),
        )),
    }
}

/// Item `i` of the List at `origin` (with the List's item type, if it has one).
fn list_item(
    origin: &str,
    i: usize,
    mut item: Value,
    item_type: Option<&(Option<String>, String)>,
    depth: usize,
    loader: &mut Loader<'_>,
) {
    if let (Some((api_version, kind)), Value::Object(o)) = (item_type, &mut item) {
        o.entry("kind").or_insert_with(|| kind.clone().into());
        if let Some(v) = api_version {
            o.entry("apiVersion").or_insert_with(|| v.clone().into());
        }
    }
    collect(format!("{origin}, items[{i}]"), item, depth + 1, loader);
}

/// The API's typed list (`kind: AuthorizationPolicyList`) may leave `kind` and `apiVersion` out
/// of its items: they are the list's kind without `List`, and the list's apiVersion. `kind: List`
/// (kubectl) has no item type.
fn item_type(list: &Map<String, Value>) -> Option<(Option<String>, String)> {
    let kind = list.get("kind").and_then(Value::as_str)?;
    let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty())?;
    let api_version = list
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    Some((api_version, item_kind.to_string()))
}

/// `kind: List` (kubectl) or `kind: <Kind>List` (the API), with `items`.
pub(crate) fn is_list(map: &Map<String, Value>) -> bool {
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or("");
    (kind == "List" || (kind.ends_with("List") && map.contains_key("items")))
        && !map.contains_key("spec")
}

pub(crate) use strict_json::StrictValue;

/// JSON parsing that, unlike `serde_json::Value`, rejects duplicate keys: in a security policy
/// `{"action": "DENY", "action": "ALLOW"}` must not quietly mean ALLOW.
mod strict_json {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Number, Value};

    pub(super) fn from_str(text: &str) -> Result<Value, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let value = StrictValue.deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }

    /// One JSON value, refusing duplicate keys.
    pub(crate) struct StrictValue;

    impl<'de> DeserializeSeed<'de> for StrictValue {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for StrictValue {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
            Number::from_f64(v)
                .map(Value::Number)
                .ok_or_else(|| E::custom("number is not finite"))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_string()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element_seed(StrictValue)? {
                out.push(v);
            }
            Ok(Value::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value_seed(StrictValue)?;
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format!("duplicate key {key:?}")));
                }
                out.insert(key, value);
            }
            Ok(Value::Object(out))
        }
    }
}

#[cfg(feature = "yaml")]
mod yaml {
    use serde::Deserialize;
    use serde_json::{Map, Number, Value};
    use serde_yaml_ng::Value as Yaml;

    use super::Loader;
    use crate::error::Diagnostic;

    /// One document, all of `text`; `None` on any problem.
    pub(super) fn parse_one(text: &str) -> Option<Value> {
        let mut value = serde_yaml_ng::from_str::<Yaml>(text).ok()?;
        value.apply_merge().ok()?;
        to_json(value).ok()
    }

    /// Every document, each handed to `loader` (and dropped) before the next is parsed.
    pub(super) fn parse(text: &str, loader: &mut Loader<'_>) {
        for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let n = i + 1;
            let path = format!("document {n}");
            let mut value = match Yaml::deserialize(document) {
                Ok(v) => v,
                Err(e) => {
                    let text = e.to_string();
                    let at = match e.location() {
                        Some(l) if !text.contains(" line ") => {
                            format!(" (line {}, column {})", l.line(), l.column())
                        }
                        _ => String::new(),
                    };
                    loader.diagnostics.push(Diagnostic::error(
                        None,
                        path,
                        format!("cannot parse YAML: {text}{at}; nothing after it was read"),
                    ));
                    // Stop at the first error, whatever it is: serde_yaml_ng 0.10 leaves its
                    // parser mid-document after a syntax error or an unknown alias (even one that
                    // a duplicate key reported first hides), and the next "document" then starts
                    // with a stray end event, on which it panics ("unexpected end of mapping";
                    // found by `make fuzz-smoke`: `spec:\nspec: {m: *T}`).
                    break;
                }
            };
            if let Err(e) = value.apply_merge() {
                loader.diagnostics.push(Diagnostic::error(
                    None,
                    path,
                    format!("bad YAML merge key: {e}"),
                ));
                continue;
            }
            match to_json(value) {
                Ok(v) => super::objects_of_document(n, v, loader),
                Err(e) => loader.diagnostics.push(Diagnostic::error(None, path, e)),
            }
        }
    }

    /// YAML to JSON: map keys become strings (`8080:` is the key `"8080"`, as the API server
    /// reads it); tags are dropped.
    fn to_json(value: Yaml) -> Result<Value, String> {
        Ok(match value {
            Yaml::Null => Value::Null,
            Yaml::Bool(b) => Value::Bool(b),
            Yaml::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Number(i.into())
                } else if let Some(u) = n.as_u64() {
                    Value::Number(u.into())
                } else {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    Value::Number(
                        Number::from_f64(f).ok_or_else(|| format!("number {n} is not finite"))?,
                    )
                }
            }
            Yaml::String(s) => Value::String(s),
            Yaml::Sequence(items) => {
                Value::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?)
            }
            Yaml::Mapping(m) => {
                let mut out = Map::new();
                for (k, v) in m {
                    let key = match k {
                        Yaml::String(s) => s,
                        Yaml::Number(n) => n.to_string(),
                        Yaml::Bool(b) => b.to_string(),
                        Yaml::Null => "null".to_string(),
                        _ => return Err("a mapping key must be a scalar".to_string()),
                    };
                    if out.contains_key(&key) {
                        return Err(format!("duplicate mapping key {key:?}"));
                    }
                    out.insert(key, to_json(v)?);
                }
                Value::Object(out)
            }
            // Kubernetes objects carry no tags; dropping one would read the value as something
            // its author did not write.
            Yaml::Tagged(t) => {
                return Err(format!(
                "YAML tag {} is not supported (Kubernetes objects carry no custom tags); remove it",
                t.tag
            ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_duplicate_keys_are_rejected() {
        assert!(strict_json::from_str(r#"{"a": 1, "a": 2}"#)
            .is_err_and(|e| e.to_string().contains("duplicate key \"a\"")));
        assert_eq!(
            strict_json::from_str(r#"[{"a": [1, null, "x", 1.5, true]}]"#).ok(),
            Some(serde_json::json!([{"a": [1, null, "x", 1.5, true]}]))
        );
    }
}
