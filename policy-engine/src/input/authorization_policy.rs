//! Decoding `AuthorizationPolicy.spec` (`security.istio.io/v1`, `v1beta1`): one function per
//! message of the proto, field names as in the CRD. Rules are checked in `validate/`.

use serde_json::Value;

use super::decode::Decoder;
use super::field_path::FieldPath;
use crate::model::{
    Action, AuthorizationPolicySpec, Condition, Operation, PolicyTargetReference, Rule, RuleFrom,
    RuleTo, Source, WorkloadSelector,
};

const SPEC_FIELDS: &[&str] = &[
    "selector",
    "targetRef",
    "targetRefs",
    "rules",
    "action",
    "provider",
];
const RULE_FIELDS: &[&str] = &["from", "to", "when"];
const SOURCE_FIELDS: &[&str] = &[
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
    "serviceAccounts",
    "notServiceAccounts",
    "trustDomains",
    "notTrustDomains",
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
];
const OPERATION_FIELDS: &[&str] = &[
    "hosts",
    "notHosts",
    "ports",
    "notPorts",
    "methods",
    "notMethods",
    "paths",
    "notPaths",
];
const CONDITION_FIELDS: &[&str] = &["key", "values", "notValues"];
const TARGET_REF_FIELDS: &[&str] = &["group", "kind", "name", "namespace"];

const ACTIONS: &[(&str, Action)] = &[
    ("ALLOW", Action::Allow),
    ("DENY", Action::Deny),
    ("AUDIT", Action::Audit),
    ("CUSTOM", Action::Custom),
];

/// `spec`; absent or `null` is the empty spec (an ALLOW policy that allows nothing).
pub(crate) fn decode_spec(dec: &mut Decoder, value: Option<&Value>) -> AuthorizationPolicySpec {
    let path = FieldPath::root().field("spec");
    let mut spec = AuthorizationPolicySpec::default();
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return spec;
    };
    let Some(map) = dec.object(value, &path, SPEC_FIELDS) else {
        return spec;
    };
    spec.selector = decode_selector(dec, map.get("selector"), &path.field("selector"));
    spec.target_ref = match map.get("targetRef") {
        None | Some(Value::Null) => None,
        Some(v) => decode_target_ref(dec, v, &path.field("targetRef")),
    };
    spec.target_refs = dec
        .list(
            map.get("targetRefs"),
            &path.field("targetRefs"),
            decode_target_ref,
        )
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();
    spec.rules = dec.list(map.get("rules"), &path.field("rules"), decode_rule);
    spec.action = dec
        .enumeration(map.get("action"), &path.field("action"), ACTIONS)
        .unwrap_or_default();
    spec.provider = match map.get("provider") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let p = path.field("provider");
            dec.object(v, &p, &["name"]).map(|m| {
                dec.opt_string(m.get("name"), &p.field("name"))
                    .unwrap_or_default()
            })
        }
    };
    spec
}

/// `selector: {matchLabels: {...}}`, shared with PeerAuthentication.
pub(crate) fn decode_selector(
    dec: &mut Decoder,
    value: Option<&Value>,
    path: &FieldPath,
) -> Option<WorkloadSelector> {
    let value = value.filter(|v| !v.is_null())?;
    let map = dec.object(value, path, &["matchLabels"])?;
    Some(WorkloadSelector {
        match_labels: dec.string_map(map.get("matchLabels"), &path.field("matchLabels")),
    })
}

fn decode_target_ref(
    dec: &mut Decoder,
    value: &Value,
    path: &FieldPath,
) -> Option<PolicyTargetReference> {
    let map = dec.object(value, path, TARGET_REF_FIELDS)?;
    let mut field = |name: &str| {
        dec.opt_string(map.get(name), &path.field(name))
            .unwrap_or_default()
    };
    Some(PolicyTargetReference {
        group: field("group"),
        kind: field("kind"),
        name: field("name"),
        namespace: field("namespace"),
    })
}

fn decode_rule(dec: &mut Decoder, value: &Value, path: &FieldPath) -> Option<Rule> {
    let map = dec.object(value, path, RULE_FIELDS)?;
    Some(Rule {
        from: dec.list(map.get("from"), &path.field("from"), |dec, v, p| {
            let m = dec.object(v, p, &["source"])?;
            Some(RuleFrom {
                source: match m.get("source") {
                    None | Some(Value::Null) => None,
                    Some(s) => decode_source(dec, s, &p.field("source")),
                },
            })
        }),
        to: dec.list(map.get("to"), &path.field("to"), |dec, v, p| {
            let m = dec.object(v, p, &["operation"])?;
            Some(RuleTo {
                operation: match m.get("operation") {
                    None | Some(Value::Null) => None,
                    Some(o) => decode_operation(dec, o, &p.field("operation")),
                },
            })
        }),
        when: dec.list(map.get("when"), &path.field("when"), decode_condition),
    })
}

/// `from[i].source`.
fn decode_source(dec: &mut Decoder, value: &Value, path: &FieldPath) -> Option<Source> {
    let map = dec.object(value, path, SOURCE_FIELDS)?;
    // The path of a field is built only when the field is there (loading cost, issue 12).
    let mut list = |name: &str| match map.get(name) {
        None => Vec::new(),
        value => dec.string_list(value, &path.field(name)),
    };
    Some(Source {
        principals: list("principals"),
        not_principals: list("notPrincipals"),
        request_principals: list("requestPrincipals"),
        not_request_principals: list("notRequestPrincipals"),
        namespaces: list("namespaces"),
        not_namespaces: list("notNamespaces"),
        service_accounts: list("serviceAccounts"),
        not_service_accounts: list("notServiceAccounts"),
        trust_domains: list("trustDomains"),
        not_trust_domains: list("notTrustDomains"),
        ip_blocks: list("ipBlocks"),
        not_ip_blocks: list("notIpBlocks"),
        remote_ip_blocks: list("remoteIpBlocks"),
        not_remote_ip_blocks: list("notRemoteIpBlocks"),
    })
}

/// `to[i].operation`. `ports` are strings in the CRD: `ports: [80]` is an error with a hint.
fn decode_operation(dec: &mut Decoder, value: &Value, path: &FieldPath) -> Option<Operation> {
    let map = dec.object(value, path, OPERATION_FIELDS)?;
    let mut list = |name: &str| match map.get(name) {
        None => Vec::new(),
        value => dec.string_list(value, &path.field(name)),
    };
    Some(Operation {
        hosts: list("hosts"),
        not_hosts: list("notHosts"),
        ports: list("ports"),
        not_ports: list("notPorts"),
        methods: list("methods"),
        not_methods: list("notMethods"),
        paths: list("paths"),
        not_paths: list("notPaths"),
    })
}

/// `when[i]`: `{key, values, notValues}`. A missing key decodes as empty, which validation
/// reports with Istio's message.
fn decode_condition(dec: &mut Decoder, value: &Value, path: &FieldPath) -> Option<Condition> {
    let map = dec.object(value, path, CONDITION_FIELDS)?;
    Some(Condition {
        key: dec
            .opt_string(map.get("key"), &path.field("key"))
            .unwrap_or_default(),
        values: match map.get("values") {
            None => Vec::new(),
            v => dec.string_list(v, &path.field("values")),
        },
        not_values: match map.get("notValues") {
            None => Vec::new(),
            v => dec.string_list(v, &path.field("notValues")),
        },
    })
}
