//! The plugin configuration: ONE type ([`PluginConfig`]), ONE decoder ([`decode`]) and ONE
//! writer ([`PluginConfig::write`]) for everything that hands policies to the module: the CLI
//! (`plugin-config`, `render`), the e2e suite, the sandbox, and the module itself
//! (`filter/src/config.rs`).
//!
//! ```json
//! {
//!   "policies": [ {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
//!                  "metadata": {"name": "deny-admin", "namespace": "foo"}, "spec": {...}} ],
//!   "workload": {"namespace": "foo", "labels": {"app": "echo"}},
//!   "rootNamespace": "istio-system",
//!   "trustDomain": "cluster.local",
//!   "trustDomainAliases": [],
//!   "plaintextFilterChains": ["plaintext"],
//!   "httpPorts": [8080],
//!   "enforce": "separate"
//! }
//! ```
//!
//! The policies are the *already validated, normalized* objects: the user's input is read once,
//! by [`crate::load_str`] (YAML merge keys resolved, Lists flattened, each object without a
//! namespace placed by kubectl's rule: the namespace the user names, else `default`), and the
//! writer emits exactly what the typed model holds. The decoder reads them with the same object
//! decoder and validation as the user's input, and refuses what the writer never emits (a List,
//! an object without `metadata.namespace`, another kind), so the module never re-interprets
//! anything. The JSON itself is read strictly: a duplicate key, an unknown key or a wrong type is
//! an error naming its field path. `decode(write(x)) == x` (tested over every case file), and
//! [`PluginConfig::write`] checks it before returning.

use std::collections::BTreeMap;

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::decode::{unknown_field_message, Decoder};
use super::document::StrictValue;
use super::field_path::FieldPath;
use super::{Loader, Origin};
use crate::error::{Diagnostic, Diagnostics};
use crate::model::PolicySet;
use crate::workload::{MeshConfig, Workload};

/// The plugin configuration, decoded. Defaults are filled in: what the module enforces is
/// exactly these values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginConfig {
    /// The AuthorizationPolicies and PeerAuthentications, validated, namespaces filled in.
    pub policies: PolicySet,
    /// The workload the policies are selected for; `None`: the module reads Envoy's node
    /// metadata (`NAMESPACE`, `LABELS`), as in an Istio `WasmPlugin`.
    pub workload: Option<Workload>,
    /// `rootNamespace`, `trustDomain`, `trustDomainAliases`.
    pub mesh: MeshConfig,
    /// Filter chains (`xds.filter_chain_name`) that carry plaintext: a STRICT port is reset there.
    pub plaintext_filter_chains: Vec<String>,
    /// Ports authorized per HTTP request; every other port is authorized at L4.
    pub http_ports: Vec<u16>,
    /// `enforce`: which stage answers a denial (the shape of the filter chain).
    pub enforce: EnforceMode,
}

/// `enforce`: the shape of the filter chain the configuration is written for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EnforceMode {
    /// `"separate"` (default): decide stage, RBAC LOG companion, enforce stage (needed when AUDIT
    /// policies apply: only Envoy's RBAC LOG filter can mark a request audited).
    #[default]
    Separate,
    /// `"decide"`: the decide stages answer denials themselves (one Wasm call per request); no
    /// companion, no enforce stage. The module refuses it when AUDIT policies apply.
    Decide,
    /// `"native"`: decide stage, RBAC LOG companion, then Envoy's own RBAC filter in DENY mode on
    /// the decision in filter state (templates `*-native.yaml`): one Wasm call per request with
    /// AUDIT policies too. The decide stage answers a denial itself when no AUDIT policy applies
    /// to the request; a denied, audited request is left to the native filter, after the
    /// companion has marked it.
    Native,
    /// `"connection"`: `meshauthz_net` decides each connection on an HTTP port with the HTTP
    /// semantics, once, and publishes the verdict in connection filter state
    /// (`wasm.meshauthz_conn_decision`); Envoy's RBAC filter in DENY mode answers `403` to every
    /// request of a connection without an `allow` verdict (template `server-http-conn.yaml`): no
    /// Wasm call per request. Only for policies that read no request attribute (principals,
    /// namespaces, ipBlocks, ports, SNI) and without AUDIT: the module refuses it otherwise.
    Connection,
}

impl EnforceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EnforceMode::Separate => "separate",
            EnforceMode::Decide => "decide",
            EnforceMode::Native => "native",
            EnforceMode::Connection => "connection",
        }
    }
}

/// The default of `plaintextFilterChains`: the chain name the Envoy templates use.
pub const DEFAULT_PLAINTEXT_FILTER_CHAIN: &str = "plaintext";

const KEYS: &[&str] = &[
    "policies",
    "workload",
    "rootNamespace",
    "trustDomain",
    "trustDomainAliases",
    "plaintextFilterChains",
    "httpPorts",
    "enforce",
];

impl PluginConfig {
    /// A configuration carrying `policies` with every other key at its default.
    pub fn new(policies: PolicySet) -> Self {
        PluginConfig {
            policies,
            workload: None,
            mesh: MeshConfig::default(),
            plaintext_filter_chains: vec![DEFAULT_PLAINTEXT_FILTER_CHAIN.to_string()],
            http_ports: Vec::new(),
            enforce: EnforceMode::Separate,
        }
    }

    /// The JSON document, every key written (defaults included). For large policy sets prefer
    /// [`PluginConfig::write_json`], which never holds the whole document as a `Value`.
    pub fn to_value(&self) -> Value {
        let mut m = self.settings();
        let mut policies = Vec::new();
        super::write_policy(&self.policies, &mut |p| policies.push(p));
        m.insert("policies".into(), Value::Array(policies));
        Value::Object(m)
    }

    /// Every key but `policies`.
    fn settings(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some(w) = &self.workload {
            let labels: Map<String, Value> = w
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let mut workload = Map::new();
            workload.insert("namespace".into(), w.namespace.clone().into());
            workload.insert("labels".into(), Value::Object(labels));
            m.insert("workload".into(), Value::Object(workload));
        }
        m.insert(
            "rootNamespace".into(),
            self.mesh.root_namespace.clone().into(),
        );
        m.insert("trustDomain".into(), self.mesh.trust_domain.clone().into());
        m.insert(
            "trustDomainAliases".into(),
            strings(&self.mesh.trust_domain_aliases),
        );
        m.insert(
            "plaintextFilterChains".into(),
            strings(&self.plaintext_filter_chains),
        );
        m.insert(
            "httpPorts".into(),
            Value::Array(self.http_ports.iter().map(|p| Value::from(*p)).collect()),
        );
        // Only when not the default: documents written before the key existed stay identical.
        if self.enforce != EnforceMode::Separate {
            m.insert("enforce".into(), self.enforce.as_str().into());
        }
        m
    }

    /// The JSON text of [`PluginConfig::to_value`] (the same bytes), written one policy at a
    /// time: memory is the text and one policy's `Value`, not a `Value` of the whole document
    /// (several times the text).
    fn to_json_text(&self) -> String {
        let mut settings = self.settings();
        // The placeholder keeps the keys in the order `to_value` writes them.
        settings.insert("policies".into(), Value::Null);
        let mut out = String::from("{");
        for (i, (key, value)) in settings.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&Value::String(key.clone()).to_string());
            out.push(':');
            if key == "policies" {
                out.push('[');
                let mut first = true;
                super::write_policy(&self.policies, &mut |p| {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    out.push_str(&p.to_string());
                });
                out.push(']');
            } else {
                out.push_str(&value.to_string());
            }
        }
        out.push('}');
        out
    }

    /// The writer: the JSON document, after checking that [`decode`] reads it back to exactly
    /// `self` without an error. So nothing is ever written that the module would refuse (an
    /// empty trust domain, a policy that does not validate) or read differently.
    pub fn write(&self) -> Result<Value, Diagnostics> {
        self.write_json()?;
        Ok(self.to_value())
    }

    /// [`PluginConfig::write`] as JSON text (compact; what the CLI prints), with a memory cost
    /// proportional to the text.
    pub fn write_json(&self) -> Result<String, Diagnostics> {
        let text = self.to_json_text();
        // The policies are compared one by one as they are read, not decoded into a copy.
        let loader = Loader::expecting(Origin::PluginConfig, &self.policies);
        let ((back, _warnings), policies_match) = decode_with(text.as_bytes(), loader)?;
        let PluginConfig {
            policies: _,
            workload,
            mesh,
            plaintext_filter_chains,
            http_ports,
            enforce,
        } = &back;
        let settings_match = *workload == self.workload
            && *mesh == self.mesh
            && *plaintext_filter_chains == self.plaintext_filter_chains
            && *http_ports == self.http_ports
            && *enforce == self.enforce;
        if !(policies_match && settings_match) {
            return Err(Diagnostics(vec![Diagnostic::error(
                None,
                "",
                "internal error: the plugin configuration does not read back as written; please report this",
            )]));
        }
        Ok(text)
    }
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::String(s.clone())).collect())
}

/// The decoder: the JSON document (UTF-8) to the typed configuration, with the policies' warnings;
/// or every problem found, each with its field path.
///
/// The same guards as the user's input: nesting deeper than the loader's limit is refused before
/// parsing, and each policy is decoded as soon as it is read (the document is never held as one
/// `Value`).
pub fn decode(bytes: &[u8]) -> Result<(PluginConfig, Diagnostics), Diagnostics> {
    decode_with(bytes, Loader::new(Origin::PluginConfig)).map(|(cfg, _)| cfg)
}

/// [`decode`] with the policies going to `loader`; also whether they matched what `loader`
/// expected (see [`Loader::expecting`]).
fn decode_with(
    bytes: &[u8],
    mut loader: Loader<'_>,
) -> Result<((PluginConfig, Diagnostics), bool), Diagnostics> {
    let fail = |message: String| Err(Diagnostics(vec![Diagnostic::error(None, "", message)]));
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return fail(
            "the plugin configuration is empty: expected a JSON object with at least `policies` (`{\"policies\": []}` for none)".to_string(),
        );
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return fail("the plugin configuration is not UTF-8 text".to_string());
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Err(e) = super::limits::check_depth(text) {
        return fail(format!("the plugin configuration is not valid JSON: {e}"));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let top = match TopLevel(&mut loader)
        .deserialize(&mut de)
        .and_then(|top| de.end().map(|()| top))
    {
        Ok(top) => top,
        Err(e) => return fail(format!("the plugin configuration is not valid JSON: {e}")),
    };
    match top {
        Top::Object { settings, policies } => {
            let matched = loader.matches_expected();
            decode_settings(&settings, policies, loader).map(|cfg| (cfg, matched))
        }
        Top::Other(value) => fail(format!(
            "the plugin configuration must be a JSON object, found {}",
            super::decode::describe(&value)
        )),
    }
}

/// The document's top level as read: the settings as values, the policies already handed to the
/// loader.
enum Top {
    Object {
        settings: Map<String, Value>,
        policies: Option<Policies>,
    },
    Other(Value),
}

enum Policies {
    /// A list: its items went to the loader.
    Loaded,
    /// Anything else (an error).
    Other(Value),
}

struct TopLevel<'l, 'o>(&'l mut Loader<'o>);
struct PoliciesSeed<'l, 'o>(&'l mut Loader<'o>);

/// A visitor that reads values as [`StrictValue`] does, except maps (`TopLevel`) or lists
/// (`PoliciesSeed`).
macro_rules! strict_scalars {
    ($out:expr) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            StrictValue.visit_bool(v).map($out)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            StrictValue.visit_i64(v).map($out)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            StrictValue.visit_u64(v).map($out)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            StrictValue.visit_f64(v).map($out)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            StrictValue.visit_str(v).map($out)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            StrictValue.visit_unit().map($out)
        }
    };
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_, '_> {
    type Value = Top;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Top, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_, '_> {
    type Value = Top;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    strict_scalars!(Top::Other);
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Top, A::Error> {
        StrictValue.visit_seq(seq).map(Top::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let mut settings = Map::new();
        let mut policies = None;
        while let Some(key) = map.next_key::<String>()? {
            if settings.contains_key(&key) || (key == "policies" && policies.is_some()) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            if key == "policies" {
                policies = Some(map.next_value_seed(PoliciesSeed(&mut *self.0))?);
            } else {
                let value = map.next_value_seed(StrictValue)?;
                settings.insert(key, value);
            }
        }
        Ok(Top::Object { settings, policies })
    }
}

impl<'de> DeserializeSeed<'de> for PoliciesSeed<'_, '_> {
    type Value = Policies;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Policies, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PoliciesSeed<'_, '_> {
    type Value = Policies;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of policies")
    }
    strict_scalars!(Policies::Other);
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Policies, A::Error> {
        StrictValue.visit_map(map).map(Policies::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Policies, A::Error> {
        let mut i = 0;
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            super::load_plugin_config_policy(self.0, item, format!("policies[{i}]"));
            i += 1;
        }
        Ok(Policies::Loaded)
    }
}

fn decode_settings(
    map: &Map<String, Value>,
    policies: Option<Policies>,
    loader: Loader<'_>,
) -> Result<(PluginConfig, Diagnostics), Diagnostics> {
    let mut dec = Decoder::new(None);
    let root = FieldPath::root();
    for name in map.keys() {
        if !KEYS.contains(&name.as_str()) {
            dec.report(&root.field(name), unknown_field_message(name, KEYS));
        }
    }
    let mut cfg = PluginConfig::new(PolicySet::default());
    let mut diagnostics = Diagnostics::default();

    let policies_path = root.field("policies");
    match policies {
        Some(Policies::Loaded) => match loader.finish() {
            Ok((set, warnings)) => {
                cfg.policies = set;
                diagnostics.extend(warnings);
            }
            Err(errors) => diagnostics.extend(errors),
        },
        Some(Policies::Other(other)) => dec.error(
            &policies_path,
            format!(
                "expected a list of AuthorizationPolicy/PeerAuthentication objects, found {}",
                super::decode::describe(&other)
            ),
        ),
        None => dec.error(
            &policies_path,
            "Required value: a list of AuthorizationPolicy/PeerAuthentication objects (`[]` for none)",
        ),
    }
    if let Some(w) = map.get("workload") {
        cfg.workload = workload(&mut dec, w, &root.field("workload"));
    }
    if let Some(v) = map.get("rootNamespace") {
        if let Some(s) = non_empty(&mut dec, v, &root.field("rootNamespace")) {
            cfg.mesh.root_namespace = s;
        }
    }
    if let Some(v) = map.get("trustDomain") {
        if let Some(s) = non_empty(&mut dec, v, &root.field("trustDomain")) {
            cfg.mesh.trust_domain = s;
        }
    }
    if let Some(v) = map.get("trustDomainAliases") {
        cfg.mesh.trust_domain_aliases =
            non_empty_list(&mut dec, v, &root.field("trustDomainAliases"));
    }
    if let Some(v) = map.get("plaintextFilterChains") {
        cfg.plaintext_filter_chains =
            non_empty_list(&mut dec, v, &root.field("plaintextFilterChains"));
    }
    if let Some(v) = map.get("httpPorts") {
        cfg.http_ports = ports(&mut dec, v, &root.field("httpPorts"));
    }
    if let Some(v) = map.get("enforce") {
        let path = root.field("enforce");
        match dec.string(v, &path).as_deref() {
            Some("separate") => cfg.enforce = EnforceMode::Separate,
            Some("decide") => cfg.enforce = EnforceMode::Decide,
            Some("native") => cfg.enforce = EnforceMode::Native,
            Some("connection") => cfg.enforce = EnforceMode::Connection,
            Some(other) => dec.error(
                &path,
                format!(
                    "expected \"separate\", \"decide\", \"native\" or \"connection\", found {other:?}"
                ),
            ),
            None => {}
        }
    }

    let mut all = Diagnostics(std::mem::take(&mut dec.diagnostics));
    all.extend(diagnostics);
    if all.has_errors() {
        Err(all)
    } else {
        Ok((cfg, all))
    }
}

fn non_empty(dec: &mut Decoder, value: &Value, path: &FieldPath) -> Option<String> {
    match dec.string(value, path)? {
        s if s.is_empty() => {
            dec.error(path, "expected a non-empty string");
            None
        }
        s => Some(s),
    }
}

fn non_empty_list(dec: &mut Decoder, value: &Value, path: &FieldPath) -> Vec<String> {
    let Value::Array(items) = value else {
        dec.error(
            path,
            format!(
                "expected a list of strings, found {}",
                super::decode::describe(value)
            ),
        );
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| non_empty(dec, item, &path.index(i)))
        .collect()
}

fn ports(dec: &mut Decoder, value: &Value, path: &FieldPath) -> Vec<u16> {
    let Value::Array(items) = value else {
        dec.error(
            path,
            format!(
                "expected a list of port numbers, found {}",
                super::decode::describe(value)
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_u64().and_then(|p| u16::try_from(p).ok()) {
            Some(p) if p > 0 => out.push(p),
            _ => dec.error(
                &path.index(i),
                format!(
                    "expected a port number 1..65535, found {}",
                    super::decode::describe(item)
                ),
            ),
        }
    }
    out
}

fn workload(dec: &mut Decoder, value: &Value, path: &FieldPath) -> Option<Workload> {
    let map = dec.object(value, path, &["namespace", "labels"])?;
    let ns_path = path.field("namespace");
    let namespace = match map.get("namespace") {
        Some(v) => non_empty(dec, v, &ns_path),
        None => {
            dec.error(
                &ns_path,
                "Required value: the workload's namespace (or leave `workload` out to read Envoy's node metadata)",
            );
            None
        }
    };
    let labels_path = path.field("labels");
    let labels: BTreeMap<String, String> = match map.get("labels") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(v @ Value::Object(_)) => dec.string_map(Some(v), &labels_path),
        Some(other) => {
            dec.error(
                &labels_path,
                format!(
                    "expected a map of strings, found {}",
                    super::decode::describe(other)
                ),
            );
            return None;
        }
    };
    Some(Workload {
        namespace: namespace?,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{Action, MtlsMode};

    fn errors(doc: &str) -> String {
        match decode(doc.as_bytes()) {
            Ok((c, w)) => panic!("expected errors, decoded {c:?} ({w})"),
            Err(d) => d.to_string(),
        }
    }

    const DENY_ADMIN: &str = r#"{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-admin", "namespace": "foo"},
        "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}}"#;

    #[test]
    fn a_full_document_decodes_and_writes_back() {
        let doc = format!(
            r#"{{"policies": [{DENY_ADMIN},
                 {{"apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
                  "metadata": {{"name": "p", "namespace": "foo", "creationTimestamp": "2024-05-01T12:00:00.25Z"}},
                  "spec": {{"selector": {{"matchLabels": {{"app": "echo"}}}}, "mtls": {{"mode": "STRICT"}},
                           "portLevelMtls": {{"9000": {{"mode": "PERMISSIVE"}}, "9001": {{}}}}}}}}],
                "workload": {{"namespace": "foo", "labels": {{"app": "echo"}}}},
                "rootNamespace": "mesh-root", "trustDomain": "td", "trustDomainAliases": ["old"],
                "plaintextFilterChains": ["pt", "pt2"], "httpPorts": [8080, 9090]}}"#
        );
        let (cfg, warnings) = decode(doc.as_bytes()).unwrap();
        // The policies' warnings travel with the configuration.
        assert!(
            warnings
                .to_string()
                .contains("deny all traffic to TCP ports"),
            "{warnings}"
        );
        assert_eq!(
            cfg.policies.authorization_policies[0].spec.action,
            Action::Deny
        );
        let pa = &cfg.policies.peer_authentications[0];
        assert_eq!(pa.spec.mtls, Some(MtlsMode::Strict));
        assert_eq!(
            pa.spec
                .port_level_mtls
                .clone()
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            [(9000, MtlsMode::Permissive), (9001, MtlsMode::Unset)]
        );
        assert_eq!(cfg.workload.as_ref().unwrap().namespace, "foo");
        assert_eq!(cfg.mesh.root_namespace, "mesh-root");
        assert_eq!(cfg.mesh.trust_domain, "td");
        assert_eq!(cfg.mesh.trust_domain_aliases, ["old"]);
        assert_eq!(cfg.plaintext_filter_chains, ["pt", "pt2"]);
        assert_eq!(cfg.http_ports, [8080, 9090]);
        // decode(write(x)) == x
        let written = cfg.write().unwrap().to_string();
        assert_eq!(decode(written.as_bytes()).unwrap().0, cfg);
        // The text writer (one policy at a time) writes the same bytes.
        assert_eq!(cfg.write_json().unwrap(), written);
    }

    #[test]
    fn enforce_mode_decodes_writes_back_and_refuses_other_values() {
        let (cfg, _) = decode(br#"{"policies": [], "enforce": "decide"}"#).unwrap();
        assert_eq!(cfg.enforce, EnforceMode::Decide);
        let written = cfg.write().unwrap();
        assert_eq!(written["enforce"], json!("decide"));
        assert_eq!(decode(written.to_string().as_bytes()).unwrap().0, cfg);
        let (cfg, _) = decode(br#"{"policies": [], "enforce": "native"}"#).unwrap();
        assert_eq!(cfg.enforce, EnforceMode::Native);
        assert_eq!(
            decode(cfg.write().unwrap().to_string().as_bytes())
                .unwrap()
                .0,
            cfg
        );
        let (cfg, _) = decode(br#"{"policies": [], "enforce": "connection"}"#).unwrap();
        assert_eq!(cfg.enforce, EnforceMode::Connection);
        assert_eq!(
            decode(cfg.write().unwrap().to_string().as_bytes())
                .unwrap()
                .0,
            cfg
        );
        let (cfg, _) = decode(br#"{"policies": [], "enforce": "separate"}"#).unwrap();
        assert_eq!(cfg.enforce, EnforceMode::Separate);
        let e = errors(r#"{"policies": [], "enforce": "inline"}"#);
        assert!(
            e.contains(
                "enforce: expected \"separate\", \"decide\", \"native\" or \"connection\", found \"inline\""
            ),
            "{e}"
        );
        assert!(
            errors(r#"{"policies": [], "enforce": true}"#).contains("enforce: expected a string")
        );
    }

    #[test]
    fn defaults() {
        let (cfg, _) = decode(br#"{"policies": []}"#).unwrap();
        assert_eq!(cfg, PluginConfig::new(PolicySet::default()));
        assert_eq!(cfg.plaintext_filter_chains, ["plaintext"]);
        assert_eq!(cfg.mesh, MeshConfig::default());
        assert_eq!(
            cfg.to_value(),
            json!({"policies": [], "rootNamespace": "istio-system", "trustDomain": "cluster.local",
                   "trustDomainAliases": [], "plaintextFilterChains": ["plaintext"], "httpPorts": []})
        );
    }

    #[test]
    fn duplicate_keys_are_refused_anywhere() {
        let e = errors(
            r#"{"policies": [{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": "x", "namespace": "foo"},
                "spec": {"action": "DENY", "action": "ALLOW"}}]}"#,
        );
        assert!(e.contains("duplicate key \"action\""), "{e}");
        let e = errors(r#"{"policies": [], "httpPorts": [1], "httpPorts": [2]}"#);
        assert!(e.contains("duplicate key \"httpPorts\""), "{e}");
    }

    #[test]
    fn unknown_keys_and_type_errors_name_their_field_path() {
        let e = errors(
            r#"{"policies": [], "trustDomian": "td", "workload": {"namespace": "", "labelz": {}},
                "trustDomainAliases": ["a", 3], "httpPorts": [0, 70000, "80"],
                "plaintextFilterChains": "plaintext", "rootNamespace": ""}"#,
        );
        for want in [
            "trustDomian: unknown field \"trustDomian\"; did you mean \"trustDomain\"?",
            "workload.labelz: unknown field \"labelz\"; did you mean \"labels\"?",
            "workload.namespace: expected a non-empty string",
            "trustDomainAliases[1]: expected a string, found number 3",
            "httpPorts[0]: expected a port number 1..65535, found number 0",
            "httpPorts[1]: expected a port number 1..65535, found number 70000",
            "httpPorts[2]: expected a port number 1..65535, found string \"80\"",
            "plaintextFilterChains: expected a list of strings, found string",
            "rootNamespace: expected a non-empty string",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
        assert!(errors(r#"{"policy": []}"#).contains("policies: Required value"));
        assert!(errors("").contains("empty"));
        assert!(errors("{policies: []}").contains("not valid JSON"));
        assert!(errors("[]").contains("must be a JSON object"));
        assert!(errors(r#"{"policies": {}}"#).contains("policies: expected a list"));
    }

    #[test]
    fn policies_are_read_by_the_same_loader_and_must_be_normalized() {
        // The same validation as the CLI's input.
        let e = errors(
            r#"{"policies": [{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": "x", "namespace": "foo"},
                "spec": {"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}}]}"#,
        );
        assert!(
            e.contains("AuthorizationPolicy foo/x: spec.rules[0].to[0].operation.ports[0]: bad port (http)"),
            "{e}"
        );
        // No namespace: refused, never placed by a second rule.
        let e = errors(
            r#"{"policies": [{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": "x"}, "spec": {"action": "DENY"}}],
                "workload": {"namespace": "foo"}}"#,
        );
        assert!(
            e.contains("metadata.namespace: Required value: every object in the plugin configuration names its namespace (policies[0])"),
            "{e}"
        );
        // Lists and other kinds are the writer's business, not the module's.
        let list = format!(
            r#"{{"policies": [{{"apiVersion": "v1", "kind": "List", "items": [{DENY_ADMIN}]}}]}}"#
        );
        assert!(errors(&list).contains(
            "policies[0]: expected one AuthorizationPolicy or PeerAuthentication object"
        ));
        let other = r#"{"policies": [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "foo"}}]}"#;
        assert!(errors(other).contains(
            "the plugin configuration carries only AuthorizationPolicy and PeerAuthentication"
        ));
        // A literal merge key is an unknown field.
        let merge = r#"{"policies": [{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "x", "namespace": "foo"}, "spec": {"<<": {"action": "DENY"}}}]}"#;
        assert!(
            errors(merge).contains("spec.<<: unknown field \"<<\""),
            "{}",
            errors(merge)
        );
        // Port keys: only what the writer emits.
        let port = |key: &str| {
            format!(
                r#"{{"policies": [{{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                "metadata": {{"name": "p", "namespace": "foo"}},
                "spec": {{"selector": {{"matchLabels": {{"app": "a"}}}}, "portLevelMtls": {{"{key}": {{"mode": "DISABLE"}}}}}}}}]}}"#
            )
        };
        assert!(decode(port("8081").as_bytes()).is_ok());
        assert!(errors(&port("08081")).contains("is ambiguous"));
        assert!(errors(&port("0x1F92")).contains("type conversion error"));
    }

    #[test]
    fn the_writer_refuses_what_the_module_would_refuse() {
        let mut cfg = PluginConfig::new(PolicySet::default());
        cfg.mesh.trust_domain = String::new();
        let e = cfg.write().unwrap_err().to_string();
        assert!(
            e.contains("trustDomain: expected a non-empty string"),
            "{e}"
        );
        let mut cfg = PluginConfig::new(PolicySet::default());
        cfg.workload = Some(Workload::default());
        assert!(cfg
            .write()
            .unwrap_err()
            .to_string()
            .contains("workload.namespace"));
    }
}
