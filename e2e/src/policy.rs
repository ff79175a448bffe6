//! Istio objects (as users write them, YAML) to the module's plugin configuration JSON.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::Result;

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

/// The plugin configuration for workload `foo/app=echo` in trust domain `cluster.local`,
/// root namespace `istio-system`, plaintext filter chain named `plaintext`.
pub fn plugin_config(policies: Vec<Value>) -> Value {
    json!({
        "policies": policies,
        "workload": {"namespace": "foo", "labels": {"app": "echo"}},
        "rootNamespace": "istio-system",
        "trustDomain": "cluster.local",
        "plaintextFilterChains": ["plaintext"],
    })
}

/// [`plugin_config`] from YAML.
pub fn plugin_config_yaml(yaml: &str) -> Result<Value> {
    Ok(plugin_config(from_yaml(yaml)?))
}
