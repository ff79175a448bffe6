//! The path-tracking decoder: walks a `serde_json::Value` and reports every problem with its
//! field path instead of stopping at the first one. Kind-specific decoding lives in
//! `authorization_policy.rs`, `peer_authentication.rs` and `metadata.rs`; this file holds the
//! shared pieces (objects with a closed set of fields, strings, string lists, enums).

use serde_json::{Map, Value};

use super::field_path::FieldPath;
use crate::error::{Diagnostic, ObjectRef};

/// Collects the problems of one object while it is decoded.
pub(crate) struct Decoder {
    pub(crate) object: Option<ObjectRef>,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl Decoder {
    pub(crate) fn new(object: Option<ObjectRef>) -> Self {
        Decoder {
            object,
            diagnostics: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::error(
            self.object.clone(),
            path.as_str(),
            message,
        ));
    }

    /// Paths that had a decoding error: validation findings at or below them are noise (the
    /// value there is a placeholder) and are dropped.
    pub(crate) fn error_paths(&self) -> Vec<FieldPath> {
        self.diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| FieldPath::root().field(&d.path))
            .collect()
    }

    /// `value` as an object whose fields are all in `known`; unknown fields are errors with the
    /// closest known name as a suggestion. `None` (after reporting) when it is not an object.
    pub(crate) fn object<'v>(
        &mut self,
        value: &'v Value,
        path: &FieldPath,
        known: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let map = self.object_any_fields(value, path)?;
        for name in map.keys() {
            if !known.contains(&name.as_str()) {
                let message = unknown_field_message(name, known);
                self.error(&path.field(name), message);
            }
        }
        Some(map)
    }

    /// `value` as an object, without checking its field names.
    pub(crate) fn object_any_fields<'v>(
        &mut self,
        value: &'v Value,
        path: &FieldPath,
    ) -> Option<&'v Map<String, Value>> {
        match value {
            Value::Object(map) => Some(map),
            other => {
                self.error(
                    path,
                    format!("expected an object, found {}", describe(other)),
                );
                None
            }
        }
    }

    /// A string field; absent or `null` is `None`.
    pub(crate) fn opt_string(&mut self, value: Option<&Value>, path: &FieldPath) -> Option<String> {
        match value {
            None | Some(Value::Null) => None,
            Some(v) => self.string(v, path),
        }
    }

    /// A string; a number or a boolean gets a hint to quote it, since YAML reads `80` and `true`
    /// as non-strings and Kubernetes rejects them where the schema says `string`.
    pub(crate) fn string(&mut self, value: &Value, path: &FieldPath) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Number(_) | Value::Bool(_) => {
                self.error(
                    path,
                    format!("expected a string, found {}; quote it", describe(value)),
                );
                None
            }
            other => {
                self.error(
                    path,
                    format!("expected a string, found {}", describe(other)),
                );
                None
            }
        }
    }

    /// A list of strings (`principals`, `ports`, `values`, ...); absent or `null` is empty.
    pub(crate) fn string_list(&mut self, value: Option<&Value>, path: &FieldPath) -> Vec<String> {
        match value {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.string(item, &path.index(i)))
                .collect(),
            Some(Value::String(s)) => {
                self.error(
                    path,
                    format!(
                        "expected a list of strings, found a single string {s:?}; write [{s:?}]"
                    ),
                );
                Vec::new()
            }
            Some(other) => {
                self.error(
                    path,
                    format!("expected a list of strings, found {}", describe(other)),
                );
                Vec::new()
            }
        }
    }

    /// A list of objects where `null` entries are kept as `None` (Istio tells them apart:
    /// "`rule` must not be nil"). An entry that fails to decode is also `None`, and its error
    /// stands for it. Absent or `null` is `None`; `[]` is `Some(vec![])`.
    pub(crate) fn list<T>(
        &mut self,
        value: Option<&Value>,
        path: &FieldPath,
        mut item: impl FnMut(&mut Self, &Value, &FieldPath) -> Option<T>,
    ) -> Option<Vec<Option<T>>> {
        match value {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::Null => None,
                        v => item(self, v, &path.index(i)),
                    })
                    .collect(),
            ),
            Some(other) => {
                self.error(path, format!("expected a list, found {}", describe(other)));
                None
            }
        }
    }

    /// A map of strings to strings (`matchLabels`, `annotations`).
    pub(crate) fn string_map(
        &mut self,
        value: Option<&Value>,
        path: &FieldPath,
    ) -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        let Some(value) = value else { return out };
        if value.is_null() {
            return out;
        }
        let Some(map) = self.object_any_fields(value, path) else {
            return out;
        };
        for (k, v) in map {
            if let Some(s) = self.string(v, &path.key(k)) {
                out.insert(k.clone(), s);
            }
        }
        out
    }

    /// An enum written as a string; an unknown value gets the API server's message.
    pub(crate) fn enumeration<T: Copy>(
        &mut self,
        value: Option<&Value>,
        path: &FieldPath,
        variants: &[(&str, T)],
    ) -> Option<T> {
        let s = self.opt_string(value, path)?;
        if let Some((_, v)) = variants.iter().find(|(name, _)| *name == s) {
            return Some(*v);
        }
        let supported: Vec<String> = variants.iter().map(|(n, _)| format!("{n:?}")).collect();
        self.error(
            path,
            format!(
                "Unsupported value: {s:?}: supported values: {}",
                supported.join(", ")
            ),
        );
        None
    }
}

/// How a value is named in messages: `number 80`, `string "x"`, `a list`.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// `unknown field "notNamespace"; did you mean "notNamespaces"?`, or the list of known fields
/// when nothing is close.
pub(crate) fn unknown_field_message(name: &str, known: &[&str]) -> String {
    match closest(name, known) {
        Some(best) => format!("unknown field {name:?}; did you mean {best:?}?"),
        None => {
            let list: Vec<String> = known.iter().map(|k| format!("{k:?}")).collect();
            format!("unknown field {name:?}; known fields: {}", list.join(", "))
        }
    }
}

/// The known name closest to `name` by edit distance, ignoring case and `_`/`-` (so `not_hosts`
/// and `NotHosts` find `notHosts`), if it is close enough to be a plausible typo.
pub(crate) fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let norm = |s: &str| -> Vec<char> {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let target = norm(name);
    let limit = (target.len() / 3).clamp(1, 3);
    known
        .iter()
        .map(|k| (edit_distance(&target, &norm(k)), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        if let Some(first) = cur.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev.get(j).copied().unwrap_or(0) + usize::from(ca != cb);
            let delete = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let insert = cur.get(j).copied().unwrap_or(0) + 1;
            if let Some(slot) = cur.get_mut(j + 1) {
                *slot = substitute.min(delete).min(insert);
            }
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_field() {
        let known = ["namespaces", "notNamespaces", "principals"];
        assert_eq!(closest("notNamespace", &known), Some("notNamespaces"));
        assert_eq!(closest("not_namespaces", &known), Some("notNamespaces"));
        assert_eq!(closest("Principals", &known), Some("principals"));
        assert_eq!(closest("zzz", &known), None);
        assert_eq!(
            unknown_field_message("notNamespace", &known),
            r#"unknown field "notNamespace"; did you mean "notNamespaces"?"#
        );
    }

    #[test]
    fn edit_distance_counts_edits() {
        let c = |s: &str| s.chars().collect::<Vec<_>>();
        assert_eq!(edit_distance(&c("kitten"), &c("sitting")), 3);
        assert_eq!(edit_distance(&c(""), &c("abc")), 3);
        assert_eq!(edit_distance(&c("abc"), &c("abc")), 0);
    }
}
