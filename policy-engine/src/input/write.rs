//! The typed objects back to Istio JSON, in the form the decoder reads: the writer half of the
//! plugin configuration (`crate::plugin_config`). Every field the model holds is written, and
//! nothing else, so that decoding what is written gives the same model (`decode(write(x)) == x`,
//! tested over every case file): `null` list entries stay `null`, an absent list stays absent,
//! `portLevelMtls` keys are decimal port numbers, `creationTimestamp` is RFC 3339 in UTC.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::timestamp::format_rfc3339;
use crate::model::{
    AuthorizationPolicy, Condition, MtlsMode, ObjectMeta, Operation, PeerAuthentication, PolicySet,
    PolicyTargetReference, Rule, Source, WorkloadSelector,
};

/// Every object of `set` as JSON, one at a time (the whole set as one JSON value would take
/// several times its memory): the AuthorizationPolicies, then the PeerAuthentications, each in
/// input order.
pub(crate) fn policy_set(set: &PolicySet, out: &mut impl FnMut(Value)) {
    for p in &set.authorization_policies {
        out(authorization_policy(p));
    }
    for p in &set.peer_authentications {
        out(peer_authentication(p));
    }
}

fn object(api_version: &str, kind: &str, meta: &ObjectMeta, spec: Map<String, Value>) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": metadata(meta),
        "spec": spec,
    })
}

fn metadata(meta: &ObjectMeta) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), meta.name.clone().into());
    m.insert("namespace".into(), meta.namespace.clone().into());
    if !meta.annotations.is_empty() {
        m.insert("annotations".into(), string_map(&meta.annotations));
    }
    if let Some(t) = meta.creation_timestamp {
        m.insert("creationTimestamp".into(), format_rfc3339(t).into());
    }
    Value::Object(m)
}

fn string_map(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn selector(s: &WorkloadSelector) -> Value {
    json!({ "matchLabels": string_map(&s.match_labels) })
}

fn target_ref(t: &PolicyTargetReference) -> Value {
    json!({ "group": t.group, "kind": t.kind, "name": t.name, "namespace": t.namespace })
}

/// A list whose entries may be `null` (kept, so that validation sees what the input had).
fn nullable_list<T>(items: &[Option<T>], item: impl Fn(&T) -> Value) -> Value {
    Value::Array(
        items
            .iter()
            .map(|i| i.as_ref().map_or(Value::Null, &item))
            .collect(),
    )
}

/// Inserts `name: [values]` unless the list is empty (absent and empty decode alike).
fn strings(m: &mut Map<String, Value>, name: &str, values: &[String]) {
    if !values.is_empty() {
        m.insert(name.into(), json!(values));
    }
}

fn authorization_policy(p: &AuthorizationPolicy) -> Value {
    let s = &p.spec;
    let mut spec = Map::new();
    if let Some(sel) = &s.selector {
        spec.insert("selector".into(), selector(sel));
    }
    if let Some(t) = &s.target_ref {
        spec.insert("targetRef".into(), target_ref(t));
    }
    if !s.target_refs.is_empty() {
        spec.insert(
            "targetRefs".into(),
            Value::Array(s.target_refs.iter().map(target_ref).collect()),
        );
    }
    if let Some(rules) = &s.rules {
        spec.insert("rules".into(), nullable_list(rules, rule));
    }
    spec.insert("action".into(), s.action.as_str().into());
    if let Some(name) = &s.provider {
        spec.insert("provider".into(), json!({ "name": name }));
    }
    object(&p.api_version, "AuthorizationPolicy", &p.meta, spec)
}

fn rule(r: &Rule) -> Value {
    let mut m = Map::new();
    if let Some(from) = &r.from {
        let from = nullable_list(from, |f| match &f.source {
            Some(s) => json!({ "source": source(s) }),
            None => json!({}),
        });
        m.insert("from".into(), from);
    }
    if let Some(to) = &r.to {
        let to = nullable_list(to, |t| match &t.operation {
            Some(o) => json!({ "operation": operation(o) }),
            None => json!({}),
        });
        m.insert("to".into(), to);
    }
    if let Some(when) = &r.when {
        m.insert("when".into(), nullable_list(when, condition));
    }
    Value::Object(m)
}

fn source(s: &Source) -> Value {
    let mut m = Map::new();
    strings(&mut m, "principals", &s.principals);
    strings(&mut m, "notPrincipals", &s.not_principals);
    strings(&mut m, "requestPrincipals", &s.request_principals);
    strings(&mut m, "notRequestPrincipals", &s.not_request_principals);
    strings(&mut m, "namespaces", &s.namespaces);
    strings(&mut m, "notNamespaces", &s.not_namespaces);
    strings(&mut m, "serviceAccounts", &s.service_accounts);
    strings(&mut m, "notServiceAccounts", &s.not_service_accounts);
    strings(&mut m, "trustDomains", &s.trust_domains);
    strings(&mut m, "notTrustDomains", &s.not_trust_domains);
    strings(&mut m, "ipBlocks", &s.ip_blocks);
    strings(&mut m, "notIpBlocks", &s.not_ip_blocks);
    strings(&mut m, "remoteIpBlocks", &s.remote_ip_blocks);
    strings(&mut m, "notRemoteIpBlocks", &s.not_remote_ip_blocks);
    Value::Object(m)
}

fn operation(o: &Operation) -> Value {
    let mut m = Map::new();
    strings(&mut m, "hosts", &o.hosts);
    strings(&mut m, "notHosts", &o.not_hosts);
    strings(&mut m, "ports", &o.ports);
    strings(&mut m, "notPorts", &o.not_ports);
    strings(&mut m, "methods", &o.methods);
    strings(&mut m, "notMethods", &o.not_methods);
    strings(&mut m, "paths", &o.paths);
    strings(&mut m, "notPaths", &o.not_paths);
    Value::Object(m)
}

fn condition(c: &Condition) -> Value {
    let mut m = Map::new();
    m.insert("key".into(), c.key.clone().into());
    strings(&mut m, "values", &c.values);
    strings(&mut m, "notValues", &c.not_values);
    Value::Object(m)
}

fn mtls(mode: MtlsMode) -> Value {
    json!({ "mode": mode.as_str() })
}

fn peer_authentication(p: &PeerAuthentication) -> Value {
    let s = &p.spec;
    let mut spec = Map::new();
    if let Some(sel) = &s.selector {
        spec.insert("selector".into(), selector(sel));
    }
    if let Some(mode) = s.mtls {
        spec.insert("mtls".into(), mtls(mode));
    }
    if let Some(ports) = &s.port_level_mtls {
        spec.insert(
            "portLevelMtls".into(),
            Value::Object(
                ports
                    .iter()
                    .map(|(port, mode)| (port.to_string(), mtls(*mode)))
                    .collect(),
            ),
        );
    }
    object(&p.api_version, "PeerAuthentication", &p.meta, spec)
}
