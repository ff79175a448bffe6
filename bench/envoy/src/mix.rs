//! The policy mixes a variant runs: the Istio YAML meshauthz is given (through `meshauthz
//! plugin-config`) and the same policies as Envoy's native RBAC filters, written the way istiod
//! writes them (see the goldens in Istio's `pilot/pkg/security/authz/builder/testdata/http/`,
//! also read by `e2e/src/differential/`): one RBAC filter per action in the order AUDIT (`LOG`),
//! DENY, ALLOW; one policy per rule named `ns[<namespace>]-policy[<name>]-rule[<k>]`; per rule
//! `permissions: [and_rules: [one or_rules per operation field, not_rule for notX]]` and
//! `principals: [and_ids: [one or_ids per source field, not_id for notX]]`. Envoy keeps the
//! policies of a filter in name order: zero-padded names fix which policy a request meets first.

use std::fmt::Write as _;

use serde_json::{json, Value};

/// Which policies a variant runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// The first benchmark's mix: N identical-shape ALLOW policies on `foo/app=echo`, policy i
    /// allowing `cluster.local/ns/nsI/sa/saI` (and namespace nsI) to `GET|POST /api/*`; with
    /// `audit`, the migration's AUDIT policy (`notNamespaces: [istioinaction]` on `GET /*`).
    /// Request `GET /api/v1/items` from the last policy's principal.
    Uniform { audit: bool },
    /// Issue 12's realistic mix on `foo/app=httpbin`: one AUDIT (with `audit`; it audits the
    /// benchmark request), one DENY, and N-2 ALLOW policies cycling four shapes (see
    /// [`realistic_allow`]). Request `GET /api/orders/42` from
    /// `cluster.local/ns/team-I/sa/client`, I the last ALLOW policy (or the first, with `first`).
    Realistic { audit: bool, first: bool },
    /// Policies a connection can decide: the uniform mix without operations (policy i allows
    /// principal `cluster.local/ns/nsI/sa/saI` and namespace nsI, any request). Request
    /// `GET /api/v1/items` from the last policy's principal.
    Principals,
}

/// The SPIFFE trust domain of every principal.
const TD: &str = "cluster.local";

impl Mix {
    /// The workload label the policies select (`--label` of `meshauthz plugin-config`).
    /// Whether the mix carries an AUDIT policy.
    pub fn has_audit(self) -> bool {
        match self {
            Mix::Uniform { audit } | Mix::Realistic { audit, .. } => audit,
            Mix::Principals => false,
        }
    }

    pub fn workload_label(self) -> &'static str {
        match self {
            Mix::Uniform { .. } | Mix::Principals => "app=echo",
            Mix::Realistic { .. } => "app=httpbin",
        }
    }

    /// The path every benchmark request asks for.
    pub fn request_path(self) -> &'static str {
        match self {
            Mix::Uniform { .. } | Mix::Principals => "/api/v1/items",
            Mix::Realistic { .. } => "/api/orders/42",
        }
    }

    /// How many ALLOW policies the mix has at size `n`.
    fn allows(self, n: usize) -> usize {
        match self {
            Mix::Uniform { .. } | Mix::Principals => n,
            Mix::Realistic { .. } => n.saturating_sub(2),
        }
    }

    /// How many policies the workload gets at size `n` (what the report shows).
    pub fn policies(self, n: usize) -> usize {
        match self {
            Mix::Uniform { audit } => n + usize::from(audit && n > 0),
            Mix::Principals => n,
            Mix::Realistic { audit, .. } if n > 0 => self.allows(n) + 1 + usize::from(audit),
            Mix::Realistic { .. } => 0,
        }
    }

    /// The benchmark client's (namespace, service account) at size `n`.
    pub fn client(self, n: usize) -> (String, String) {
        match self {
            Mix::Uniform { .. } | Mix::Principals => uniform_principal(n.saturating_sub(1)),
            Mix::Realistic { first, .. } => {
                let i = if first {
                    0
                } else {
                    self.allows(n).saturating_sub(1)
                };
                (team(i), "client".to_string())
            }
        }
    }

    /// The policies as Istio YAML (`---`-separated documents).
    pub fn istio_yaml(self, n: usize) -> String {
        match self {
            Mix::Uniform { audit } => uniform_yaml(n, audit),
            Mix::Principals => principals_yaml(n),
            Mix::Realistic { audit, .. } => realistic_yaml(n, audit),
        }
    }

    /// Envoy's native RBAC HTTP filters for the same policies, in chain order.
    pub fn rbac_filters(self, n: usize) -> Vec<Value> {
        match self {
            Mix::Uniform { .. } => vec![rbac_filter("ALLOW", uniform_rbac(n))],
            Mix::Principals => vec![rbac_filter("ALLOW", principals_rbac(n))],
            Mix::Realistic { audit, .. } => realistic_rbac(n, audit),
        }
    }
}

fn uniform_principal(i: usize) -> (String, String) {
    (format!("ns{i:05}"), format!("sa{i:05}"))
}

/// The uniform mix's N ALLOW policies, each rule `from` its principal and namespace, then `to`
/// (Istio YAML of the rule's `to` entry, or empty for none).
fn uniform_allows(n: usize, to: &str) -> String {
    let mut y = String::new();
    for i in 0..n {
        let (ns, sa) = uniform_principal(i);
        let _ = write!(
            y,
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-{i:05}, namespace: foo}}\n\
             spec:\n  selector: {{matchLabels: {{app: echo}}}}\n  action: ALLOW\n  rules:\n\
             \x20 - from:\n    - source: {{principals: [\"{TD}/ns/{ns}/sa/{sa}\"], namespaces: [\"{ns}\"]}}\n{to}"
        );
    }
    y
}

fn uniform_yaml(n: usize, audit: bool) -> String {
    let mut y = uniform_allows(
        n,
        "\x20   to:\n    - operation: {methods: [GET, POST], paths: [\"/api/*\"]}\n",
    );
    if audit && n > 0 {
        y.push_str(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: audit-outside-mesh, namespace: foo}\n\
             spec:\n  selector: {matchLabels: {app: echo}}\n  action: AUDIT\n  rules:\n\
             \x20 - from:\n    - source: {notNamespaces: [istioinaction]}\n\
             \x20   to:\n    - operation: {methods: [GET], paths: [\"/*\"]}\n",
        );
    }
    y
}

fn principals_yaml(n: usize) -> String {
    uniform_allows(n, "")
}

/// [`principals_yaml`] as istiod writes it: a rule without `to` permits any request.
fn principals_rbac(n: usize) -> serde_json::Map<String, Value> {
    uniform_allow_rbac(n, || vec![json!({"any": true})])
}

/// [`uniform_yaml`]'s ALLOW policies as istiod writes them.
fn uniform_rbac(n: usize) -> serde_json::Map<String, Value> {
    uniform_allow_rbac(n, || {
        vec![
            or_rules(methods(&["GET", "POST"])),
            or_rules(paths(&["/api/*"])),
        ]
    })
}

/// [`uniform_allows`] as istiod writes it: each policy's rule with `permissions()`.
fn uniform_allow_rbac(
    n: usize,
    permissions: impl Fn() -> Vec<Value>,
) -> serde_json::Map<String, Value> {
    let mut policies = serde_json::Map::new();
    for i in 0..n {
        let (ns, sa) = uniform_principal(i);
        policies.insert(
            format!("ns[foo]-policy[allow-{i:05}]-rule[0]"),
            policy(
                permissions(),
                vec![
                    or_ids(vec![principal(&format!("{TD}/ns/{ns}/sa/{sa}"))]),
                    or_ids(vec![namespace(&ns)]),
                ],
            ),
        );
    }
    policies
}

fn team(i: usize) -> String {
    format!("team-{i:05}")
}

/// One ALLOW policy of the realistic mix as (rules), each rule (source, operation) as Istio
/// YAML flow mappings. Policy i has shape `i % 4`:
/// 0. one principal to `GET /api/*`;
/// 1. one namespace to `GET,POST /api/*, /v2/team-I/*`;
/// 2. two rules: two principals to `GET,HEAD /api/*, /healthz`, and the namespace to
///    `POST,PUT /api/team-I/*`;
/// 3. a principal prefix `cluster.local/ns/team-I/sa/*` to `GET /api/*`, `notPaths /api/internal/*`.
///
/// Every shape allows the benchmark request from `team-I/sa/client`.
fn realistic_allow(i: usize) -> Vec<(String, String)> {
    let t = team(i);
    match i % 4 {
        0 => vec![(
            format!("{{principals: [\"{TD}/ns/{t}/sa/client\"]}}"),
            "{methods: [GET], paths: [\"/api/*\"]}".to_string(),
        )],
        1 => vec![(
            format!("{{namespaces: [\"{t}\"]}}"),
            format!("{{methods: [GET, POST], paths: [\"/api/*\", \"/v2/{t}/*\"]}}"),
        )],
        2 => vec![
            (
                format!("{{principals: [\"{TD}/ns/{t}/sa/client\", \"{TD}/ns/{t}/sa/worker\"]}}"),
                "{methods: [GET, HEAD], paths: [\"/api/*\", \"/healthz\"]}".to_string(),
            ),
            (
                format!("{{namespaces: [\"{t}\"]}}"),
                format!("{{methods: [POST, PUT], paths: [\"/api/{t}/*\"]}}"),
            ),
        ],
        _ => vec![(
            format!("{{principals: [\"{TD}/ns/{t}/sa/*\"]}}"),
            "{methods: [GET], paths: [\"/api/*\"], notPaths: [\"/api/internal/*\"]}".to_string(),
        )],
    }
}

fn policy_yaml(y: &mut String, name: &str, action: &str, rules: &[(String, String)]) {
    let _ = write!(
        y,
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: foo}}\n\
         spec:\n  selector: {{matchLabels: {{app: httpbin}}}}\n  action: {action}\n  rules:\n"
    );
    for (source, operation) in rules {
        let _ = write!(
            y,
            "  - from:\n    - source: {source}\n    to:\n    - operation: {operation}\n"
        );
    }
}

const AUDIT_SOURCE: &str = "{notNamespaces: [foo, istio-system]}";
const AUDIT_OPERATION: &str = "{paths: [\"/api/*\"]}";
const DENY_SOURCE: &str = "{notPrincipals: [\"cluster.local/ns/ops/sa/admin\"]}";
const DENY_OPERATION: &str = "{paths: [/admin, \"/admin/*\"]}";

fn realistic_yaml(n: usize, audit: bool) -> String {
    let mut y = String::new();
    if n == 0 {
        return y;
    }
    if audit {
        let rule = (AUDIT_SOURCE.to_string(), AUDIT_OPERATION.to_string());
        policy_yaml(&mut y, "audit-outside", "AUDIT", &[rule]);
    }
    let rule = (DENY_SOURCE.to_string(), DENY_OPERATION.to_string());
    policy_yaml(&mut y, "deny-admin", "DENY", &[rule]);
    for i in 0..n.saturating_sub(2) {
        policy_yaml(
            &mut y,
            &format!("allow-{i:05}"),
            "ALLOW",
            &realistic_allow(i),
        );
    }
    y
}

fn realistic_rbac(n: usize, audit: bool) -> Vec<Value> {
    if n == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    if audit {
        let mut p = serde_json::Map::new();
        p.insert(
            "ns[foo]-policy[audit-outside]-rule[0]".into(),
            policy(
                vec![or_rules(paths(&["/api/*"]))],
                vec![not_id(vec![namespace("foo"), namespace("istio-system")])],
            ),
        );
        out.push(rbac_filter("LOG", p));
    }
    let mut deny = serde_json::Map::new();
    deny.insert(
        "ns[foo]-policy[deny-admin]-rule[0]".into(),
        policy(
            vec![or_rules(paths(&["/admin", "/admin/*"]))],
            vec![not_id(vec![principal("cluster.local/ns/ops/sa/admin")])],
        ),
    );
    out.push(rbac_filter("DENY", deny));
    let mut allow = serde_json::Map::new();
    for i in 0..n.saturating_sub(2) {
        let t = team(i);
        let rules: Vec<Value> = match i % 4 {
            0 => vec![policy(
                vec![or_rules(methods(&["GET"])), or_rules(paths(&["/api/*"]))],
                vec![or_ids(vec![principal(&format!("{TD}/ns/{t}/sa/client"))])],
            )],
            1 => vec![policy(
                vec![
                    or_rules(methods(&["GET", "POST"])),
                    or_rules(paths(&["/api/*", &format!("/v2/{t}/*")])),
                ],
                vec![or_ids(vec![namespace(&t)])],
            )],
            2 => vec![
                policy(
                    vec![
                        or_rules(methods(&["GET", "HEAD"])),
                        or_rules(paths(&["/api/*", "/healthz"])),
                    ],
                    vec![or_ids(vec![
                        principal(&format!("{TD}/ns/{t}/sa/client")),
                        principal(&format!("{TD}/ns/{t}/sa/worker")),
                    ])],
                ),
                policy(
                    vec![
                        or_rules(methods(&["POST", "PUT"])),
                        or_rules(paths(&[&format!("/api/{t}/*")])),
                    ],
                    vec![or_ids(vec![namespace(&t)])],
                ),
            ],
            _ => vec![policy(
                vec![
                    or_rules(methods(&["GET"])),
                    or_rules(paths(&["/api/*"])),
                    not_rule(paths(&["/api/internal/*"])),
                ],
                vec![or_ids(vec![principal(&format!("{TD}/ns/{t}/sa/*"))])],
            )],
        };
        for (k, rule) in rules.into_iter().enumerate() {
            allow.insert(format!("ns[foo]-policy[allow-{i:05}]-rule[{k}]"), rule);
        }
    }
    out.push(rbac_filter("ALLOW", allow));
    out
}

fn rbac_filter(action: &str, policies: serde_json::Map<String, Value>) -> Value {
    json!({
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": action, "policies": policies},
        },
    })
}

fn policy(permissions: Vec<Value>, principals: Vec<Value>) -> Value {
    json!({
        "permissions": [{"and_rules": {"rules": permissions}}],
        "principals": [{"and_ids": {"ids": principals}}],
    })
}

fn or_rules(rules: Vec<Value>) -> Value {
    json!({"or_rules": {"rules": rules}})
}

fn not_rule(rules: Vec<Value>) -> Value {
    json!({"not_rule": or_rules(rules)})
}

fn or_ids(ids: Vec<Value>) -> Value {
    json!({"or_ids": {"ids": ids}})
}

fn not_id(ids: Vec<Value>) -> Value {
    json!({"not_id": or_ids(ids)})
}

fn methods(ms: &[&str]) -> Vec<Value> {
    ms.iter()
        .map(|m| json!({"header": {"name": ":method", "string_match": {"exact": m}}}))
        .collect()
}

/// Istio paths: `/x/*` is a prefix `/x/`, anything else (here) exact.
fn paths(ps: &[&str]) -> Vec<Value> {
    ps.iter()
        .map(|p| match p.strip_suffix('*') {
            Some(prefix) => json!({"url_path": {"path": {"prefix": prefix}}}),
            None => json!({"url_path": {"path": {"exact": p}}}),
        })
        .collect()
}

/// An Istio principal: exact SPIFFE URI, or a `spiffe://` prefix for a trailing `*`.
fn principal(p: &str) -> Value {
    let name = match p.strip_suffix('*') {
        Some(prefix) => json!({"prefix": format!("spiffe://{prefix}")}),
        None => json!({"exact": format!("spiffe://{p}")}),
    };
    json!({"authenticated": {"principal_name": name}})
}

/// An Istio namespace: the regex istiod writes for an exact namespace.
fn namespace(ns: &str) -> Value {
    json!({"authenticated": {"principal_name": {"safe_regex": {"regex": format!(".*/ns/{ns}/.*")}}}})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;

    fn names(filter: &Value) -> Vec<String> {
        let mut v: Vec<String> = filter["typed_config"]["rules"]["policies"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    #[test]
    fn uniform_rbac_sorts_with_the_benchmark_principal_last() {
        let mix = Mix::Uniform { audit: false };
        let filters = mix.rbac_filters(12);
        assert_eq!(filters.len(), 1);
        let names = names(&filters[0]);
        let last = names.last().unwrap();
        assert_eq!(last.as_str(), "ns[foo]-policy[allow-00011]-rule[0]");
        let text = filters[0]["typed_config"]["rules"]["policies"][last.as_str()].to_string();
        let (ns, sa) = mix.client(12);
        assert!(text.contains(&format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")));
        assert!(text.contains(&format!(".*/ns/{ns}/.*")), "{text}");
    }

    #[test]
    fn uniform_yaml_parses_and_names_each_principal() {
        let docs =
            meshauthz_harness::policy::from_yaml(&Mix::Uniform { audit: true }.istio_yaml(3))
                .unwrap();
        assert_eq!(docs.len(), 4);
        assert_eq!(
            docs[2]["spec"]["rules"][0]["from"][0]["source"]["principals"][0],
            "cluster.local/ns/ns00002/sa/sa00002"
        );
        assert_eq!(docs[3]["spec"]["action"], "AUDIT");
    }

    #[test]
    fn realistic_yaml_has_the_audit_the_deny_and_four_allow_shapes() {
        let mix = Mix::Realistic {
            audit: true,
            first: false,
        };
        let docs = meshauthz_harness::policy::from_yaml(&mix.istio_yaml(10)).unwrap();
        assert_eq!(docs.len(), 10);
        assert_eq!(mix.policies(10), 10);
        assert_eq!(docs[0]["spec"]["action"], "AUDIT");
        assert_eq!(
            docs[0]["spec"]["rules"][0]["from"][0]["source"]["notNamespaces"],
            json!(["foo", "istio-system"])
        );
        assert_eq!(docs[1]["spec"]["action"], "DENY");
        assert_eq!(
            docs[1]["spec"]["rules"][0]["to"][0]["operation"]["paths"],
            json!(["/admin", "/admin/*"])
        );
        let allows: Vec<&Value> = docs[2..].iter().collect();
        assert!(allows.iter().all(|d| d["spec"]["action"] == "ALLOW"));
        assert_eq!(allows[2]["spec"]["rules"].as_array().unwrap().len(), 2);
        assert_eq!(
            allows[3]["spec"]["rules"][0]["from"][0]["source"]["principals"][0],
            "cluster.local/ns/team-00003/sa/*"
        );
        let without = Mix::Realistic {
            audit: false,
            first: false,
        };
        let docs = meshauthz_harness::policy::from_yaml(&without.istio_yaml(10)).unwrap();
        assert_eq!(docs.len(), 9);
        assert!(docs.iter().all(|d| d["spec"]["action"] != "AUDIT"));
    }

    #[test]
    fn realistic_rbac_is_audit_deny_allow_with_the_client_first_or_last() {
        let last = Mix::Realistic {
            audit: true,
            first: false,
        };
        let filters = last.rbac_filters(10);
        let actions: Vec<&Value> = filters
            .iter()
            .map(|f| &f["typed_config"]["rules"]["action"])
            .collect();
        assert_eq!(actions, ["LOG", "DENY", "ALLOW"]);
        // 8 ALLOW policies, two of them (2 and 6: shape 2) with two rules.
        let allow = names(&filters[2]);
        assert_eq!(allow.len(), 10);
        assert_eq!(
            allow.last().unwrap().as_str(),
            "ns[foo]-policy[allow-00007]-rule[0]"
        );
        assert_eq!(last.client(10), ("team-00007".to_string(), "client".into()));
        let first = Mix::Realistic {
            audit: false,
            first: true,
        };
        assert_eq!(
            first.client(10),
            ("team-00000".to_string(), "client".into())
        );
        assert_eq!(first.rbac_filters(10).len(), 2);
        let shape3 = filters[2]["typed_config"]["rules"]["policies"]
            ["ns[foo]-policy[allow-00007]-rule[0]"]
            .to_string();
        assert!(
            shape3.contains(r#""prefix":"spiffe://cluster.local/ns/team-00007/sa/""#),
            "{shape3}"
        );
        assert!(shape3.contains("not_rule"), "{shape3}");
    }
}
