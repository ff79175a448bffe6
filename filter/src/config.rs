//! The plugin configuration: one JSON document (Envoy `configuration` as a
//! `google.protobuf.StringValue`, or Istio `WasmPlugin.spec.pluginConfig`).
//!
//! ```json
//! {
//!   "policies": [ { "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", ... } ],
//!   "workload": { "namespace": "foo", "labels": { "app": "httpbin" } },
//!   "rootNamespace": "istio-system",
//!   "trustDomain": "cluster.local",
//!   "trustDomainAliases": [],
//!   "plaintextFilterChains": ["plaintext"],
//!   "httpPorts": [8080]
//! }
//! ```
//!
//! Only `policies` is required. Unknown keys are errors: in a security configuration a misspelt
//! key that is silently ignored changes what is enforced.

use std::collections::BTreeMap;

use policy_engine::{Engine, LoadOptions, MeshConfig, Workload};
use serde_json::Value;

/// The parsed document, before compilation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PluginConfig {
    /// The Istio objects (AuthorizationPolicy, PeerAuthentication), as JSON.
    pub policies: Vec<Value>,
    /// The workload; `None`: from Envoy node metadata (`NAMESPACE`, `LABELS`).
    pub workload: Option<Workload>,
    pub root_namespace: Option<String>,
    pub trust_domain: Option<String>,
    pub trust_domain_aliases: Vec<String>,
    /// Filter chains (`xds.filter_chain_name`) that carry plaintext traffic.
    pub plaintext_filter_chains: Vec<String>,
    /// Ports whose traffic is HTTP: authorized per request by `meshauthz_http`; the network filter
    /// only checks the transport (STRICT) on them. Every other port is authorized at L4.
    pub http_ports: Vec<u16>,
}

const KEYS: &[&str] = &[
    "policies",
    "workload",
    "rootNamespace",
    "trustDomain",
    "trustDomainAliases",
    "plaintextFilterChains",
    "httpPorts",
];

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string_list(v: &Value, path: &str, errors: &mut Vec<String>) -> Vec<String> {
    let Some(items) = v.as_array() else {
        errors.push(format!(
            "{path}: expected an array of strings, found {}",
            type_name(v)
        ));
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(s) if !s.is_empty() => out.push(s.to_string()),
            Some(_) => errors.push(format!("{path}[{i}]: expected a non-empty string")),
            None => errors.push(format!(
                "{path}[{i}]: expected a string, found {}",
                type_name(item)
            )),
        }
    }
    out
}

fn non_empty_string(v: &Value, path: &str, errors: &mut Vec<String>) -> Option<String> {
    match v.as_str() {
        Some(s) if !s.is_empty() => Some(s.to_string()),
        Some(_) => {
            errors.push(format!("{path}: expected a non-empty string"));
            None
        }
        None => {
            errors.push(format!("{path}: expected a string, found {}", type_name(v)));
            None
        }
    }
}

fn parse_workload(v: &Value, errors: &mut Vec<String>) -> Option<Workload> {
    let Some(obj) = v.as_object() else {
        errors.push(format!(
            "workload: expected an object {{\"namespace\": ..., \"labels\": {{...}}}}, found {}",
            type_name(v)
        ));
        return None;
    };
    let mut ok = true;
    for key in obj.keys() {
        if key != "namespace" && key != "labels" {
            errors.push(format!(
                "workload.{key}: unknown field (expected `namespace` or `labels`)"
            ));
            ok = false;
        }
    }
    let namespace = match obj.get("namespace") {
        Some(ns) => non_empty_string(ns, "workload.namespace", errors),
        None => {
            errors.push("workload.namespace: required when `workload` is given".to_string());
            None
        }
    };
    let mut labels = BTreeMap::new();
    match obj.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, val) in map {
                match val.as_str() {
                    Some(s) => {
                        labels.insert(k.clone(), s.to_string());
                    }
                    None => {
                        errors.push(format!(
                            "workload.labels.{k}: expected a string, found {}",
                            type_name(val)
                        ));
                        ok = false;
                    }
                }
            }
        }
        Some(other) => {
            errors.push(format!(
                "workload.labels: expected an object of strings, found {}",
                type_name(other)
            ));
            ok = false;
        }
    }
    let namespace = namespace?;
    ok.then_some(Workload { namespace, labels })
}

/// Parses the document. Every problem is reported, each naming its field path.
pub fn parse(bytes: &[u8]) -> Result<PluginConfig, Vec<String>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(vec![
            "the plugin configuration is empty: expected a JSON object with at least `policies` (use `{\"policies\": []}` for none)".to_string(),
        ]);
    }
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| vec![format!("the plugin configuration is not valid JSON: {e}")])?;
    let Some(obj) = doc.as_object() else {
        return Err(vec![format!(
            "the plugin configuration must be a JSON object, found {}",
            type_name(&doc)
        )]);
    };
    let mut errors = Vec::new();
    let mut cfg = PluginConfig {
        plaintext_filter_chains: vec!["plaintext".to_string()],
        ..PluginConfig::default()
    };
    for key in obj.keys() {
        if !KEYS.contains(&key.as_str()) {
            errors.push(format!(
                "{key}: unknown field (expected one of {})",
                KEYS.join(", ")
            ));
        }
    }
    match obj.get("policies") {
        Some(Value::Array(items)) => cfg.policies.clone_from(items),
        Some(other) => errors.push(format!(
            "policies: expected an array of Istio objects, found {}",
            type_name(other)
        )),
        None => errors.push(
            "policies: required (an array of Istio AuthorizationPolicy/PeerAuthentication objects; `[]` for none)".to_string(),
        ),
    }
    if let Some(w) = obj.get("workload") {
        cfg.workload = parse_workload(w, &mut errors);
    }
    if let Some(v) = obj.get("rootNamespace") {
        cfg.root_namespace = non_empty_string(v, "rootNamespace", &mut errors);
    }
    if let Some(v) = obj.get("trustDomain") {
        cfg.trust_domain = non_empty_string(v, "trustDomain", &mut errors);
    }
    if let Some(v) = obj.get("trustDomainAliases") {
        cfg.trust_domain_aliases = string_list(v, "trustDomainAliases", &mut errors);
    }
    if let Some(v) = obj.get("plaintextFilterChains") {
        cfg.plaintext_filter_chains = string_list(v, "plaintextFilterChains", &mut errors);
    }
    if let Some(v) = obj.get("httpPorts") {
        match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    match item.as_u64().and_then(|p| u16::try_from(p).ok()) {
                        Some(p) if p > 0 => cfg.http_ports.push(p),
                        _ => errors.push(format!(
                            "httpPorts[{i}]: expected a port number 1..65535, found {item}"
                        )),
                    }
                }
            }
            None => errors.push(format!(
                "httpPorts: expected an array of port numbers, found {}",
                type_name(v)
            )),
        }
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

/// What Envoy's node metadata says about the workload (Istio sidecars set `NAMESPACE` and
/// `LABELS`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeWorkload {
    pub namespace: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    /// `LABELS` is present but could not be read as a map of strings. Refused: guessing "no
    /// labels" would silently drop every policy with a selector.
    pub labels_unreadable: bool,
}

/// A compiled configuration: what the request path uses.
pub struct Compiled {
    pub authz: Box<dyn crate::traits::Authorizer>,
    pub plaintext_filter_chains: Vec<String>,
    pub http_ports: Vec<u16>,
    /// Ports that policies or PeerAuthentication name (for per-port plaintext metrics).
    pub named_ports: Vec<u16>,
    /// Warnings of loading/compiling (logged once).
    pub warnings: Vec<String>,
    /// The access-log labels of this configuration's rules, built on first use. They live and
    /// die with the configuration, so a label never outlives the rules it names.
    pub labels: crate::verdict::Labels,
}

fn named_ports(set: &policy_engine::PolicySet, engine: &Engine) -> Vec<u16> {
    let mut ports: Vec<u16> = engine.mtls().ports.keys().copied().collect();
    for ap in &set.authorization_policies {
        for rule in ap.spec.rules.iter().flatten().flatten() {
            for to in rule.to.iter().flatten().flatten() {
                if let Some(op) = &to.operation {
                    for p in op.ports.iter().chain(&op.not_ports) {
                        if let Ok(p) = p.parse::<u16>() {
                            ports.push(p);
                        }
                    }
                }
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Loads and compiles the policies for the workload. Errors are one line each.
pub fn compile(cfg: &PluginConfig, node: &NodeWorkload) -> Result<Compiled, Vec<String>> {
    let workload = match &cfg.workload {
        Some(w) => w.clone(),
        None if node.labels_unreadable => {
            return Err(vec![
                "workload: not set, and Envoy node metadata LABELS is not a map of strings: set `workload.labels`".to_string(),
            ])
        }
        None => match &node.namespace {
            Some(ns) if !ns.is_empty() => Workload {
                namespace: ns.clone(),
                labels: node.labels.clone().unwrap_or_default(),
            },
            _ => {
                return Err(vec![
                    "workload: not set, and Envoy node metadata has no NAMESPACE: set `workload.namespace` (and `workload.labels`)".to_string(),
                ])
            }
        },
    };
    let defaults = MeshConfig::default();
    let mesh = MeshConfig {
        root_namespace: cfg
            .root_namespace
            .clone()
            .unwrap_or(defaults.root_namespace),
        trust_domain: cfg.trust_domain.clone().unwrap_or(defaults.trust_domain),
        trust_domain_aliases: cfg.trust_domain_aliases.clone(),
    };
    let opts = LoadOptions {
        default_namespace: workload.namespace.clone(),
    };
    let to_lines = |d: policy_engine::Diagnostics| -> Vec<String> {
        let mut lines: Vec<String> = d.0.iter().map(|d| format!("policies: {d}")).collect();
        if lines.is_empty() {
            lines.push("policies: refused by the policy engine (no detail given)".to_string());
        }
        lines
    };
    let (set, load_warnings) =
        policy_engine::load_value(&Value::Array(cfg.policies.clone()), &opts).map_err(to_lines)?;
    let (engine, compile_warnings) = Engine::compile(&set, &workload, &mesh).map_err(to_lines)?;
    let warnings = load_warnings
        .0
        .iter()
        .chain(compile_warnings.0.iter())
        .map(|d| format!("policies: {d}"))
        .collect();
    let named_ports = named_ports(&set, &engine);
    Ok(Compiled {
        authz: Box::new(engine),
        plaintext_filter_chains: cfg.plaintext_filter_chains.clone(),
        http_ports: cfg.http_ports.clone(),
        named_ports,
        warnings,
        labels: crate::verdict::Labels::default(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn full_document() {
        let cfg = parse(
            br#"{"policies": [{"kind": "AuthorizationPolicy"}],
                 "workload": {"namespace": "foo", "labels": {"app": "httpbin"}},
                 "rootNamespace": "mesh-root", "trustDomain": "td", "trustDomainAliases": ["old"],
                 "plaintextFilterChains": ["pt", "pt2"], "httpPorts": [8080, 9090]}"#,
        )
        .unwrap();
        assert_eq!(cfg.policies.len(), 1);
        let w = cfg.workload.unwrap();
        assert_eq!(w.namespace, "foo");
        assert_eq!(w.labels.get("app").map(String::as_str), Some("httpbin"));
        assert_eq!(cfg.root_namespace.as_deref(), Some("mesh-root"));
        assert_eq!(cfg.trust_domain.as_deref(), Some("td"));
        assert_eq!(cfg.trust_domain_aliases, vec!["old"]);
        assert_eq!(cfg.plaintext_filter_chains, vec!["pt", "pt2"]);
        assert_eq!(cfg.http_ports, vec![8080, 9090]);
    }

    #[test]
    fn defaults() {
        let cfg = parse(br#"{"policies": []}"#).unwrap();
        assert!(cfg.policies.is_empty());
        assert_eq!(cfg.workload, None);
        assert_eq!(cfg.plaintext_filter_chains, vec!["plaintext"]);
        assert!(cfg.http_ports.is_empty());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let errs = parse(
            br#"{"policy": [], "workload": {"namespace": "", "labelz": {}},
                 "trustDomainAliases": ["a", 3], "httpPorts": [0, 70000, "80"]}"#,
        )
        .unwrap_err();
        let all = errs.join("\n");
        assert!(all.contains("policy: unknown field"), "{all}");
        assert!(all.contains("policies: required"), "{all}");
        assert!(all.contains("workload.labelz: unknown field"), "{all}");
        assert!(
            all.contains("workload.namespace: expected a non-empty string"),
            "{all}"
        );
        assert!(
            all.contains("trustDomainAliases[1]: expected a string, found a number"),
            "{all}"
        );
        assert!(all.contains("httpPorts[0]"), "{all}");
        assert!(all.contains("httpPorts[1]"), "{all}");
        assert!(all.contains("httpPorts[2]"), "{all}");
    }

    #[test]
    fn empty_and_non_json_are_refused() {
        assert!(parse(b"").is_err());
        assert!(parse(b"  \n").unwrap_err()[0].contains("empty"));
        assert!(parse(b"{policies: []}").unwrap_err()[0].contains("not valid JSON"));
        assert!(parse(b"[]").unwrap_err()[0].contains("must be a JSON object"));
        assert!(
            parse(br#"{"policies": {}}"#).unwrap_err()[0].contains("policies: expected an array")
        );
    }

    /// The full example of `filter/README.md` is accepted and means what the README says.
    #[test]
    fn readme_example_compiles() {
        let readme = include_str!("../README.md");
        let start = readme.find("```json\n").unwrap() + "```json\n".len();
        let end = start + readme[start..].find("```").unwrap();
        let cfg = parse(&readme.as_bytes()[start..end]).unwrap();
        let compiled = compile(&cfg, &NodeWorkload::default()).unwrap();
        assert_eq!(compiled.http_ports, vec![8080]);
        assert_eq!(
            compiled.authz.mtls_mode(8080),
            policy_engine::MtlsMode::Strict
        );
        assert_eq!(
            compiled.authz.mtls_mode(9000),
            policy_engine::MtlsMode::Permissive
        );
        assert!(compiled.named_ports.contains(&9000));
    }

    #[test]
    fn invalid_policies_are_refused_with_object_and_field() {
        let cfg = parse(
            br#"{"policies": [{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                 "metadata": {"name": "bad", "namespace": "foo"},
                 "spec": {"action": "ALLOW", "rules": [{"to": [{"operation": {"methods": ["GET"], "pathz": ["/"]}}]}]}}],
                 "workload": {"namespace": "foo"}}"#,
        )
        .unwrap();
        let errs = compile(&cfg, &NodeWorkload::default()).err().unwrap();
        let all = errs.join("\n");
        assert!(all.contains("foo/bad"), "{all}");
        assert!(all.contains("spec.rules[0].to[0].operation"), "{all}");
    }

    #[test]
    fn workload_comes_from_node_metadata_when_absent() {
        let cfg = parse(br#"{"policies": []}"#).unwrap();
        let err = compile(&cfg, &NodeWorkload::default()).err().unwrap();
        assert!(err[0].contains("node metadata has no NAMESPACE"), "{err:?}");
        // With node metadata, the sidecar's namespace and labels select the policies.
        let cfg = parse(
            br#"{"policies": [{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                 "metadata": {"name": "p", "namespace": "foo"},
                 "spec": {"selector": {"matchLabels": {"app": "echo"}}, "mtls": {"mode": "STRICT"}}}]}"#,
        )
        .unwrap();
        let node = NodeWorkload {
            namespace: Some("foo".to_string()),
            labels: Some([("app".to_string(), "echo".to_string())].into()),
            labels_unreadable: false,
        };
        let compiled = compile(&cfg, &node).unwrap();
        assert_eq!(
            compiled.authz.mtls_mode(80),
            policy_engine::MtlsMode::Strict
        );
        let other = NodeWorkload {
            namespace: Some("foo".to_string()),
            labels: Some([("app".to_string(), "other".to_string())].into()),
            labels_unreadable: false,
        };
        let compiled = compile(&cfg, &other).unwrap();
        assert_eq!(
            compiled.authz.mtls_mode(80),
            policy_engine::MtlsMode::Permissive
        );
        // Labels present but unreadable: refused rather than read as "no labels".
        let broken = NodeWorkload {
            namespace: Some("foo".to_string()),
            labels: None,
            labels_unreadable: true,
        };
        let err = compile(&cfg, &broken).err().unwrap();
        assert!(err[0].contains("LABELS is not a map of strings"), "{err:?}");
    }
}
