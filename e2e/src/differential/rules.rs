//! The one walk over an AuthorizationPolicy's rules, shared by [`super::values`] (which reads
//! what the rules name) and [`super::ports`] (which finds and rewrites the ports they name).
//!
//! A walk yields [`Site`]s as JSON pointers into the document, so that the same walk serves a
//! reader (`Value::pointer`) and a rewriter (`Value::pointer_mut`).

use serde_json::Value;

/// Which part of a rule a site is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// `rules[i].from[j].source`
    Source,
    /// `rules[i].to[j].operation`
    Operation,
    /// `rules[i].when[j]`
    Condition,
}

/// One source, operation or condition of a policy document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub part: Part,
    /// JSON pointer to the object in the document.
    pub pointer: String,
}

/// The namespace of a policy document (`default` when it names none, as Istio's builder tests do).
pub fn namespace(doc: &Value) -> &str {
    doc.get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("default")
}

fn items<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = (usize, &'a Value)> {
    v.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

/// Every source, operation and condition of `doc`, rule by rule, in document order (within a
/// rule: sources, then operations, then conditions). A `from` without `source` or a `to` without
/// `operation` names nothing and yields no site.
pub fn sites(doc: &Value) -> Vec<Site> {
    let mut out = Vec::new();
    let rules = doc.get("spec").map(|s| items(s, "rules"));
    for (r, rule) in rules.into_iter().flatten() {
        let at = format!("/spec/rules/{r}");
        for (i, from) in items(rule, "from") {
            if from.get("source").is_some() {
                out.push(Site {
                    part: Part::Source,
                    pointer: format!("{at}/from/{i}/source"),
                });
            }
        }
        for (i, to) in items(rule, "to") {
            if to.get("operation").is_some() {
                out.push(Site {
                    part: Part::Operation,
                    pointer: format!("{at}/to/{i}/operation"),
                });
            }
        }
        for (i, _) in items(rule, "when") {
            out.push(Site {
                part: Part::Condition,
                pointer: format!("{at}/when/{i}"),
            });
        }
    }
    out
}

/// The strings of the list `field` of `v` (non-strings ignored).
pub fn strings<'a>(v: Option<&'a Value>, field: &str) -> impl Iterator<Item = &'a str> {
    v.and_then(|o| o.get(field))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_in_document_order_and_only_where_something_is_named() {
        let doc = serde_json::json!({
            "spec": {"rules": [
                {"from": [{"source": {}}, {}], "to": [{"operation": {}}], "when": [{}, {}]},
                {"to": [{}]}
            ]}
        });
        let got: Vec<(Part, String)> = sites(&doc)
            .into_iter()
            .map(|s| (s.part, s.pointer))
            .collect();
        assert_eq!(
            got,
            vec![
                (Part::Source, "/spec/rules/0/from/0/source".to_string()),
                (Part::Operation, "/spec/rules/0/to/0/operation".to_string()),
                (Part::Condition, "/spec/rules/0/when/0".to_string()),
                (Part::Condition, "/spec/rules/0/when/1".to_string()),
            ]
        );
        assert!(sites(&serde_json::json!({"spec": {}})).is_empty());
        assert_eq!(namespace(&doc), "default");
    }
}
