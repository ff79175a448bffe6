//! Reading Istio objects as users have them: YAML or JSON, one object, multi-document YAML, or a
//! `kind: List` as `kubectl get -o yaml|json` prints it; `security.istio.io/v1` and `v1beta1`.
//! Unknown fields are errors (in a security policy an ignored field widens access); every object
//! is validated with Istio's rules and messages; all problems are reported at once.
//!
//! Where things happen:
//! * `document.rs`: text to documents (YAML/JSON), documents to objects (List, arrays).
//! * `decode.rs`: the path-tracking decoder (types, unknown fields with suggestions).
//! * `metadata.rs`, `authorization_policy.rs`, `peer_authentication.rs`: each field's decoding.
//! * `validate/`: Istio's validation rules, one file per concern.
//! * this file: kinds and apiVersions, duplicates, and putting it together.

mod authorization_policy;
mod decode;
mod document;
mod field_path;
mod metadata;
mod peer_authentication;
mod timestamp;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use serde_json::Value;

use crate::error::{Diagnostic, Diagnostics, ObjectRef};
use crate::model::{AuthorizationPolicy, PeerAuthentication, PolicySet};
use decode::Decoder;
use document::RawObject;
use field_path::FieldPath;

/// How to read the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Namespace of objects whose `metadata.namespace` is absent (kubectl's current namespace).
    pub default_namespace: String,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            default_namespace: "default".to_string(),
        }
    }
}

const AUTHORIZATION_POLICY: &str = "AuthorizationPolicy";
const PEER_AUTHENTICATION: &str = "PeerAuthentication";
const API_VERSIONS: &[&str] = &["security.istio.io/v1", "security.istio.io/v1beta1"];
const TOP_LEVEL_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// Parses and validates `text` (YAML or JSON). On success returns the objects and the warnings;
/// on failure every error and warning found.
pub fn load_str(text: &str, opts: &LoadOptions) -> Result<(PolicySet, Diagnostics), Diagnostics> {
    let mut diagnostics = Vec::new();
    let mut objects = Vec::new();
    for (n, value) in document::parse_documents(text, &mut diagnostics) {
        objects.extend(document::objects_of_document(n, value, &mut diagnostics));
    }
    load_objects(objects, diagnostics, opts)
}

/// Like [`load_str`] for input that is already JSON: one object, an array of objects, or a
/// `kind: List`.
pub fn load_value(
    value: &serde_json::Value,
    opts: &LoadOptions,
) -> Result<(PolicySet, Diagnostics), Diagnostics> {
    let mut diagnostics = Vec::new();
    let objects = document::objects_of_document(1, value.clone(), &mut diagnostics);
    load_objects(objects, diagnostics, opts)
}

fn load_objects(
    objects: Vec<RawObject>,
    mut diagnostics: Vec<Diagnostic>,
    opts: &LoadOptions,
) -> Result<(PolicySet, Diagnostics), Diagnostics> {
    let mut set = PolicySet::default();
    // (kind, namespace, name) -> where it was first seen.
    let mut seen: HashMap<ObjectRef, String> = HashMap::new();
    for raw in objects {
        load_object(raw, opts, &mut set, &mut diagnostics, &mut seen);
    }
    let diagnostics = Diagnostics(diagnostics);
    if diagnostics.has_errors() {
        Err(diagnostics)
    } else {
        Ok((set, diagnostics))
    }
}

/// One object: check kind and apiVersion, decode, validate, look for a duplicate.
fn load_object(
    raw: RawObject,
    opts: &LoadOptions,
    set: &mut PolicySet,
    diagnostics: &mut Vec<Diagnostic>,
    seen: &mut HashMap<ObjectRef, String>,
) {
    let Value::Object(map) = &raw.value else {
        return;
    };
    let (name, namespace) = metadata::name_and_namespace(map, &opts.default_namespace);
    let kind = match map.get("kind") {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        _ => {
            diagnostics.push(Diagnostic::error(
                None,
                raw.origin.as_str(),
                "Required value: `kind` is missing (expected AuthorizationPolicy or PeerAuthentication)",
            ));
            return;
        }
    };
    let object = ObjectRef {
        kind: kind.clone(),
        namespace,
        name: name.unwrap_or_default(),
    };
    if kind != AUTHORIZATION_POLICY && kind != PEER_AUTHENTICATION {
        diagnostics.push(Diagnostic::warning(
            Some(object.clone()),
            "",
            format!(
                "skipping {kind} {}/{} ({}): meshauthz reads only AuthorizationPolicy and PeerAuthentication",
                object.namespace, object.name, raw.origin
            ),
        ));
        return;
    }

    let mut dec = Decoder::new(Some(object.clone()));
    dec.object(&raw.value, &FieldPath::root(), TOP_LEVEL_FIELDS);
    let api_version = api_version(&mut dec, map.get("apiVersion"), &kind);
    let meta = metadata::decode(
        &mut dec,
        map.get("metadata"),
        &opts.default_namespace,
        &raw.origin,
    );
    let mut findings = validate::Findings::new(object.clone());
    if kind == AUTHORIZATION_POLICY {
        let policy = AuthorizationPolicy {
            api_version,
            meta,
            spec: authorization_policy::decode_spec(&mut dec, map.get("spec")),
        };
        validate::authorization_policy(&mut findings, &policy);
        set.authorization_policies.push(policy);
    } else {
        let policy = PeerAuthentication {
            api_version,
            meta,
            spec: peer_authentication::decode_spec(&mut dec, map.get("spec")),
        };
        validate::peer_authentication(&mut findings, &policy);
        set.peer_authentications.push(policy);
    }

    let findings = findings.into_diagnostics(dec.bad_paths());
    diagnostics.append(&mut dec.diagnostics);
    diagnostics.extend(findings);

    if !object.name.is_empty() {
        if let Some(first) = seen.get(&object) {
            diagnostics.push(Diagnostic::error(
                Some(object.clone()),
                "metadata.name",
                format!(
                    "duplicate {kind} {}/{} ({}): already defined in {first}; Kubernetes would keep only one of them",
                    object.namespace, object.name, raw.origin
                ),
            ));
        } else {
            seen.insert(object, raw.origin);
        }
    }
}

/// `apiVersion` must be `security.istio.io/v1` or `v1beta1` for the kinds meshauthz reads.
fn api_version(dec: &mut Decoder, value: Option<&Value>, kind: &str) -> String {
    let path = FieldPath::root().field("apiVersion");
    let expected = r#"expected "security.istio.io/v1" or "security.istio.io/v1beta1""#;
    match dec.opt_string(value, &path) {
        Some(v) if API_VERSIONS.contains(&v.as_str()) => v,
        Some(v) => {
            dec.error(
                &path,
                format!("unsupported apiVersion {v:?} for {kind}: {expected}"),
            );
            v
        }
        None => {
            if value.is_none_or(Value::is_null) {
                dec.error(
                    &path,
                    format!("Required value: apiVersion is missing; {expected}"),
                );
            }
            String::new()
        }
    }
}
