//! AuthorizationPolicy: which policies apply to a workload, their compiled rules, the decision
//! ([`CompiledAuthz::check`], each step under the Istio sentence it implements).
//!
//! Each field has one type that compiles it and matches it, side by side (Envoy's
//! `Matcher::create`): `source.*` in [`source`] (`principals` is [`source::Principal`]),
//! `operation.*` in [`operation`], `when` keys in [`condition`]. Around them: the structure
//! (rule, clause, field, the per-check context) in [`rule`], the TCP/HTTP-only and invalid-value
//! rules in [`values`], the wildcard forms in [`string_match`], path templates in
//! [`path_template`], trust-domain aliases in [`trust_domain`], the rule index in [`index`].

mod condition;
mod index;
mod operation;
mod path_template;
mod rule;
mod source;
mod string_match;
mod trust_domain;
mod values;

use std::borrow::Borrow;

use crate::attributes::{Attributes, Requirements};
use crate::decision::{Cause, Decision, Protocol, RuleId, ShadowResult};
use crate::error::{Diagnostic, Diagnostics};
use crate::model::{Action, AuthorizationPolicy, Rule, CUSTOM_UNSUPPORTED};
use crate::order;
use crate::workload::{MeshConfig, Workload};
use index::RuleSet;
use rule::{CompiledRule, Ctx};
use trust_domain::TrustBundle;
use values::{FieldCtx, RuleDropped};

/// One applicable AuthorizationPolicy as the engine reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyInfo {
    pub namespace: String,
    pub name: String,
    pub action: Action,
    pub dry_run: bool,
}

impl PolicyInfo {
    /// `namespace/name`.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The rules of one action and enforcement mode, for one chain type.
#[derive(Debug, Default)]
pub(crate) struct Bucket {
    /// At least one policy of this bucket applies, even one with no usable rule: an ALLOW policy
    /// that matches nothing still denies everything else.
    has_policy: bool,
    rules: RuleSet,
}

/// All buckets for one chain type (HTTP or TCP).
#[derive(Debug, Default)]
pub(crate) struct ChainRules {
    audit: Bucket,
    deny: Bucket,
    allow: Bucket,
    shadow_deny: Bucket,
    shadow_allow: Bucket,
}

#[derive(Debug, Default)]
pub(crate) struct CompiledAuthz {
    http: ChainRules,
    tcp: ChainRules,
    /// Some HTTP DENY/AUDIT field reads the path: compute the normalized path.
    need_normalized: bool,
    /// How `request.headers[..]` reads a repeated header.
    pub(crate) repeated_headers: crate::attributes::RepeatedHeaders,
}

/// Istio `WorkloadPolicyMatcher.ShouldAttachPolicy` for a sidecar workload.
fn applies(
    p: &AuthorizationPolicy,
    workload: &Workload,
    mesh: &MeshConfig,
    warnings: &mut Diagnostics,
) -> bool {
    let applies = selects(p, workload, mesh);
    if applies == Some(false) {
        warnings.push(Diagnostic::warning(
            Some(p.object_ref()),
            "spec.targetRefs",
            "policies with targetRef/targetRefs attach to gateways and waypoints, not to sidecar workloads: not applied",
        ));
    }
    applies == Some(true)
}

/// [`applies`] without its warning: `Some(true)` when `p` applies to `workload`, `None` when its
/// namespace or selector rules it out, `Some(false)` for a `targetRef(s)` policy of the workload's
/// namespaces (not applied to a sidecar).
pub(crate) fn selects(
    p: &AuthorizationPolicy,
    workload: &Workload,
    mesh: &MeshConfig,
) -> Option<bool> {
    let ns = p.meta.namespace.as_str();
    if ns != mesh.root_namespace && ns != workload.namespace {
        return None;
    }
    if p.spec.target_ref.is_some() || !p.spec.target_refs.is_empty() {
        return Some(false);
    }
    match &p.spec.selector {
        None => Some(true),
        Some(s) => workload.selected_by(&s.match_labels).then_some(true),
    }
}

/// Compiles one rule for one chain type; `None` when Istio would drop it.
fn compile_rule(ctx: &FieldCtx<'_>, id: RuleId, rule: &Rule) -> Result<CompiledRule, RuleDropped> {
    let mut from = Vec::new();
    for f in rule.from.iter().flatten().flatten() {
        if let Some(s) = &f.source {
            from.push(source::compile(ctx, s)?);
        }
    }
    let mut to = Vec::new();
    for t in rule.to.iter().flatten().flatten() {
        if let Some(o) = &t.operation {
            to.push(operation::compile(ctx, o)?);
        }
    }
    let mut when = Vec::new();
    for c in rule.when.iter().flatten().flatten() {
        if let Some(field) = condition::compile(ctx, c)? {
            when.push(field);
        }
    }
    for clause in from.iter_mut().chain(to.iter_mut()) {
        order::sort_stable_by(clause, |a, b| a.cost().cmp(&b.cost()));
        clause.shrink_to_fit();
    }
    order::sort_stable_by(&mut when, |a, b| a.cost().cmp(&b.cost()));
    // Kept for the configuration's lifetime: no spare capacity.
    from.shrink_to_fit();
    to.shrink_to_fit();
    when.shrink_to_fit();
    // An entry whose fields were all dropped (DENY/AUDIT on TCP) matches anything, which makes
    // the whole list match anything.
    if from.iter().any(Vec::is_empty) {
        from.clear();
    }
    if to.iter().any(Vec::is_empty) {
        to.clear();
    }
    Ok(CompiledRule { id, from, to, when })
}

/// Compiles the AuthorizationPolicies that apply to `workload`. `policies` may be borrowed
/// (`&AuthorizationPolicy`: the CLI keeps its set) or owned (the module: each policy is dropped
/// once compiled, and those that do not apply before compilation starts, so that the decoded
/// set and the compiled engine are not both held whole at the peak of a load).
pub(crate) fn compile<P: Borrow<AuthorizationPolicy>>(
    policies: impl IntoIterator<Item = P>,
    workload: &Workload,
    mesh: &MeshConfig,
    warnings: &mut Diagnostics,
) -> Result<(Vec<PolicyInfo>, CompiledAuthz), Diagnostics> {
    let mut applicable: Vec<P> = policies
        .into_iter()
        .filter(|p| applies(p.borrow(), workload, mesh, warnings))
        .collect();
    // Istio's order: creationTimestamp, then name, then namespace. It decides which rule is
    // reported as the one that matched.
    order::sort_stable_by(&mut applicable, |a, b| {
        let (a, b) = (a.borrow(), b.borrow());
        (a.meta.creation_timestamp, &a.meta.name, &a.meta.namespace).cmp(&(
            b.meta.creation_timestamp,
            &b.meta.name,
            &b.meta.namespace,
        ))
    });

    let mut errors = Diagnostics::default();
    let trust = TrustBundle::new(mesh);
    let cel = values::CelCache::default();
    let mut infos = Vec::new();
    let mut compiled = CompiledAuthz::default();
    // Rules in policy order, with the bucket each goes to, per chain type.
    let mut http_rules: Vec<(BucketKind, CompiledRule)> = Vec::new();
    let mut tcp_rules: Vec<(BucketKind, CompiledRule)> = Vec::new();

    for p in applicable {
        let p = p.borrow();
        let Ok(policy_id) = u32::try_from(infos.len()) else {
            errors.push(Diagnostic::error(
                Some(p.object_ref()),
                "",
                "too many policies",
            ));
            break;
        };
        let dry_run = p.dry_run();
        let action = p.spec.action;
        let kind = match (action, dry_run) {
            (Action::Audit, _) => BucketKind::Audit,
            (Action::Deny, false) => BucketKind::Deny,
            (Action::Allow, false) => BucketKind::Allow,
            (Action::Deny, true) => BucketKind::ShadowDeny,
            (Action::Allow, true) => BucketKind::ShadowAllow,
            (Action::Custom, _) => {
                // Never ignore a policy silently: ignoring it would widen access.
                errors.push(Diagnostic::error(
                    Some(p.object_ref()),
                    "spec.action",
                    CUSTOM_UNSUPPORTED,
                ));
                continue;
            }
        };
        infos.push(PolicyInfo {
            namespace: p.meta.namespace.clone(),
            name: p.meta.name.clone(),
            action,
            dry_run,
        });
        for chain in [&mut compiled.http, &mut compiled.tcp] {
            chain.bucket_mut(kind).has_policy = true;
        }
        for (i, rule) in p.spec.rules.iter().flatten().enumerate() {
            let Some(rule) = rule else { continue };
            let Ok(rule_index) = u32::try_from(i) else {
                break;
            };
            let id = RuleId {
                policy: policy_id,
                rule: rule_index,
            };
            for (protocol, target) in [
                (Protocol::Http, &mut http_rules),
                (Protocol::Tcp, &mut tcp_rules),
            ] {
                let ctx = FieldCtx {
                    protocol,
                    action,
                    policy_namespace: &p.meta.namespace,
                    trust: &trust,
                    cel: &cel,
                };
                if let Ok(r) = compile_rule(&ctx, id, rule) {
                    target.push((kind, r));
                }
            }
        }
    }
    if errors.has_errors() {
        errors.extend(std::mem::take(warnings));
        return Err(errors);
    }

    for (chain, rules) in [
        (&mut compiled.http, http_rules),
        (&mut compiled.tcp, tcp_rules),
    ] {
        let mut by_kind: [Vec<CompiledRule>; 5] = Default::default();
        for (kind, rule) in rules {
            if let Some(list) = by_kind.get_mut(kind as usize) {
                list.push(rule);
            }
        }
        for (kind, list) in BucketKind::ALL.into_iter().zip(by_kind) {
            chain.bucket_mut(kind).rules = RuleSet::new(list);
        }
    }
    compiled.need_normalized = compiled.http.buckets().iter().any(|b| {
        b.rules
            .rules()
            .iter()
            .any(CompiledRule::reads_normalized_path)
    });
    Ok((infos, compiled))
}

/// Which bucket a policy's rules go to: AUDIT, or DENY / ALLOW enforced or dry-run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BucketKind {
    Audit = 0,
    Deny = 1,
    Allow = 2,
    ShadowDeny = 3,
    ShadowAllow = 4,
}

impl BucketKind {
    const ALL: [BucketKind; 5] = [
        BucketKind::Audit,
        BucketKind::Deny,
        BucketKind::Allow,
        BucketKind::ShadowDeny,
        BucketKind::ShadowAllow,
    ];
}

impl ChainRules {
    fn bucket_mut(&mut self, kind: BucketKind) -> &mut Bucket {
        match kind {
            BucketKind::Audit => &mut self.audit,
            BucketKind::Deny => &mut self.deny,
            BucketKind::Allow => &mut self.allow,
            BucketKind::ShadowDeny => &mut self.shadow_deny,
            BucketKind::ShadowAllow => &mut self.shadow_allow,
        }
    }

    fn buckets(&self) -> [&Bucket; 5] {
        [
            &self.audit,
            &self.deny,
            &self.allow,
            &self.shadow_deny,
            &self.shadow_allow,
        ]
    }
}

impl CompiledAuthz {
    pub(crate) fn requirements(&self) -> Requirements {
        let mut req = Requirements::default();
        for chain in [&self.http, &self.tcp] {
            for bucket in chain.buckets() {
                for rule in bucket.rules.rules() {
                    rule.add_requirements(&mut req);
                }
            }
        }
        req
    }

    /// Every AUDIT rule that matches, in policy order (`check` reports only the first).
    pub(crate) fn audit_matches(&self, protocol: Protocol, attrs: &Attributes<'_>) -> Vec<RuleId> {
        let chain = match protocol {
            Protocol::Http => &self.http,
            Protocol::Tcp => &self.tcp,
        };
        let ctx = Ctx::new(
            attrs,
            self.need_normalized && protocol == Protocol::Http,
            self.repeated_headers,
        );
        let mut matched = chain
            .audit
            .rules
            .rules()
            .iter()
            .filter(|r| r.matches(&ctx))
            .map(|r| r.id)
            .collect::<Vec<_>>();
        order::sort_stable_by(&mut matched, RuleId::cmp);
        matched
    }

    /// Istio's decision procedure, each step under the sentence of the AuthorizationPolicy
    /// reference (istio.io, `security/v1/authorization_policy.proto`) that it implements.
    pub(crate) fn check(&self, protocol: Protocol, attrs: &Attributes<'_>) -> Decision {
        // Istio decides by the port's filter chain: on a TCP chain the rules were compiled
        // without HTTP-only fields (an ALLOW rule naming one is dropped, a DENY or AUDIT rule
        // ignores it), istio-semantics.md §6.
        let chain = match protocol {
            Protocol::Http => &self.http,
            Protocol::Tcp => &self.tcp,
        };
        let ctx = Ctx::new(
            attrs,
            self.need_normalized && protocol == Protocol::Http,
            self.repeated_headers,
        );
        // "A match occurs when at least one rule matches the request." (Policies of one action
        // are ORed; the first rule in Istio's policy order is reported.)
        let first = |b: &Bucket| {
            if b.rules.is_empty() {
                None
            } else {
                b.rules.first_match(&ctx)
            }
        };

        // "Istio Authorization Policy also supports the AUDIT action to decide whether to log
        // requests. AUDIT policies do not affect whether requests are allowed or denied to the
        // workload."
        let audit_rule = first(&chain.audit);

        // "1. If there are any CUSTOM policies that match the request, evaluate and deny the
        // request if the evaluation result is deny." meshauthz refuses CUSTOM policies when
        // compiling (there is no external authorizer), so none is left here.
        let cause = if let Some(r) = first(&chain.deny) {
            // "2. If there are any DENY policies that match the request, deny the request."
            Cause::DenyRule(r)
        } else if !chain.allow.has_policy {
            // "3. If there are no ALLOW policies for the workload, allow the request."
            // (An ALLOW policy with no rule that can match still counts: it denies everything.)
            Cause::NoAllowPolicy
        } else if let Some(r) = first(&chain.allow) {
            // "4. If any of the ALLOW policies match the request, allow the request."
            Cause::AllowRule(r)
        } else {
            // "5. Deny the request."
            Cause::NoAllowRuleMatched
        };

        // `istio.io/dry-run`: "dry-run the policy without actually enforcing it". Each dry-run
        // action is evaluated like an enforced one and only reported (Envoy `shadow_rules`).
        let shadow_deny = chain.shadow_deny.has_policy.then(|| {
            let rule = first(&chain.shadow_deny);
            ShadowResult {
                allowed: rule.is_none(),
                rule,
            }
        });
        let shadow_allow = chain.shadow_allow.has_policy.then(|| {
            let rule = first(&chain.shadow_allow);
            ShadowResult {
                allowed: rule.is_some(),
                rule,
            }
        });
        Decision {
            cause,
            audit_policy_applies: chain.audit.has_policy,
            audit_rule,
            shadow_allow,
            shadow_deny,
            cel_errors: ctx.cel_errors.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AuthorizationPolicySpec, ObjectMeta, Operation, PolicySet, RuleTo};
    use crate::{Engine, HttpAttributes};

    fn policy(name: &str, action: Action, rules: Option<Vec<Option<Rule>>>) -> AuthorizationPolicy {
        AuthorizationPolicy {
            api_version: "security.istio.io/v1".into(),
            meta: ObjectMeta {
                name: name.into(),
                namespace: "ns1".into(),
                ..Default::default()
            },
            spec: AuthorizationPolicySpec {
                action,
                rules,
                ..Default::default()
            },
        }
    }

    fn to(op: Operation) -> Rule {
        Rule {
            to: Some(vec![Some(RuleTo {
                operation: Some(op),
            })]),
            ..Default::default()
        }
    }

    fn engine(ps: Vec<AuthorizationPolicy>) -> Engine {
        let set = PolicySet {
            authorization_policies: ps,
            ..Default::default()
        };
        let wl = Workload {
            namespace: "ns1".into(),
            ..Default::default()
        };
        match Engine::compile(&set, &wl, &MeshConfig::default()) {
            Ok((e, _)) => e,
            Err(d) => panic!("{d}"),
        }
    }

    fn get<'a>(path: &'a str, principal: Option<&'a str>) -> Attributes<'a> {
        Attributes {
            principal,
            mtls: principal.is_some(),
            destination_port: Some(8080),
            http: Some(HttpAttributes {
                method: Some("GET"),
                path: Some(path),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn deny_beats_allow_and_allow_nothing_denies() {
        let deny = policy(
            "deny-admin",
            Action::Deny,
            Some(vec![Some(to(Operation {
                paths: vec!["/allow/admin".into()],
                ..Default::default()
            }))]),
        );
        let allow = policy(
            "allow",
            Action::Allow,
            Some(vec![Some(to(Operation {
                paths: vec!["/allow*".into()],
                ..Default::default()
            }))]),
        );
        let e = engine(vec![deny, allow]);
        let d = e.check(Protocol::Http, &get("/allow/admin?param=value", None));
        assert!(!d.allowed());
        assert_eq!(
            e.rule_name(d.deciding_rule().unwrap_or(RuleId { policy: 9, rule: 9 })),
            "ns[ns1]-policy[deny-admin]-rule[0]"
        );
        assert!(e
            .check(Protocol::Http, &get("/allow?param=value", None))
            .allowed());
        assert!(!e.check(Protocol::Http, &get("/other", None)).allowed());
        // Path tricks normalize onto the denied path.
        assert!(!e
            .check(Protocol::Http, &get("/allow/x/%2e%2e/admin", None))
            .allowed());
        assert!(!e
            .check(Protocol::Http, &get("//allow//admin", None))
            .allowed());

        let nothing = engine(vec![policy("allow-nothing", Action::Allow, None)]);
        assert!(!nothing.check(Protocol::Http, &get("/", None)).allowed());
        assert!(engine(vec![])
            .check(Protocol::Http, &get("/", None))
            .allowed());
    }

    #[test]
    fn http_only_fields_on_tcp() {
        let methods = || {
            to(Operation {
                methods: vec!["GET".into()],
                ..Default::default()
            })
        };
        let tcp = Attributes {
            destination_port: Some(80),
            ..Default::default()
        };
        // ALLOW: the rule is dropped, leaving an ALLOW policy that matches nothing.
        assert!(!engine(vec![policy(
            "a",
            Action::Allow,
            Some(vec![Some(methods())])
        )])
        .check(Protocol::Tcp, &tcp)
        .allowed());
        // DENY: the field is dropped and the rule denies every connection.
        assert!(
            !engine(vec![policy("d", Action::Deny, Some(vec![Some(methods())]))])
                .check(Protocol::Tcp, &tcp)
                .allowed()
        );
        // On HTTP, the same DENY only hits GET.
        let e = engine(vec![policy("d", Action::Deny, Some(vec![Some(methods())]))]);
        let mut post = get("/", None);
        if let Some(h) = post.http.as_mut() {
            h.method = Some("POST");
        }
        assert!(e.check(Protocol::Http, &post).allowed());
    }

    /// Issue 12's realistic mix (AUDIT, DENY, ALLOW cycling four shapes) plus every wildcard
    /// shape the index files (principal prefix and suffix, namespace prefix, `*`) and some it
    /// does not (namespace suffix, inner `*`), as Istio YAML for workload `foo`/`app=httpbin`.
    fn mixed_policies(n: usize) -> String {
        let mut y = String::from(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: audit-api, namespace: foo}\n\
             spec: {action: AUDIT, rules: [{from: [{source: {notNamespaces: [foo, istio-system]}}], to: [{operation: {paths: [/api/*]}}]}]}\n\
             ---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin, namespace: foo}\n\
             spec: {action: DENY, rules: [{from: [{source: {notPrincipals: [cluster.local/ns/ops/sa/admin]}}], to: [{operation: {paths: [/admin, /admin/*]}}]}]}\n",
        );
        for i in 0..n {
            let rules = match i % 8 {
                0 => format!("[{{from: [{{source: {{principals: [cluster.local/ns/team-{i}/sa/client]}}}}], to: [{{operation: {{methods: [GET], paths: [/api/*]}}}}]}}]"),
                1 => format!("[{{from: [{{source: {{namespaces: [team-{i}]}}}}], to: [{{operation: {{methods: [GET, POST], paths: [/api/*, /v2/team-{i}/*]}}}}]}}]"),
                2 => format!("[{{from: [{{source: {{principals: [cluster.local/ns/team-{i}/sa/client, cluster.local/ns/team-{i}/sa/worker]}}}}], to: [{{operation: {{methods: [GET, HEAD], paths: [/api/*, /healthz]}}}}]}}, \
                              {{from: [{{source: {{namespaces: [team-{i}]}}}}], to: [{{operation: {{methods: [POST, PUT], paths: [/api/team-{i}/*]}}}}]}}]"),
                3 => format!("[{{from: [{{source: {{principals: [cluster.local/ns/team-{i}/sa/*]}}}}], to: [{{operation: {{methods: [GET], paths: [/api/*], notPaths: [/api/internal/*]}}}}]}}]"),
                4 => format!("[{{from: [{{source: {{principals: [\"*/sa/bot-{i}\"]}}}}, {{source: {{namespaces: [team-{i}*]}}}}], to: [{{operation: {{paths: [/api/*]}}}}]}}]"),
                5 => format!("[{{from: [{{source: {{namespaces: [\"*-{i}\"]}}}}], to: [{{operation: {{ports: [\"80{}\"]}}}}]}}]", i % 10),
                6 => format!("[{{from: [{{source: {{principals: [cluster.local/ns/team-{i}/sa/client], namespaces: [team-*]}}}}]}}, {{to: [{{operation: {{hosts: [\"*.example.com\"]}}}}]}}]"),
                _ => format!("[{{from: [{{source: {{principals: [\"cluster.local/ns/t*m-{i}/sa/x\"]}}}}, {{source: {{namespaces: [\"*\"]}}}}], when: [{{key: \"request.headers[x-team]\", values: [\"{i}\"]}}]}}]"),
            };
            y.push_str(&format!(
                "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-{i:05}, namespace: foo}}\n\
                 spec: {{action: ALLOW, selector: {{matchLabels: {{app: httpbin}}}}, rules: {rules}}}\n"
            ));
        }
        y
    }

    #[test]
    fn index_gives_same_answer_as_scan() {
        let text = mixed_policies(400);
        let (set, _) = match crate::load_str(&text, &crate::LoadOptions::default()) {
            Ok(r) => r,
            Err(d) => panic!("{d}"),
        };
        let wl = Workload {
            namespace: "foo".into(),
            labels: [("app".to_string(), "httpbin".to_string())].into(),
        };
        let e = match Engine::compile(&set, &wl, &MeshConfig::default()) {
            Ok((e, _)) => e,
            Err(d) => panic!("{d}"),
        };
        // Every shape but the namespace suffix, the inner `*` and the hosts-only rule is filed.
        let allow = &e.authz.http.allow.rules;
        assert!(
            allow.unindexed() <= 400 / 8 * 3,
            "{} of 400 rules unindexed",
            allow.unindexed()
        );
        let mut principals = vec![
            "spiffe://cluster.local/ns/ops/sa/admin".to_string(),
            "spiffe://cluster.local/ns/foo/sa/x".to_string(),
            "spiffe://cluster.local/ns/ns/team-3/sa/client".to_string(),
            "spiffe://other.td/ns/team-3/sa/client".to_string(),
            "spiffe://cluster.local/ns/team-é/sa/client".to_string(),
            "cluster.local/ns/team-3/sa/client".to_string(),
            String::new(),
        ];
        for i in (0..410).step_by(3) {
            for sa in ["client", "worker", "other", &format!("bot-{i}")] {
                principals.push(format!("spiffe://cluster.local/ns/team-{i}/sa/{sa}"));
            }
            principals.push(format!("spiffe://cluster.local/ns/x-{i}/sa/client"));
            principals.push(format!("spiffe://cluster.local/ns/t0m-{i}/sa/x"));
        }
        let mut checked = 0;
        for p in &principals {
            for (path, method, port) in [
                ("/api/orders/42", "GET", 8080),
                ("/api/internal/x", "GET", 8083),
                ("/admin", "POST", 8080),
                ("/v2/team-9/x", "POST", 8085),
                ("/healthz", "HEAD", 9000),
            ] {
                let headers = [("x-team", "11")];
                let attrs = Attributes {
                    principal: Some(p.as_str()).filter(|p| !p.is_empty()),
                    mtls: !p.is_empty(),
                    destination_port: Some(port),
                    http: Some(HttpAttributes {
                        method: Some(method),
                        path: Some(path),
                        host: Some("a.example.com"),
                        headers: &headers,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                for protocol in [Protocol::Http, Protocol::Tcp] {
                    let chain = match protocol {
                        Protocol::Http => &e.authz.http,
                        Protocol::Tcp => &e.authz.tcp,
                    };
                    let ctx = Ctx::new(&attrs, e.authz.need_normalized, e.authz.repeated_headers);
                    for b in chain.buckets() {
                        assert_eq!(
                            b.rules.first_match(&ctx),
                            b.rules.first_match_by_scan(&ctx),
                            "{p} {method} {path} {port} {protocol:?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 10_000);
        // And the answers are the expected ones, not only equal.
        let d = e.check(
            Protocol::Http,
            &get(
                "/api/orders/42",
                Some("spiffe://cluster.local/ns/team-3/sa/anyone"),
            ),
        );
        assert_eq!(
            e.policy(d.deciding_rule().unwrap_or(RuleId { policy: 0, rule: 0 }))
                .map(|p| p.name.as_str()),
            Some("allow-00003")
        );
        assert!(d.audit_rule.is_some());
        assert!(!e
            .check(
                Protocol::Http,
                &get(
                    "/api/orders/42",
                    Some("spiffe://cluster.local/ns/nobody/sa/x")
                )
            )
            .allowed());
    }
}
