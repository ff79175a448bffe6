//! Projections of a golden: one field of one rule, on both sides.
//!
//! The goldens are written for the translation, not for the decision: most of their rules can
//! never match on the wire (a `*` in a not-list, JWT conditions, non-loopback IPs in the same
//! rule), which hides how each wildcard form is matched. A projection keeps one conjunct of one
//! rule:
//! - Envoy side: the RBAC matcher istiod generated for that field, taken verbatim from the golden
//!   (`permissions[0].andRules.rules[i]` or `principals[0].andIds.ids[i]`), with the entry of the
//!   presence value `*` removed (its index is the value's index; the removed entry is checked to
//!   be a presence matcher), in a policy shaped like istiod's single-field rules (`andRules: [X]`
//!   with principals `andIds: [any]`, or the reverse; see `allow-path-out.yaml`,
//!   `deny-and-allow-out1.yaml`);
//! - engine side: one ALLOW policy with that field and the same values, `*` removed.
//!
//! Nothing is translated by hand: the Envoy matchers are istiod's, only unwrapped.

use serde_json::{json, Value};

use super::golden::{builder_testdata, Chain, Golden};
use crate::{err, Error, Result};

/// Where a field sits in the generated policy.
#[derive(Clone, Copy, Debug)]
enum Side {
    /// `permissions[0].andRules.rules[i]`.
    Permission,
    /// `principals[0].andIds.ids[i]`.
    Principal,
}

/// One projection of `allow-full-rule` rule[1].
struct Spec {
    /// Name suffix.
    name: &'static str,
    side: Side,
    /// Index of the conjunct in the generated rule.
    index: usize,
    /// Build the rule from the kept values.
    rule: fn(Vec<String>) -> Value,
    /// Where the values are in the input rule (JSON pointer from the rule).
    values: &'static str,
}

const SOURCE: &str = "http/allow-full-rule";
const SOURCE_RULE: usize = 1;

fn specs() -> Vec<Spec> {
    vec![
        Spec {
            name: "hosts",
            side: Side::Permission,
            index: 0,
            values: "/to/0/operation/hosts",
            rule: |v| json!({"to": [{"operation": {"hosts": v}}]}),
        },
        Spec {
            name: "notHosts",
            side: Side::Permission,
            index: 1,
            values: "/to/0/operation/notHosts",
            rule: |v| json!({"to": [{"operation": {"notHosts": v}}]}),
        },
        Spec {
            name: "paths",
            side: Side::Permission,
            index: 4,
            values: "/to/0/operation/paths",
            rule: |v| json!({"to": [{"operation": {"paths": v}}]}),
        },
        Spec {
            name: "notPaths",
            side: Side::Permission,
            index: 5,
            values: "/to/0/operation/notPaths",
            rule: |v| json!({"to": [{"operation": {"notPaths": v}}]}),
        },
        Spec {
            name: "connection.sni",
            side: Side::Permission,
            index: 12,
            values: "/when/12/values",
            rule: |v| json!({"when": [{"key": "connection.sni", "values": v}]}),
        },
        Spec {
            name: "connection.sni-notValues",
            side: Side::Permission,
            index: 13,
            values: "/when/12/notValues",
            rule: |v| json!({"when": [{"key": "connection.sni", "notValues": v}]}),
        },
        Spec {
            name: "principals",
            side: Side::Principal,
            index: 0,
            values: "/from/0/source/principals",
            rule: |v| json!({"from": [{"source": {"principals": v}}]}),
        },
        Spec {
            name: "notPrincipals",
            side: Side::Principal,
            index: 1,
            values: "/from/0/source/notPrincipals",
            rule: |v| json!({"from": [{"source": {"notPrincipals": v}}]}),
        },
        Spec {
            name: "namespaces",
            side: Side::Principal,
            index: 4,
            values: "/from/0/source/namespaces",
            rule: |v| json!({"from": [{"source": {"namespaces": v}}]}),
        },
        Spec {
            name: "notNamespaces",
            side: Side::Principal,
            index: 5,
            values: "/from/0/source/notNamespaces",
            rule: |v| json!({"from": [{"source": {"notNamespaces": v}}]}),
        },
        Spec {
            name: "remoteIpBlocks",
            side: Side::Principal,
            index: 6,
            values: "/from/0/source/remoteIpBlocks",
            rule: |v| json!({"from": [{"source": {"remoteIpBlocks": v}}]}),
        },
        Spec {
            name: "notRemoteIpBlocks",
            side: Side::Principal,
            index: 7,
            values: "/from/0/source/notRemoteIpBlocks",
            rule: |v| json!({"from": [{"source": {"notRemoteIpBlocks": v}}]}),
        },
        Spec {
            name: "request.headers",
            side: Side::Principal,
            index: 10,
            values: "/when/0/values",
            rule: |v| json!({"when": [{"key": "request.headers[X-header]", "values": v}]}),
        },
        Spec {
            name: "request.headers-notValues",
            side: Side::Principal,
            index: 11,
            values: "/when/0/notValues",
            rule: |v| json!({"when": [{"key": "request.headers[X-header]", "notValues": v}]}),
        },
        Spec {
            name: "remote.ip",
            side: Side::Principal,
            index: 14,
            values: "/when/2/values",
            rule: |v| json!({"when": [{"key": "remote.ip", "values": v}]}),
        },
        Spec {
            name: "source.namespace",
            side: Side::Principal,
            index: 16,
            values: "/when/3/values",
            rule: |v| json!({"when": [{"key": "source.namespace", "values": v}]}),
        },
        Spec {
            name: "source.principal",
            side: Side::Principal,
            index: 18,
            values: "/when/4/values",
            rule: |v| json!({"when": [{"key": "source.principal", "values": v}]}),
        },
        Spec {
            name: "source.principal-notValues",
            side: Side::Principal,
            index: 19,
            values: "/when/4/notValues",
            rule: |v| json!({"when": [{"key": "source.principal", "notValues": v}]}),
        },
    ]
}

/// Is this matcher a presence test (`*`): `presentMatch: true`, the regex `.+`, or for namespaces
/// the regex `.*/ns/.*/.*`?
fn is_presence(m: &Value) -> bool {
    let s = m.to_string();
    s.contains("\"presentMatch\":true")
        || s.contains("\"regex\":\".+\"")
        || s.contains("\"regex\":\".*/ns/.*/.*\"")
}

/// The list of alternatives inside a conjunct (through a `notRule` / `notId`): `orRules.rules`
/// or `orIds.ids`.
fn alternatives(conjunct: &mut Value) -> Option<&mut Vec<Value>> {
    let negated = conjunct
        .as_object()
        .is_some_and(|m| m.contains_key("notRule") || m.contains_key("notId"));
    let inner = if negated {
        let m = conjunct.as_object_mut()?;
        if m.contains_key("notRule") {
            m.get_mut("notRule")?
        } else {
            m.get_mut("notId")?
        }
    } else {
        conjunct
    };
    let obj = inner.as_object_mut()?;
    if obj.contains_key("orRules") {
        obj.get_mut("orRules")?.get_mut("rules")?.as_array_mut()
    } else {
        obj.get_mut("orIds")?.get_mut("ids")?.as_array_mut()
    }
}

fn rbac_filter(policy_name: &str, side: Side, conjunct: Value) -> Value {
    let any_perm = json!([{"andRules": {"rules": [{"any": true}]}}]);
    let any_id = json!([{"andIds": {"ids": [{"any": true}]}}]);
    let (permissions, principals) = match side {
        Side::Permission => (json!([{"andRules": {"rules": [conjunct]}}]), any_id),
        Side::Principal => (any_perm, json!([{"andIds": {"ids": [conjunct]}}])),
    };
    json!({
        "name": "envoy.filters.http.rbac",
        "typedConfig": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"policies": {policy_name: {"permissions": permissions, "principals": principals}}},
            "shadowRulesStatPrefix": "istio_dry_run_allow_"
        }
    })
}

/// The projections of `allow-full-rule` rule[1], one per field, as goldens named
/// `http/allow-full-rule~<field>`.
pub fn projections() -> Result<Vec<Golden>> {
    let dir = builder_testdata()?.join("http");
    let read = |name: &str| -> Result<Value> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error(format!("{}: {e}", path.display())))?;
        crate::policy::from_yaml(&text)?
            .into_iter()
            .next()
            .ok_or_else(|| Error(format!("{}: empty", path.display())))
    };
    let input = read("allow-full-rule-in.yaml")?;
    let output = read("allow-full-rule-out.yaml")?;
    let ns = input
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = input
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(rule) = input.pointer(&format!("/spec/rules/{SOURCE_RULE}")) else {
        return err(format!("{SOURCE}: no rules[{SOURCE_RULE}]"));
    };
    let generated_name = format!("ns[{ns}]-policy[{name}]-rule[{SOURCE_RULE}]");
    let Some(generated) = output
        .get("typedConfig")
        .and_then(|t| t.get("rules"))
        .and_then(|r| r.get("policies"))
        .and_then(|p| p.get(&generated_name))
    else {
        return err(format!("{SOURCE}: no generated policy {generated_name}"));
    };
    let mut out = Vec::new();
    for spec in specs() {
        let what = format!(
            "{SOURCE} rules[{SOURCE_RULE}]{} / {}",
            spec.values, spec.name
        );
        let values: Vec<String> = rule
            .pointer(spec.values)
            .and_then(Value::as_array)
            .ok_or_else(|| Error(format!("{what}: no values")))?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        let pointer = match spec.side {
            Side::Permission => format!("/permissions/0/andRules/rules/{}", spec.index),
            Side::Principal => format!("/principals/0/andIds/ids/{}", spec.index),
        };
        let mut conjunct = generated
            .pointer(&pointer)
            .cloned()
            .ok_or_else(|| Error(format!("{what}: nothing at {pointer}")))?;
        let alts = alternatives(&mut conjunct)
            .ok_or_else(|| Error(format!("{what}: {pointer} is not a list of alternatives")))?;
        if alts.len() != values.len() {
            return err(format!(
                "{what}: {} values but {} generated alternatives at {pointer}",
                values.len(),
                alts.len()
            ));
        }
        let mut kept = values.clone();
        if let Some(star) = values.iter().position(|v| v == "*") {
            let removed = alts.remove(star);
            if !is_presence(&removed) {
                return err(format!(
                    "{what}: the alternative for '*' is not a presence test: {removed}"
                ));
            }
            kept.remove(star);
        }
        let policy_name = format!("diff-{}", spec.name.to_ascii_lowercase().replace('.', "-"));
        let input = json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": policy_name, "namespace": ns},
            "spec": {
                "selector": {"matchLabels": {"app": "httpbin", "version": "v1"}},
                "rules": [(spec.rule)(kept)]
            }
        });
        out.push(Golden {
            name: format!("{SOURCE}~{}", spec.name),
            chain: Chain::Http,
            input: input.to_string(),
            filters: vec![rbac_filter(
                &format!("ns[{ns}]-policy[{policy_name}]-rule[0]"),
                spec.side,
                conjunct,
            )],
            mesh: policy_engine::MeshConfig::default(),
        });
    }
    Ok(out)
}
