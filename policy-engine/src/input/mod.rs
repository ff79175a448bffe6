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
//! * `plugin_config.rs`, `write.rs`: the module's configuration (one type, decoder and writer).
//! * this file: kinds and apiVersions, duplicates, and putting it together.

mod authorization_policy;
mod decode;
mod document;
mod field_path;
mod limits;
mod metadata;
pub(crate) mod overlap;
mod peer_authentication;
pub mod plugin_config;
mod timestamp;
pub(crate) use timestamp::format_rfc3339;
mod validate;
mod write;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use serde_json::Value;

use crate::error::{Diagnostic, Diagnostics, ObjectRef};
use crate::model::{AuthorizationPolicy, PeerAuthentication, PolicySet};
use decode::Decoder;
use document::RawObject;
use field_path::FieldPath;

pub(crate) use peer_authentication::parse_strict_report_only;

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
/// Kinds of `security.istio.io` that meshauthz knows and does not read (skipped with a warning).
/// Any other kind in that group is a misspelling or something newer: an error.
const OTHER_SECURITY_KINDS: &[&str] = &["RequestAuthentication"];

/// Where objects come from, and so which namespace an object without one gets.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Origin<'a> {
    /// The user's files: kubectl's rule, the namespace the user names (`default` if none).
    User { default_namespace: &'a str },
    /// The plugin configuration: written by [`crate::plugin_config`], so every object is an
    /// AuthorizationPolicy or PeerAuthentication with its namespace; anything else is refused
    /// rather than interpreted a second time.
    PluginConfig,
}

impl Origin<'_> {
    fn default_namespace(&self) -> &str {
        match self {
            Origin::User { default_namespace } => default_namespace,
            Origin::PluginConfig => "",
        }
    }
}

/// Parses and validates `text` (YAML or JSON). On success returns the objects and the warnings;
/// on failure every error and warning found.
///
/// Each object is decoded into the typed model as soon as it is read and its JSON value dropped,
/// so memory stays proportional to the input (see `document.rs` for how a List is read item by
/// item).
pub fn load_str(text: &str, opts: &LoadOptions) -> Result<(PolicySet, Diagnostics), Diagnostics> {
    let mut loader = Loader::new(opts.into());
    document::read(text, &mut loader);
    warn_if_empty(loader.finish())
}

/// Like [`load_str`] for input that is already JSON: one object, an array of objects, or a
/// `kind: List`.
pub fn load_value(
    value: &serde_json::Value,
    opts: &LoadOptions,
) -> Result<(PolicySet, Diagnostics), Diagnostics> {
    let mut loader = Loader::new(opts.into());
    document::objects_of_document(1, value.clone(), &mut loader);
    warn_if_empty(loader.finish())
}

impl<'a> From<&'a LoadOptions> for Origin<'a> {
    fn from(opts: &'a LoadOptions) -> Self {
        Origin::User {
            default_namespace: &opts.default_namespace,
        }
    }
}

/// An input without a single policy is allowed (it means: allow everything, PERMISSIVE) but is
/// more often a wrong file or a filter that matched nothing.
fn warn_if_empty(
    result: Result<(PolicySet, Diagnostics), Diagnostics>,
) -> Result<(PolicySet, Diagnostics), Diagnostics> {
    result.map(|(set, mut diagnostics)| {
        if set.authorization_policies.is_empty() && set.peer_authentications.is_empty() {
            diagnostics.push(Diagnostic::warning(
                None,
                "",
                "no policies: the input holds no AuthorizationPolicy or PeerAuthentication (with none, everything is allowed and mTLS is PERMISSIVE)",
            ));
        }
        (set, diagnostics)
    })
}

/// One item of the `policies` of a plugin configuration, named `policies[i]` in messages (see
/// [`Origin::PluginConfig`]), handed to `loader` (made with [`Origin::PluginConfig`]).
pub(crate) fn load_plugin_config_policy(loader: &mut Loader<'_>, item: Value, origin: String) {
    match item {
        Value::Object(ref map) if !document::is_list(map) => loader.object(RawObject {
            origin,
            value: item,
        }),
        Value::Object(_) | Value::Array(_) => loader.diagnostics.push(Diagnostic::error(
            None,
            origin,
            "expected one AuthorizationPolicy or PeerAuthentication object: the plugin configuration carries the objects already flattened (`meshauthz plugin-config` writes it), not Lists",
        )),
        other => loader.diagnostics.push(Diagnostic::error(
            None,
            origin,
            format!(
                "expected an AuthorizationPolicy or PeerAuthentication object, found {}",
                decode::describe(&other)
            ),
        )),
    }
}

/// Writes `set` as the JSON objects [`load_plugin_config_policy`] reads back to `set`.
pub(crate) fn write_policy(set: &PolicySet, out: &mut impl FnMut(Value)) {
    write::policy_set(set, out);
}

/// Receives the objects as they are read: decodes and validates each at once, keeps the typed
/// result and the diagnostics, and remembers names to find duplicates.
pub(crate) struct Loader<'o> {
    origin: Origin<'o>,
    set: PolicySet,
    pub(crate) diagnostics: Vec<Diagnostic>,
    /// (kind, namespace, name) -> where it was first seen.
    seen: HashMap<ObjectRef, String>,
    /// Names added to `seen` since the checkpoint, if one is taken (to roll them back).
    seen_log: Option<Vec<ObjectRef>>,
    /// When checking what was written ([`Loader::expecting`]): each object is compared with the
    /// next expected one and dropped instead of kept.
    expect: Option<Expect<'o>>,
    /// CEL expressions compiled so far (validation compiles each distinct one once).
    cel: validate::CelChecked,
}

struct Expect<'o> {
    set: &'o PolicySet,
    authorization_policies: usize,
    peer_authentications: usize,
    all_equal: bool,
}

/// What [`Loader::rollback`] returns to.
pub(crate) struct Checkpoint {
    authorization_policies: usize,
    peer_authentications: usize,
    diagnostics: usize,
}

impl<'o> Loader<'o> {
    pub(crate) fn new(origin: Origin<'o>) -> Self {
        Loader {
            origin,
            set: PolicySet::default(),
            diagnostics: Vec::new(),
            seen: HashMap::new(),
            seen_log: None,
            expect: None,
            cel: validate::CelChecked::default(),
        }
    }

    /// A loader that compares every object with `set` (in the writer's order: the
    /// AuthorizationPolicies, then the PeerAuthentications) and keeps none: reading back what
    /// was written costs one object, not a second copy of the set.
    pub(crate) fn expecting(origin: Origin<'o>, set: &'o PolicySet) -> Self {
        let mut loader = Loader::new(origin);
        loader.expect = Some(Expect {
            set,
            authorization_policies: 0,
            peer_authentications: 0,
            all_equal: true,
        });
        loader
    }

    /// With [`Loader::expecting`]: whether every object read equals the expected one and all
    /// of them were read.
    pub(crate) fn matches_expected(&self) -> bool {
        self.expect.as_ref().is_some_and(|e| {
            e.all_equal
                && e.authorization_policies == e.set.authorization_policies.len()
                && e.peer_authentications == e.set.peer_authentications.len()
        })
    }

    pub(crate) fn object(&mut self, raw: RawObject) {
        load_object(
            raw,
            self.origin,
            &mut self.set,
            &mut self.diagnostics,
            &mut self.seen,
            self.seen_log.as_mut(),
            &self.cel,
        );
        if let Some(e) = &mut self.expect {
            if let Some(p) = self.set.authorization_policies.pop() {
                let expected = e.set.authorization_policies.get(e.authorization_policies);
                e.all_equal &= expected == Some(&p);
                e.authorization_policies += 1;
            }
            if let Some(p) = self.set.peer_authentications.pop() {
                let expected = e.set.peer_authentications.get(e.peer_authentications);
                e.all_equal &= expected == Some(&p);
                e.peer_authentications += 1;
            }
        }
    }

    /// Starts remembering what is loaded, so that it can be undone (a fast path that gives up).
    pub(crate) fn checkpoint(&mut self) -> Checkpoint {
        self.seen_log = Some(Vec::new());
        Checkpoint {
            authorization_policies: self.set.authorization_policies.len(),
            peer_authentications: self.set.peer_authentications.len(),
            diagnostics: self.diagnostics.len(),
        }
    }

    /// Forgets everything loaded since `checkpoint`.
    pub(crate) fn rollback(&mut self, checkpoint: Checkpoint) {
        self.set
            .authorization_policies
            .truncate(checkpoint.authorization_policies);
        self.set
            .peer_authentications
            .truncate(checkpoint.peer_authentications);
        self.diagnostics.truncate(checkpoint.diagnostics);
        for object in self.seen_log.take().unwrap_or_default() {
            self.seen.remove(&object);
        }
    }

    /// Stops remembering (what was loaded since the checkpoint stays).
    pub(crate) fn commit(&mut self) {
        self.seen_log = None;
    }

    pub(crate) fn finish(self) -> Result<(PolicySet, Diagnostics), Diagnostics> {
        let diagnostics = Diagnostics(self.diagnostics);
        if diagnostics.has_errors() {
            Err(diagnostics)
        } else {
            Ok((self.set, diagnostics))
        }
    }
}

/// One object: check kind and apiVersion, decode, validate, look for a duplicate.
fn load_object(
    raw: RawObject,
    opts: Origin<'_>,
    set: &mut PolicySet,
    diagnostics: &mut Vec<Diagnostic>,
    seen: &mut HashMap<ObjectRef, String>,
    seen_log: Option<&mut Vec<ObjectRef>>,
    cel: &validate::CelChecked,
) {
    let Value::Object(map) = &raw.value else {
        return;
    };
    let (name, namespace) = metadata::name_and_namespace(map, opts.default_namespace());
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
        let api_version = map.get("apiVersion").and_then(Value::as_str);
        if let Some(message) = unknown_kind_error(&kind, api_version) {
            diagnostics.push(Diagnostic::error(
                Some(object.clone()),
                "kind",
                format!("{message} ({})", raw.origin),
            ));
            return;
        }
        if let Origin::PluginConfig = opts {
            diagnostics.push(Diagnostic::error(
                Some(object.clone()),
                "kind",
                format!(
                    "{kind} ({}): the plugin configuration carries only AuthorizationPolicy and PeerAuthentication objects",
                    raw.origin
                ),
            ));
            return;
        }
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
        opts.default_namespace(),
        &raw.origin,
    );
    if meta.namespace.is_empty() {
        // Only in the plugin configuration: the user's input always has a default namespace.
        dec.error(
            &FieldPath::root().field("metadata").field("namespace"),
            format!(
                "Required value: every object in the plugin configuration names its namespace ({}); `meshauthz plugin-config` fills it in (--namespace, else `default`)",
                raw.origin
            ),
        );
    }
    let mut findings = validate::Findings::new(object.clone(), cel.clone());
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
            if let Some(log) = seen_log {
                log.push(object.clone());
            }
            seen.insert(object, raw.origin);
        }
    }
}

/// A kind that is not one meshauthz reads but looks like one (`AuthorisationPolicy`,
/// `authorizationpolicy`), or any unknown kind of `security.istio.io`: skipping it could make a
/// DENY policy vanish, so it is an error with a suggestion.
fn unknown_kind_error(kind: &str, api_version: Option<&str>) -> Option<String> {
    let known = [AUTHORIZATION_POLICY, PEER_AUTHENTICATION];
    if let Some(best) = decode::closest(kind, &known) {
        return Some(format!("unknown kind {kind:?}; did you mean {best:?}?"));
    }
    let group = api_version.and_then(|v| v.split_once('/')).map(|(g, _)| g);
    if group == Some("security.istio.io") && !OTHER_SECURITY_KINDS.contains(&kind) {
        let mut all = known.to_vec();
        all.extend_from_slice(OTHER_SECURITY_KINDS);
        return Some(match decode::closest(kind, &all) {
            Some(best) => format!(
                "unknown kind {kind:?} in group security.istio.io; did you mean {best:?}?"
            ),
            None => format!(
                "unknown kind {kind:?} in group security.istio.io; did you mean \"AuthorizationPolicy\" or \"PeerAuthentication\"?"
            ),
        });
    }
    None
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
