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
//! A whole `from` entry can be kept too (its `principals[k]`), when an earlier entry such as
//! `principals: ["*"]` hides it. Fields that are not HTTP-only also run on a TCP chain (the same
//! matchers in a network RBAC filter).
//!
//! Nothing is translated by hand: the Envoy matchers are istiod's, only unwrapped.

use serde_json::{json, Value};

use super::golden::{builder_testdata, Chain, Golden};
use meshauthz_harness::{err, Error, Result};

/// Where a field sits in the generated policy.
#[derive(Clone, Copy, Debug)]
enum Side {
    /// `permissions[0].andRules.rules[i]`.
    Permission,
    /// `principals[0].andIds.ids[i]`.
    Principal,
}

/// One projection.
struct Spec {
    /// Name suffix.
    name: &'static str,
    side: Side,
    /// Index of the conjunct in the generated rule; `None` keeps every conjunct of
    /// `principals[entry]` (a whole `from` entry).
    index: Option<usize>,
    /// Which `principals[entry]` (one per `from` entry) holds the conjunct.
    entry: usize,
    /// Also run it on a TCP chain (network RBAC): the field is not HTTP-only.
    tcp: bool,
    /// The policy's action: `ALLOW` (RBAC default), `DENY`, or `AUDIT` (RBAC `LOG`).
    action: &'static str,
    /// Build the rule from the kept values.
    rule: fn(Vec<String>) -> Value,
    /// Where the values are in the input rule (JSON pointer from the rule).
    values: &'static str,
}

/// The projections of other goldens, where a `*` or an always-true conjunct hides the rest.
fn other_specs() -> Vec<(&'static str, usize, Vec<Spec>)> {
    vec![
        (
            // from[0] is `principals: ["*"]`; from[1] exercises trust-domain aliases (bundle td1 +
            // foobar) and regex quoting of `[`/`]` in suffix principals.
            "simple-policy-principal-with-wildcard",
            0,
            vec![Spec {
                name: "from[1]",
                side: Side::Principal,
                index: None,
                entry: 1,
                tcp: true,
                action: "ALLOW",
                values: "/from/1/source/principals",
                rule: |v| json!({"from": [{"source": {"principals": v}}]}),
            }],
        ),
        (
            // `source.principal` values with aliases (new-td, old-td, some-trustdomain), without
            // the `*` and the `istio-system` namespace conjunct.
            "td-aliases-source-principal",
            0,
            vec![Spec {
                name: "source.principal",
                side: Side::Principal,
                index: Some(1),
                entry: 0,
                tcp: true,
                action: "ALLOW",
                values: "/when/0/values",
                rule: |v| json!({"when": [{"key": "source.principal", "values": v}]}),
            }],
        ),
    ]
}

/// `allow-full-rule` rule[1], one field at a time; a few again as DENY and AUDIT policies, so the
/// actions meet matchers that discriminate.
fn full_rule_specs() -> Vec<Spec> {
    vec![
        Spec {
            name: "hosts-AUDIT",
            side: Side::Permission,
            index: Some(0),
            entry: 0,
            tcp: false,
            action: "AUDIT",
            values: "/to/0/operation/hosts",
            rule: |v| json!({"to": [{"operation": {"hosts": v}}]}),
        },
        Spec {
            name: "paths-DENY",
            side: Side::Permission,
            index: Some(4),
            entry: 0,
            tcp: false,
            action: "DENY",
            values: "/to/0/operation/paths",
            rule: |v| json!({"to": [{"operation": {"paths": v}}]}),
        },
        Spec {
            name: "principals-DENY",
            side: Side::Principal,
            index: Some(0),
            entry: 0,
            tcp: true,
            action: "DENY",
            values: "/from/0/source/principals",
            rule: |v| json!({"from": [{"source": {"principals": v}}]}),
        },
        Spec {
            name: "namespaces-AUDIT",
            side: Side::Principal,
            index: Some(4),
            entry: 0,
            tcp: true,
            action: "AUDIT",
            values: "/from/0/source/namespaces",
            rule: |v| json!({"from": [{"source": {"namespaces": v}}]}),
        },
        Spec {
            name: "hosts",
            side: Side::Permission,
            index: Some(0),
            entry: 0,
            tcp: false,
            action: "ALLOW",
            values: "/to/0/operation/hosts",
            rule: |v| json!({"to": [{"operation": {"hosts": v}}]}),
        },
        Spec {
            name: "notHosts",
            side: Side::Permission,
            index: Some(1),
            entry: 0,
            tcp: false,
            action: "ALLOW",
            values: "/to/0/operation/notHosts",
            rule: |v| json!({"to": [{"operation": {"notHosts": v}}]}),
        },
        Spec {
            name: "paths",
            side: Side::Permission,
            index: Some(4),
            entry: 0,
            tcp: false,
            action: "ALLOW",
            values: "/to/0/operation/paths",
            rule: |v| json!({"to": [{"operation": {"paths": v}}]}),
        },
        Spec {
            name: "notPaths",
            side: Side::Permission,
            index: Some(5),
            entry: 0,
            tcp: false,
            action: "ALLOW",
            values: "/to/0/operation/notPaths",
            rule: |v| json!({"to": [{"operation": {"notPaths": v}}]}),
        },
        Spec {
            name: "connection.sni",
            side: Side::Permission,
            index: Some(12),
            entry: 0,
            tcp: true,
            action: "ALLOW",
            values: "/when/12/values",
            rule: |v| json!({"when": [{"key": "connection.sni", "values": v}]}),
        },
        Spec {
            name: "connection.sni-notValues",
            side: Side::Permission,
            index: Some(13),
            entry: 0,
            tcp: true,
            action: "ALLOW",
            values: "/when/12/notValues",
            rule: |v| json!({"when": [{"key": "connection.sni", "notValues": v}]}),
        },
        Spec {
            name: "principals",
            side: Side::Principal,
            index: Some(0),
            entry: 0,
            tcp: true,
            action: "ALLOW",
            values: "/from/0/source/principals",
            rule: |v| json!({"from": [{"source": {"principals": v}}]}),
        },
        Spec {
            name: "notPrincipals",
            side: Side::Principal,
            index: Some(1),
            entry: 0,
            tcp: true,
            action: "ALLOW",
            values: "/from/0/source/notPrincipals",
            rule: |v| json!({"from": [{"source": {"notPrincipals": v}}]}),
        },
        Spec {
            name: "namespaces",
            side: Side::Principal,
            index: Some(4),
            entry: 0,
            tcp: true,
            action: "ALLOW",
            values: "/from/0/source/namespaces",
            rule: |v| json!({"from": [{"source": {"namespaces": v}}]}),
        },
        Spec {
            name: "notNamespaces",
            side: Side::Principal,
            index: Some(5),
            entry: 0,
            tcp: true,
            action: "ALLOW",
            values: "/from/0/source/notNamespaces",
            rule: |v| json!({"from": [{"source": {"notNamespaces": v}}]}),
        },
        Spec {
            name: "remoteIpBlocks",
            side: Side::Principal,
            index: Some(6),
            entry: 0,
            tcp: false,
            action: "ALLOW",
            values: "/from/0/source/remoteIpBlocks",
            rule: |v| json!({"from": [{"source": {"remoteIpBlocks": v}}]}),
        },
        Spec {
            name: "notRemoteIpBlocks",
            side: Side::Principal,
            index: Some(7),
            entry: 0,
            tcp: false,
            action: "ALLOW",
            values: "/from/0/source/notRemoteIpBlocks",
            rule: |v| json!({"from": [{"source": {"notRemoteIpBlocks": v}}]}),
        },
        Spec {
            name: "request.headers",
            side: Side::Principal,
            index: Some(10),
            entry: 0,
            tcp: false,
            action: "ALLOW",
            values: "/when/0/values",
            rule: |v| json!({"when": [{"key": "request.headers[X-header]", "values": v}]}),
        },
        Spec {
            name: "request.headers-notValues",
            side: Side::Principal,
            index: Some(11),
            entry: 0,
            tcp: false,
            action: "ALLOW",
            values: "/when/0/notValues",
            rule: |v| json!({"when": [{"key": "request.headers[X-header]", "notValues": v}]}),
        },
        Spec {
            name: "remote.ip",
            side: Side::Principal,
            index: Some(14),
            entry: 0,
            tcp: false,
            action: "ALLOW",
            values: "/when/2/values",
            rule: |v| json!({"when": [{"key": "remote.ip", "values": v}]}),
        },
        Spec {
            name: "source.namespace",
            side: Side::Principal,
            index: Some(16),
            entry: 0,
            tcp: true,
            action: "ALLOW",
            values: "/when/3/values",
            rule: |v| json!({"when": [{"key": "source.namespace", "values": v}]}),
        },
        Spec {
            name: "source.principal",
            side: Side::Principal,
            index: Some(18),
            entry: 0,
            tcp: true,
            action: "ALLOW",
            values: "/when/4/values",
            rule: |v| json!({"when": [{"key": "source.principal", "values": v}]}),
        },
        Spec {
            name: "source.principal-notValues",
            side: Side::Principal,
            index: Some(19),
            entry: 0,
            tcp: true,
            action: "ALLOW",
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

fn rbac_filter(
    chain: Chain,
    action: &str,
    policy_name: &str,
    side: Side,
    conjuncts: Vec<Value>,
) -> Value {
    let any_perm = json!([{"andRules": {"rules": [{"any": true}]}}]);
    let any_id = json!([{"andIds": {"ids": [{"any": true}]}}]);
    let (permissions, principals) = match side {
        Side::Permission => (json!([{"andRules": {"rules": conjuncts}}]), any_id),
        Side::Principal => (any_perm, json!([{"andIds": {"ids": conjuncts}}])),
    };
    let mut rules =
        json!({"policies": {policy_name: {"permissions": permissions, "principals": principals}}});
    // istiod: `action: DENY` / `action: LOG` (AUDIT); ALLOW is the default and left out.
    let rbac_action = match action {
        "DENY" => Some("DENY"),
        "AUDIT" => Some("LOG"),
        _ => None,
    };
    if let (Some(a), Some(obj)) = (rbac_action, rules.as_object_mut()) {
        obj.insert("action".into(), json!(a));
    }
    match chain {
        Chain::Http => json!({
            "name": "envoy.filters.http.rbac",
            "typedConfig": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                "rules": rules,
                "shadowRulesStatPrefix": "istio_dry_run_allow_"
            }
        }),
        Chain::Tcp => json!({
            "name": "envoy.filters.network.rbac",
            "typedConfig": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                "rules": rules,
                "shadowRulesStatPrefix": "istio_dry_run_allow_",
                "statPrefix": "tcp."
            }
        }),
    }
}

fn read_first(dir: &std::path::Path, name: &str) -> Result<Value> {
    let path = dir.join(name);
    let text =
        std::fs::read_to_string(&path).map_err(|e| Error(format!("{}: {e}", path.display())))?;
    meshauthz_harness::policy::from_yaml(&text)?
        .into_iter()
        .next()
        .ok_or_else(|| Error(format!("{}: empty", path.display())))
}

/// The projections, as goldens named `http/<golden>~<field>` (and `tcp/...` for fields that are
/// not HTTP-only: the same matchers in a network RBAC filter).
pub fn projections() -> Result<Vec<Golden>> {
    let mut sources = vec![("allow-full-rule", 1, full_rule_specs())];
    sources.extend(other_specs());
    let mut out = Vec::new();
    for (base, rule_index, specs) in sources {
        out.extend(project(base, rule_index, specs)?);
    }
    Ok(out)
}

fn project(base: &str, rule_index: usize, specs: Vec<Spec>) -> Result<Vec<Golden>> {
    let dir = builder_testdata()?.join("http");
    let input = read_first(&dir, &format!("{base}-in.yaml"))?;
    let output = read_first(&dir, &format!("{base}-out.yaml"))?;
    // The golden's own mesh settings (trust-domain bundle).
    let mesh = super::golden::by_name(&format!("http/{base}"))?.mesh;
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
    let Some(rule) = input.pointer(&format!("/spec/rules/{rule_index}")) else {
        return err(format!("{base}: no rules[{rule_index}]"));
    };
    let generated_name = format!("ns[{ns}]-policy[{name}]-rule[{rule_index}]");
    let Some(generated) = output
        .get("typedConfig")
        .and_then(|t| t.get("rules"))
        .and_then(|r| r.get("policies"))
        .and_then(|p| p.get(&generated_name))
    else {
        return err(format!("{base}: no generated policy {generated_name}"));
    };
    let mut out = Vec::new();
    for spec in specs {
        let what = format!("{base} rules[{rule_index}]{} / {}", spec.values, spec.name);
        let values: Vec<String> = rule
            .pointer(spec.values)
            .and_then(Value::as_array)
            .ok_or_else(|| Error(format!("{what}: no values")))?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        let stars = values.iter().filter(|v| *v == "*").count();
        let kept: Vec<String> = values.iter().filter(|v| *v != "*").cloned().collect();
        let conjuncts = match (spec.side, spec.index) {
            (side, Some(i)) => {
                let pointer = match side {
                    Side::Permission => format!("/permissions/0/andRules/rules/{i}"),
                    Side::Principal => format!("/principals/{}/andIds/ids/{i}", spec.entry),
                };
                vec![strip_presence(
                    generated,
                    &pointer,
                    stars,
                    values.len(),
                    &what,
                )?]
            }
            (_, None) => {
                if stars > 0 {
                    return err(format!("{what}: a whole entry is kept only without '*'"));
                }
                let pointer = format!("/principals/{}/andIds/ids", spec.entry);
                generated
                    .pointer(&pointer)
                    .and_then(Value::as_array)
                    .cloned()
                    .ok_or_else(|| Error(format!("{what}: nothing at {pointer}")))?
            }
        };
        let policy_name = format!(
            "diff-{}",
            spec.name.to_ascii_lowercase().replace(['.', '[', ']'], "-")
        );
        let policy_name = policy_name.trim_end_matches('-').to_string();
        let input = json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": policy_name, "namespace": ns},
            "spec": {
                "selector": {"matchLabels": {"app": "httpbin", "version": "v1"}},
                "action": spec.action,
                "rules": [(spec.rule)(kept)]
            }
        });
        let chains: &[(Chain, &str)] = if spec.tcp {
            &[(Chain::Http, "http"), (Chain::Tcp, "tcp")]
        } else {
            &[(Chain::Http, "http")]
        };
        for (chain, dir) in chains {
            out.push(Golden {
                name: format!("{dir}/{base}~{}", spec.name),
                chain: *chain,
                input: input.to_string(),
                filters: vec![rbac_filter(
                    *chain,
                    spec.action,
                    &format!("ns[{ns}]-policy[{policy_name}]-rule[0]"),
                    spec.side,
                    conjuncts.clone(),
                )],
                mesh: mesh.clone(),
            });
        }
    }
    Ok(out)
}

/// The conjunct at `pointer` with its presence alternative (the one for `*`) removed: exactly
/// `stars` of them must be presence tests. Trust-domain aliases may add alternatives, so there are
/// at least as many as values.
fn strip_presence(
    generated: &Value,
    pointer: &str,
    stars: usize,
    values: usize,
    what: &str,
) -> Result<Value> {
    let mut conjunct = generated
        .pointer(pointer)
        .cloned()
        .ok_or_else(|| Error(format!("{what}: nothing at {pointer}")))?;
    let alts = alternatives(&mut conjunct)
        .ok_or_else(|| Error(format!("{what}: {pointer} is not a list of alternatives")))?;
    if alts.len() < values {
        return err(format!(
            "{what}: {values} values but only {} generated alternatives at {pointer}",
            alts.len()
        ));
    }
    let before = alts.len();
    alts.retain(|a| !is_presence(a));
    if before - alts.len() != stars {
        return err(format!(
            "{what}: {stars} '*' value(s) but {} presence alternative(s) at {pointer}",
            before - alts.len()
        ));
    }
    Ok(conjunct)
}
