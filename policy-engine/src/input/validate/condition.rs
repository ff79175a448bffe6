//! `rules[i].when[j]`: the key must be one Istio knows (`ValidateAttribute`), and the values must
//! suit it (IPs for `*.ip`, ports for `destination.port`, ...). The meshauthz extension key
//! `meshauthz.io/cel` holds CEL expressions, compiled here so a bad one is refused at load time.

use super::values;
use super::{FieldPath, Findings};
use crate::cel::CEL_CONDITION_KEY;
use crate::model::Condition;

/// What the values of a key must look like.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ValueKind {
    Any,
    IpOrCidr,
    Port,
    ServiceAccount,
    TrustDomain,
    Cel,
}

/// The kind of value `key` takes, or why `key` is not accepted. The order of the checks is
/// Istio's (`security.ValidateAttribute`), so the messages are the same.
fn classify(key: &str) -> Result<ValueKind, String> {
    use ValueKind::*;
    if key == CEL_CONDITION_KEY {
        return Ok(Cel);
    }
    if key.starts_with("request.headers") {
        return map_key(key, "request.headers", false).map(|()| Any);
    }
    if key.starts_with("request.experimental.inline.headers") {
        return Err(format!(
            "attribute {key} is not supported by meshauthz (use request.headers[...])"
        ));
    }
    match key {
        "source.ip" | "remote.ip" | "destination.ip" => return Ok(IpOrCidr),
        "source.namespace"
        | "source.principal"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => return Ok(Any),
        "source.serviceAccount" => return Ok(ServiceAccount),
        "source.trustDomain" => return Ok(TrustDomain),
        "destination.port" => return Ok(Port),
        _ => {}
    }
    if key.starts_with("request.auth.claims") {
        return map_key(key, "request.auth.claims", true).map(|()| Any);
    }
    if key.starts_with("experimental.envoy.filters.") {
        return map_key(key, "experimental.envoy.filters.", false).map(|()| Any);
    }
    if key == "destination.namespace" {
        return Err(format!(
            "attribute {key} is replaced by the metadata.namespace"
        ));
    }
    if key.starts_with("destination.labels") {
        return Err(format!(
            "attribute {key} is replaced by the workload selector"
        ));
    }
    if key == "destination.name" || key == "destination.user" {
        return Err(format!(
            "deprecated attribute {key}: only supported in v1alpha1"
        ));
    }
    Err(format!("unknown attribute: {key}"))
}

/// Istio's `validateMapKey` (`a[b]`), made exact: Istio accepts `request.headersX[y]` or
/// `request.headers[a]b]` here, then its builder cannot translate the key and silently drops
/// the rule, which for DENY widens access. So the name part must be exactly `prefix[...]`, with
/// one non-empty bracket (several for claims: `request.auth.claims[a][b]`).
fn map_key(key: &str, prefix: &str, nested: bool) -> Result<(), String> {
    let bad = || Err(format!("bad key ({key}): should have format a[b]"));
    // Istio's own check first.
    let Some(open) = key.find('[') else {
        return bad();
    };
    if !key.ends_with(']') || open == 0 || open + 2 >= key.len() {
        return bad();
    }
    let Some(rest) = key.strip_prefix(prefix) else {
        return bad();
    };
    let brackets = if prefix.ends_with('.') {
        // experimental.envoy.filters.<filter>[<key>]: a non-empty filter name first.
        match rest.find('[') {
            Some(i) if i > 0 => rest.get(i..).unwrap_or_default(),
            _ => return bad(),
        }
    } else {
        rest
    };
    let Some(inner) = brackets.strip_prefix('[').and_then(|b| b.strip_suffix(']')) else {
        return bad();
    };
    let parts: Vec<&str> = inner.split("][").collect();
    let well_formed = parts
        .iter()
        .all(|p| !p.is_empty() && !p.contains('[') && !p.contains(']'));
    if !well_formed || (!nested && parts.len() != 1) {
        return bad();
    }
    Ok(())
}

/// One `when` entry at `path` (`spec.rules[i].when[j]`). Returns the cost bound of its CEL
/// expressions that compiled (the rule's budget is checked on the sum: each expression is
/// compiled once here).
pub(super) fn validate(f: &mut Findings, condition: &Condition, path: &FieldPath) -> u64 {
    let mut cel_cost = 0u64;
    let key = condition.key.as_str();
    if key.is_empty() {
        f.absent(&path.field("key"), "`key` must not be empty");
        return cel_cost;
    }
    if condition.values.is_empty() && condition.not_values.is_empty() {
        f.absent(
            path,
            format!("at least one of `values` or `notValues` must be set for key {key}"),
        );
        return cel_cost;
    }
    for (list, label, field) in [
        (&condition.values, "value", "values"),
        (&condition.not_values, "notValue", "notValues"),
    ] {
        let prefix = || format!("invalid `{label}` for `key` {key}");
        let kind = match classify(key) {
            Ok(kind) => kind,
            // Istio checks the key once per list, even an empty one: it reports twice.
            Err(e) => {
                f.error(&path.field("key"), format!("{}: {e}", prefix()));
                continue;
            }
        };
        if kind == ValueKind::ServiceAccount && list.len() > 16 {
            f.error(
                &path.field(field),
                format!("{}: may not have more than 16 values", prefix()),
            );
        }
        for (k, value) in list.iter().enumerate() {
            let result = values::non_empty(key, value).and_then(|()| match kind {
                ValueKind::Any => Ok(()),
                ValueKind::IpOrCidr => values::ip_or_cidr(value),
                ValueKind::Port => values::port(value),
                ValueKind::ServiceAccount => values::service_account(key, value),
                ValueKind::TrustDomain => values::trust_domain(key, value),
                ValueKind::Cel => f.cel_expression(value).map(|cost| {
                    cel_cost = cel_cost.saturating_add(cost);
                }),
            });
            if let Err(e) = result {
                f.error(&path.field(field).index(k), format!("{}: {e}", prefix()));
            }
        }
    }
    cel_cost
}

/// Whether a `when` key is one CUSTOM cannot use (Istio: `<key> is currently not supported with
/// CUSTOM action`).
pub(super) fn unsupported_with_custom(key: &str) -> bool {
    matches!(
        key,
        "source.namespace" | "source.serviceAccount" | "source.principal" | "source.trustDomain"
    ) || key.starts_with("request.auth.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys() {
        for key in [
            "request.headers[x-foo]",
            "source.ip",
            "remote.ip",
            "source.namespace",
            "source.principal",
            "source.serviceAccount",
            "source.trustDomain",
            "request.auth.principal",
            "request.auth.audiences",
            "request.auth.presenter",
            "request.auth.claims[iss]",
            "request.auth.claims[nested1][nested2]",
            "destination.ip",
            "destination.port",
            "connection.sni",
            "experimental.envoy.filters.a.b[c]",
            CEL_CONDITION_KEY,
        ] {
            assert!(classify(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn rejected_keys_with_istio_messages() {
        let err = |k: &str| classify(k).err().unwrap_or_default();
        assert_eq!(err("source.foo"), "unknown attribute: source.foo");
        assert_eq!(
            err("request.headers"),
            "bad key (request.headers): should have format a[b]"
        );
        assert_eq!(
            err("request.headers[]"),
            "bad key (request.headers[]): should have format a[b]"
        );
        assert!(err("request.headersX[a]").starts_with("bad key"));
        assert!(err("request.headers[a][b]").starts_with("bad key"));
        assert!(err("request.auth.claims[a][]").starts_with("bad key"));
        assert!(err("experimental.envoy.filters.[c]").starts_with("bad key"));
        assert_eq!(
            err("destination.namespace"),
            "attribute destination.namespace is replaced by the metadata.namespace"
        );
        assert_eq!(
            err("destination.labels[app]"),
            "attribute destination.labels[app] is replaced by the workload selector"
        );
        assert_eq!(
            err("destination.name"),
            "deprecated attribute destination.name: only supported in v1alpha1"
        );
        assert_eq!(
            err("destination.user"),
            "deprecated attribute destination.user: only supported in v1alpha1"
        );
    }
}
