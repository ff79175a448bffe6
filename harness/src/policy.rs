//! Istio objects (as users write them, YAML) to the module's plugin configuration JSON, written
//! by the one writer the CLI uses (`policy_engine::PluginConfig::write`, behind
//! `meshauthz plugin-config`): the e2e suite never builds the configuration by hand.

use policy_engine::{load_str, LoadOptions, PluginConfig, PolicySet, Workload};
use serde::Deserialize;
use serde_json::Value;

use crate::{Error, Result};

/// Parse one or more YAML documents (separated by `---`) into JSON objects.
pub fn from_yaml(yaml: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The e2e workload's namespace: also the namespace of objects written without one, as with
/// `meshauthz plugin-config --namespace foo`.
pub const NAMESPACE: &str = "foo";

/// An ALLOW policy `foo/<name>` for the workload (`app: echo`) whose one rule allows the
/// `principals` (Istio's form, without `spiffe://`), on any port and request.
pub fn allow_principals(name: &str, principals: &[&str]) -> String {
    let list: Vec<String> = principals.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  selector: {{matchLabels: {{app: echo}}}}
  action: ALLOW
  rules:
  - from:
    - source: {{principals: [{}]}}
"#,
        list.join(", ")
    )
}

/// An AUDIT policy `foo/<name>` for the workload (`app: echo`) whose one rule marks requests to
/// `paths`.
pub fn audit_paths(name: &str, paths: &[&str]) -> String {
    let list: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  selector: {{matchLabels: {{app: echo}}}}
  action: AUDIT
  rules:
  - to:
    - operation: {{paths: [{}]}}
"#,
        list.join(", ")
    )
}

/// Adds `"enforce": "<mode>"` to the plugin configurations (`meshauthz_net`, and
/// `meshauthz_http` where the template has it) of a rendered HTTP server template, where they sit JSON-escaped inside
/// `value: "..."`: the chain a one-stage or native-enforce template is written for.
pub fn with_enforce(config: &str, mode: &str) -> Result<String> {
    let key = r#"\"httpPorts\":"#;
    // Twice in the HTTP templates (meshauthz_net, meshauthz_http), once where meshauthz_net is the
    // only Wasm filter (`server-http-conn.yaml`).
    let n = config.matches(key).count();
    if !(1..=2).contains(&n) {
        return Err(crate::Error(format!(
            "expected the plugin configuration once or twice (meshauthz_net, meshauthz_http) in the template, found {n}"
        )));
    }
    Ok(config.replace(key, &format!(r#"\"enforce\":\"{mode}\",\"httpPorts\":"#)))
}

/// The namespace-wide PeerAuthentication `<namespace>/default` with `mode` (`STRICT`,
/// `PERMISSIVE`, `DISABLE`).
pub fn peer_authentication(namespace: &str, mode: &str) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: {namespace}}}
spec:
  mtls: {{mode: {mode}}}
"#
    )
}

/// The plugin configuration for workload `foo/app=echo` in trust domain `cluster.local`, root
/// namespace `istio-system`, plaintext filter chain named `plaintext`, no HTTP port.
pub fn plugin_config_yaml(yaml: &str) -> Result<Value> {
    plugin_config_for(yaml, &[])
}

/// [`plugin_config_yaml`] with `httpPorts`.
///
/// A policy set the CLI refuses cannot be written (the writer validates); tests of the module's
/// refusal then get a configuration whose settings the writer wrote and whose `policies` are the
/// documents as given, so that the module's own decoder is what refuses them.
pub fn plugin_config_for(yaml: &str, http_ports: &[u16]) -> Result<Value> {
    let config = |policies: PolicySet| PluginConfig {
        workload: Some(Workload {
            namespace: NAMESPACE.to_string(),
            labels: [("app".to_string(), "echo".to_string())].into(),
        }),
        http_ports: http_ports.to_vec(),
        ..PluginConfig::new(policies)
    };
    let write = |c: PluginConfig| {
        c.write()
            .map_err(|d| Error(format!("the plugin configuration writer refused:\n{d}")))
    };
    let opts = LoadOptions {
        default_namespace: NAMESPACE.to_string(),
    };
    match load_str(yaml, &opts) {
        Ok((set, _warnings)) => write(config(set)),
        Err(_) => {
            let mut value = write(config(PolicySet::default()))?;
            let policies = Value::Array(from_yaml(yaml)?);
            match value.as_object_mut() {
                Some(obj) => {
                    obj.insert("policies".to_string(), policies);
                    Ok(value)
                }
                None => Err(Error(
                    "the plugin configuration writer gave no object".to_string(),
                )),
            }
        }
    }
}
