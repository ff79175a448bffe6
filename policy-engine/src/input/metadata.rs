//! `metadata`: `name` (required), `namespace` (default: `LoadOptions::default_namespace`),
//! `annotations`, `creationTimestamp`. Everything else Kubernetes puts there (labels, uid,
//! resourceVersion, generation, managedFields, ...) is not policy and is ignored.

use serde_json::Value;

use super::decode::Decoder;
use super::field_path::FieldPath;
use super::timestamp::parse_rfc3339;
use crate::model::ObjectMeta;

/// Reads `name` and `namespace` before anything else, so that every later diagnostic can name
/// the object. Problems are reported through `dec` once it knows the object.
pub(crate) fn name_and_namespace(
    object: &serde_json::Map<String, Value>,
    default_namespace: &str,
) -> (Option<String>, String) {
    let meta = object.get("metadata").and_then(Value::as_object);
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(default_namespace)
        .to_string();
    (name, namespace)
}

/// Decodes `metadata`, reporting a missing name, non-string fields and a bad timestamp.
pub(crate) fn decode(
    dec: &mut Decoder,
    value: Option<&Value>,
    default_namespace: &str,
    origin: &str,
) -> ObjectMeta {
    let path = FieldPath::root().field("metadata");
    let mut meta = ObjectMeta {
        namespace: default_namespace.to_string(),
        ..ObjectMeta::default()
    };
    let Some(value) = value.filter(|v| !v.is_null()) else {
        dec.error(
            &path.field("name"),
            format!("Required value: name is required (object in {origin})"),
        );
        return meta;
    };
    let Some(map) = dec.object_any_fields(value, &path) else {
        return meta;
    };

    let name_path = path.field("name");
    match map.get("name") {
        Some(Value::String(name)) if !name.is_empty() => meta.name = name.clone(),
        None | Some(Value::Null) | Some(Value::String(_)) => dec.error(
            &name_path,
            format!("Required value: name is required (object in {origin})"),
        ),
        Some(other) => {
            // Reports the type error.
            dec.string(other, &name_path);
        }
    }
    if let Some(ns) = dec.opt_string(map.get("namespace"), &path.field("namespace")) {
        if !ns.is_empty() {
            meta.namespace = ns;
        }
    }
    meta.annotations = dec.string_map(map.get("annotations"), &path.field("annotations"));
    let ts_path = path.field("creationTimestamp");
    if let Some(ts) = dec.opt_string(map.get("creationTimestamp"), &ts_path) {
        match parse_rfc3339(&ts) {
            Ok(t) => meta.creation_timestamp = Some(t),
            Err(e) => dec.error(&ts_path, e),
        }
    }
    meta
}
