//! From text to objects: YAML (one or more `---` documents) or JSON, then each document as one
//! object, a JSON array of objects, or a `kind: List` with `items` (`kubectl get -o yaml|json`).

use serde_json::{Map, Value};

use crate::error::Diagnostic;

/// One object of the input, with where it came from (`document 2, items[3]`).
pub(crate) struct RawObject {
    pub(crate) origin: String,
    pub(crate) value: Value,
}

/// Parses `text` into documents (1-based numbers). Unparsable documents are errors naming
/// `document N` and the parser's line and column.
pub(crate) fn parse_documents(
    text: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<(usize, Value)> {
    let trimmed = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        match strict_json::from_str(text) {
            Ok(v) => return vec![(1, v)],
            // Flow-style YAML (`{a: b}`) also starts like this; let the YAML parser decide.
            #[cfg(feature = "yaml")]
            Err(_) => {}
            #[cfg(not(feature = "yaml"))]
            Err(e) => {
                diagnostics.push(Diagnostic::error(None, "document 1", e));
                return Vec::new();
            }
        }
    }
    #[cfg(feature = "yaml")]
    {
        yaml::parse(text, diagnostics)
    }
    #[cfg(not(feature = "yaml"))]
    {
        if trimmed.is_empty() {
            return Vec::new();
        }
        diagnostics.push(Diagnostic::error(
            None,
            "document 1",
            "expected JSON (an object or an array of objects); this build reads YAML only with the `yaml` feature",
        ));
        Vec::new()
    }
}

/// Splits one document into objects. `null` (an empty document) gives none. Arrays and Lists
/// nest (`[{kind: List, items: [...]}]`): every object inside is read, since skipping one could
/// drop a DENY policy.
pub(crate) fn objects_of_document(
    doc: usize,
    value: Value,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<RawObject> {
    let mut out = Vec::new();
    collect(format!("document {doc}"), value, 0, &mut out, diagnostics);
    out
}

/// How deep arrays and Lists may nest (kubectl output nests one level).
const MAX_NESTING: usize = 8;

fn collect(
    origin: String,
    value: Value,
    depth: usize,
    out: &mut Vec<RawObject>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if depth > MAX_NESTING {
        diagnostics.push(Diagnostic::error(
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
                collect(
                    format!("{origin}, [{i}]"),
                    item,
                    depth + 1,
                    out,
                    diagnostics,
                );
            }
        }
        Value::Object(map) if is_list(&map) => {
            let mut map = map;
            let item_type = item_type(&map);
            match map.remove("items") {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for (i, mut item) in items.into_iter().enumerate() {
                        if let (Some((api_version, kind)), Value::Object(o)) =
                            (&item_type, &mut item)
                        {
                            o.entry("kind").or_insert_with(|| kind.clone().into());
                            if let Some(v) = api_version {
                                o.entry("apiVersion").or_insert_with(|| v.clone().into());
                            }
                        }
                        let o = format!("{origin}, items[{i}]");
                        collect(o, item, depth + 1, out, diagnostics);
                    }
                }
                Some(_) => diagnostics.push(Diagnostic::error(
                    None,
                    format!("{origin}, items"),
                    "expected `items` of a List to be a list of objects",
                )),
            }
        }
        other => push_object(origin, other, out, diagnostics),
    }
}

fn push_object(
    origin: String,
    value: Value,
    out: &mut Vec<RawObject>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    match value {
        Value::Null => {}
        Value::Object(_) => out.push(RawObject { origin, value }),
        other => diagnostics.push(Diagnostic::error(
            None,
            origin,
            format!(
                "expected a Kubernetes object (a mapping with apiVersion, kind, metadata, spec), found {}",
                super::decode::describe(&other)
            ),
        )),
    }
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

/// JSON text to a value, refusing duplicate keys (the plugin configuration's parser).
pub(crate) fn parse_json_strict(text: &str) -> Result<Value, String> {
    strict_json::from_str(text)
}

/// JSON parsing that, unlike `serde_json::Value`, rejects duplicate keys: in a security policy
/// `{"action": "DENY", "action": "ALLOW"}` must not quietly mean ALLOW.
mod strict_json {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Number, Value};

    pub(super) fn from_str(text: &str) -> Result<Value, String> {
        let mut de = serde_json::Deserializer::from_str(text);
        let value = StrictValue
            .deserialize(&mut de)
            .map_err(|e| e.to_string())?;
        de.end().map_err(|e| e.to_string())?;
        Ok(value)
    }

    struct StrictValue;

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

    use crate::error::Diagnostic;

    pub(super) fn parse(text: &str, diagnostics: &mut Vec<Diagnostic>) -> Vec<(usize, Value)> {
        let mut out = Vec::new();
        let mut last_error: Option<String> = None;
        for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let n = i + 1;
            let path = format!("document {n}");
            let mut value = match Yaml::deserialize(document) {
                Ok(v) => v,
                Err(e) => {
                    let text = e.to_string();
                    // After a syntax error the parser cannot resynchronise: every later
                    // "document" repeats the same error. (A duplicate key is not like that.)
                    if last_error.as_deref() == Some(text.as_str()) {
                        break;
                    }
                    let at = match e.location() {
                        Some(l) if !text.contains(" line ") => {
                            format!(" (line {}, column {})", l.line(), l.column())
                        }
                        _ => String::new(),
                    };
                    diagnostics.push(Diagnostic::error(
                        None,
                        path,
                        format!("cannot parse YAML: {text}{at}"),
                    ));
                    // serde_yaml_ng 0.10 resumes mid-document after an unknown alias and then
                    // panics ("unexpected end of mapping"): stop there (found by `make fuzz`).
                    if text.starts_with("unknown anchor") {
                        break;
                    }
                    last_error = Some(text);
                    continue;
                }
            };
            last_error = None;
            if let Err(e) = value.apply_merge() {
                diagnostics.push(Diagnostic::error(
                    None,
                    path,
                    format!("bad YAML merge key: {e}"),
                ));
                continue;
            }
            match to_json(value) {
                Ok(v) => out.push((n, v)),
                Err(e) => diagnostics.push(Diagnostic::error(None, path, e)),
            }
        }
        out
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
            .is_err_and(|e| e.contains("duplicate key \"a\"")));
        assert_eq!(
            strict_json::from_str(r#"[{"a": [1, null, "x", 1.5, true]}]"#).ok(),
            Some(serde_json::json!([{"a": [1, null, "x", 1.5, true]}]))
        );
    }
}
