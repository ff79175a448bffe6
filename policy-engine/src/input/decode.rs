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
    /// Where a value could not be decoded and a placeholder (absent, default) stands for it.
    bad_paths: Vec<FieldPath>,
}

impl Decoder {
    pub(crate) fn new(object: Option<ObjectRef>) -> Self {
        Decoder {
            object,
            diagnostics: Vec::new(),
            bad_paths: Vec::new(),
        }
    }

    /// A value at `path` could not be decoded; a placeholder stands for it.
    pub(crate) fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.bad_paths.push(path.clone());
        self.report(path, message);
    }

    /// A problem that leaves the decoded value as the input meant it (an unknown field is
    /// ignored; what remains is what Istio would see).
    pub(crate) fn report(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::error(
            self.object.clone(),
            path.as_str(),
            message,
        ));
    }

    /// Paths where a placeholder stands for a value: validation findings about them are noise.
    pub(crate) fn bad_paths(&self) -> &[FieldPath] {
        &self.bad_paths
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
                self.report(&path.field(name), message);
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
            // A bad item keeps its place (as an empty placeholder, its error stands for it) so
            // that later findings name the right index.
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    // The common case without building the item's path.
                    Value::String(s) => s.clone(),
                    _ => self.string(item, &path.index(i)).unwrap_or_default(),
                })
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

/// Edit distance counting insertions, deletions, substitutions and swaps of two adjacent
/// characters (`form` is one edit from `from`): optimal string alignment.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let width = b.len() + 1;
    // d[i * width + j]: distance between a[..i] and b[..j].
    let mut d = vec![0usize; (a.len() + 1) * width];
    let at = |i: usize, j: usize| i * width + j;
    let get = |d: &[usize], i: usize, j: usize| d.get(at(i, j)).copied().unwrap_or(usize::MAX / 2);
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            let value = if i == 0 || j == 0 {
                i.max(j)
            } else {
                let (ca, cb) = (a.get(i - 1), b.get(j - 1));
                let cost = usize::from(ca != cb);
                let mut best = (get(&d, i - 1, j) + 1)
                    .min(get(&d, i, j - 1) + 1)
                    .min(get(&d, i - 1, j - 1) + cost);
                if i > 1 && j > 1 && ca == b.get(j - 2) && a.get(i - 2) == cb {
                    best = best.min(get(&d, i - 2, j - 2) + 1);
                }
                best
            };
            if let Some(slot) = d.get_mut(at(i, j)) {
                *slot = value;
            }
        }
    }
    get(&d, a.len(), b.len())
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
        assert_eq!(edit_distance(&c("form"), &c("from")), 1);
    }
}
