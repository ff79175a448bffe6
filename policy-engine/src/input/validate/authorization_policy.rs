//! `ValidateAuthorizationPolicy`, rule by rule, with Istio's messages; plus the CRD limits and
//! meshauthz's refusal of CUSTOM.

use super::{condition, metadata, selector, too_many, values, FieldPath, Findings};
use crate::model::{Action, AuthorizationPolicy, Operation, Rule, Source, CUSTOM_UNSUPPORTED};

const DENY_HTTP_ONLY_WARNING: &str = "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port";

pub(crate) fn validate(f: &mut Findings, policy: &AuthorizationPolicy) {
    let spec = &policy.spec;
    let spec_path = FieldPath::root().field("spec");
    let rules_path = spec_path.field("rules");

    // `rules: []` reaches Istio as a nil list (protobuf has no empty-vs-absent for repeated
    // fields), so it is "without rules" too.
    let no_rules = spec.rules.as_ref().is_none_or(Vec::is_empty);

    metadata::validate(f, &policy.meta, Some(spec.action));
    selector::target_refs(
        f,
        spec.selector.as_ref(),
        spec.target_ref.as_ref(),
        &spec.target_refs,
    );
    selector::workload_selector(f, spec.selector.as_ref());

    if spec.action == Action::Custom {
        f.error(&spec_path.field("action"), CUSTOM_UNSUPPORTED);
        if no_rules {
            f.absent(
                &spec_path,
                "CUSTOM action without `rules` is meaningless as it will never be triggered, \
                 add an empty rule `{}` if you want it be triggered for every request",
            );
        } else if spec.provider.as_deref().unwrap_or("").is_empty() {
            f.absent(
                &spec_path.field("provider").field("name"),
                "`provider.name` must not be empty",
            );
        }
        custom_restrictions(f, policy, &rules_path);
    }
    if spec.provider.is_some() && spec.action != Action::Custom {
        f.error(
            &spec_path.field("provider"),
            format!(
                "`provider` must not be with non CUSTOM action, found {}",
                spec.action.as_str()
            ),
        );
    }
    if spec.action == Action::Deny && no_rules {
        f.absent(
            &spec_path,
            "DENY action without `rules` is meaningless as it will never be triggered, \
             add an empty rule `{}` if you want it be triggered for every request",
        );
    }

    let rules = spec.rules.as_deref().unwrap_or_default();
    too_many(f, &rules_path, rules.len(), 512);
    for (i, rule) in rules.iter().enumerate() {
        let path = rules_path.index(i);
        match rule {
            None => f.error(&path, format!("`rule` must not be nil, found at rule {i}")),
            Some(rule) => validate_rule(f, rule, i, &path, spec.action),
        }
    }
}

fn validate_rule(f: &mut Findings, rule: &Rule, i: usize, path: &FieldPath, action: Action) {
    let mut tcp_in_from = false;
    let mut tcp_in_to = false;
    let mut from_exists = false;
    let mut to_exists = false;

    let from_path = path.field("from");
    if let Some(from) = &rule.from {
        if from.is_empty() {
            f.error(
                &from_path,
                format!("`from` must not be empty, found at rule {i}"),
            );
        }
        too_many(f, &from_path, from.len(), 512);
        for (j, entry) in from.iter().enumerate() {
            let at = from_path.index(j);
            let Some(entry) = entry else {
                f.error(&at, format!("`from` must not be nil, found at rule {i}"));
                continue;
            };
            let Some(source) = &entry.source else {
                f.error(
                    &at.field("source"),
                    format!("`from.source` must not be nil, found at rule {i}"),
                );
                continue;
            };
            from_exists = true;
            tcp_in_from |= validate_source(f, source, i, &at.field("source"));
        }
    }

    let to_path = path.field("to");
    if let Some(to) = &rule.to {
        if to.is_empty() {
            f.error(
                &to_path,
                format!("`to` must not be empty, found at rule {i}"),
            );
        }
        for (j, entry) in to.iter().enumerate() {
            let at = to_path.index(j);
            let Some(entry) = entry else {
                f.error(&at, format!("`to` must not be nil, found at rule {i}"));
                continue;
            };
            let Some(operation) = &entry.operation else {
                f.error(
                    &at.field("operation"),
                    format!("`to.operation` must not be nil, found at rule {i}"),
                );
                continue;
            };
            to_exists = true;
            tcp_in_to |= validate_operation(f, operation, i, &at.field("operation"));
        }
    }

    let when_path = path.field("when");
    let mut cel_cost = 0u64;
    for (j, condition) in rule.when.iter().flatten().enumerate() {
        let at = when_path.index(j);
        match condition {
            // Go reads a nil condition's key as "".
            None => f.error(&at, "`key` must not be empty"),
            Some(c) => cel_cost = cel_cost.saturating_add(condition::validate(f, c, &at)),
        }
    }
    // The CEL expressions of one rule share a cost budget (issue 8).
    if let Err(e) = crate::cel::rule_budget(cel_cost) {
        f.error(&when_path, e);
    }

    // Istio's quirk, kept: `trustDomains` does not count as a TCP field, `when` is not looked at.
    if action == Action::Deny
        && ((from_exists && !to_exists && !tcp_in_from) || (to_exists && !tcp_in_to))
    {
        f.absent_warning(path, DENY_HTTP_ONLY_WARNING);
    }
}

/// What each value of a `source`/`operation` list must be.
#[derive(Clone, Copy)]
enum Check {
    /// Any non-empty string.
    NonEmpty,
    IpOrCidr,
    ServiceAccount,
    TrustDomain,
    Port,
    PathTemplate,
}

/// One list field: its name in the input, its name in Istio's messages (the Go field name), its
/// values and what they must be.
struct ListField<'a> {
    field: &'static str,
    go_name: &'static str,
    values: &'a [String],
    check: Check,
}

impl<'a> ListField<'a> {
    fn new(field: &'static str, go_name: &'static str, values: &'a [String], check: Check) -> Self {
        ListField {
            field,
            go_name,
            values,
            check,
        }
    }
}

fn check_lists(f: &mut Findings, lists: &[ListField<'_>], path: &FieldPath) {
    for list in lists {
        if list.values.is_empty() {
            continue;
        }
        // Paths are built only for a finding (loading cost, issue 12).
        let list_path = || path.field(list.field);
        let name = list.go_name;
        if matches!(list.check, Check::ServiceAccount) && list.values.len() > 16 {
            // Also the CRD's `maxItems: 16`; Istio's message says the same.
            f.error(&list_path(), "may not have more than 16 values");
        }
        for (k, value) in list.values.iter().enumerate() {
            let result = values::non_empty(name, value).and_then(|()| match list.check {
                Check::NonEmpty => Ok(()),
                Check::IpOrCidr => values::ip_or_cidr(value),
                Check::ServiceAccount => values::service_account(name, value),
                Check::TrustDomain => values::trust_domain(name, value),
                Check::Port => values::port(value),
                Check::PathTemplate => values::path_template(name, value),
            });
            if result.is_err() {
                f.check(&list_path().index(k), result);
            }
        }
    }
}

/// Checks `from[j].source`; returns whether it uses a field that also works on TCP.
fn validate_source(f: &mut Findings, s: &Source, i: usize, path: &FieldPath) -> bool {
    let sa_count = s.service_accounts.len() + s.not_service_accounts.len();
    let principal_like =
        s.principals.len() + s.not_principals.len() + s.namespaces.len() + s.not_namespaces.len();
    if sa_count > 0 && principal_like > 0 {
        f.error(
            path,
            format!("cannot set serviceAccounts with namespaces or principals, found at rule {i}"),
        );
    }
    use Check::*;
    let lists = [
        ListField::new("principals", "Principals", &s.principals, NonEmpty),
        ListField::new(
            "notPrincipals",
            "NotPrincipals",
            &s.not_principals,
            NonEmpty,
        ),
        ListField::new(
            "requestPrincipals",
            "RequestPrincipals",
            &s.request_principals,
            NonEmpty,
        ),
        ListField::new(
            "notRequestPrincipals",
            "NotRequestPrincipals",
            &s.not_request_principals,
            NonEmpty,
        ),
        ListField::new("namespaces", "Namespaces", &s.namespaces, NonEmpty),
        ListField::new(
            "notNamespaces",
            "NotNamespaces",
            &s.not_namespaces,
            NonEmpty,
        ),
        ListField::new(
            "serviceAccounts",
            "ServiceAccounts",
            &s.service_accounts,
            ServiceAccount,
        ),
        ListField::new(
            "notServiceAccounts",
            "NotServiceAccounts",
            &s.not_service_accounts,
            ServiceAccount,
        ),
        ListField::new(
            "trustDomains",
            "TrustDomains",
            &s.trust_domains,
            TrustDomain,
        ),
        ListField::new(
            "notTrustDomains",
            "NotTrustDomains",
            &s.not_trust_domains,
            TrustDomain,
        ),
        ListField::new("ipBlocks", "IpBlocks", &s.ip_blocks, IpOrCidr),
        ListField::new("notIpBlocks", "NotIpBlocks", &s.not_ip_blocks, IpOrCidr),
        ListField::new(
            "remoteIpBlocks",
            "RemoteIpBlocks",
            &s.remote_ip_blocks,
            IpOrCidr,
        ),
        ListField::new(
            "notRemoteIpBlocks",
            "NotRemoteIpBlocks",
            &s.not_remote_ip_blocks,
            IpOrCidr,
        ),
    ];
    if lists.iter().all(|l| l.values.is_empty()) {
        f.absent(
            path,
            format!("`from.source` must not be empty, found at rule {i}"),
        );
    }
    check_lists(f, &lists, path);
    // Istio matches `spiffe://` + the value: a value written with the prefix never matches (in
    // `notPrincipals` it then matches everyone).
    for (field, values) in [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
    ] {
        for (k, v) in values.iter().enumerate() {
            if v.starts_with("spiffe://") {
                f.warning(
                    &path.field(field).index(k),
                    format!(
                        "{v:?} can never match: principals are written without `spiffe://` (Istio adds it), e.g. {:?}",
                        v.trim_start_matches("spiffe://")
                    ),
                );
            }
        }
    }
    // Istio's `tcpRulesInFrom` (without trustDomains, as in Istio).
    [
        &s.principals,
        &s.not_principals,
        &s.ip_blocks,
        &s.not_ip_blocks,
        &s.namespaces,
        &s.not_namespaces,
        &s.remote_ip_blocks,
        &s.not_remote_ip_blocks,
        &s.service_accounts,
        &s.not_service_accounts,
    ]
    .iter()
    .any(|l| !l.is_empty())
}

/// Checks `to[j].operation`; returns whether it has `ports`/`notPorts` (the TCP fields).
fn validate_operation(f: &mut Findings, op: &Operation, i: usize, path: &FieldPath) -> bool {
    use Check::*;
    let lists = [
        ListField::new("ports", "Ports", &op.ports, Port),
        ListField::new("notPorts", "NotPorts", &op.not_ports, Port),
        ListField::new("methods", "Methods", &op.methods, NonEmpty),
        ListField::new("notMethods", "NotMethods", &op.not_methods, NonEmpty),
        ListField::new("paths", "Paths", &op.paths, PathTemplate),
        ListField::new("notPaths", "NotPaths", &op.not_paths, PathTemplate),
        ListField::new("hosts", "Hosts", &op.hosts, NonEmpty),
        ListField::new("notHosts", "NotHosts", &op.not_hosts, NonEmpty),
    ];
    if lists.iter().all(|l| l.values.is_empty()) {
        f.absent(
            path,
            format!("`to.operation` must not be empty, found at rule {i}"),
        );
    }
    check_lists(f, &lists, path);
    !op.ports.is_empty() || !op.not_ports.is_empty()
}

/// Fields CUSTOM cannot use (Istio: `<Field> is currently not supported with CUSTOM action`).
fn custom_restrictions(f: &mut Findings, policy: &AuthorizationPolicy, rules_path: &FieldPath) {
    let rules = policy.spec.rules.as_deref().unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        let Some(rule) = rule else { continue };
        let rule_path = rules_path.index(i);
        for (j, from) in rule.from.iter().flatten().enumerate() {
            let Some(s) = from.as_ref().and_then(|e| e.source.as_ref()) else {
                continue;
            };
            let at = rule_path.field("from").index(j).field("source");
            for (field, name, list) in [
                ("namespaces", "From.Namespaces", &s.namespaces),
                ("notNamespaces", "From.NotNamespaces", &s.not_namespaces),
                (
                    "serviceAccounts",
                    "From.ServiceAccounts",
                    &s.service_accounts,
                ),
                (
                    "notServiceAccounts",
                    "From.NotServiceAccounts",
                    &s.not_service_accounts,
                ),
                ("principals", "From.Principals", &s.principals),
                ("notPrincipals", "From.NotPrincipals", &s.not_principals),
                (
                    "requestPrincipals",
                    "From.RequestPrincipals",
                    &s.request_principals,
                ),
                (
                    "notRequestPrincipals",
                    "From.NotRequestPrincipals",
                    &s.not_request_principals,
                ),
                ("trustDomains", "From.TrustDomains", &s.trust_domains),
                (
                    "notTrustDomains",
                    "From.NotTrustDomains",
                    &s.not_trust_domains,
                ),
            ] {
                if !list.is_empty() {
                    f.error(
                        &at.field(field),
                        format!("{name} is currently not supported with CUSTOM action"),
                    );
                }
            }
        }
        for (j, when) in rule.when.iter().flatten().enumerate() {
            let at = rule_path.field("when").index(j);
            match when {
                None => f.error(&at, "when field cannot be nil"),
                Some(c) if condition::unsupported_with_custom(&c.key) => f.error(
                    &at.field("key"),
                    format!("{} is currently not supported with CUSTOM action", c.key),
                ),
                Some(_) => {}
            }
        }
    }
}
