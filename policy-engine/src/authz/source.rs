//! `rules[].from[].source`: who is calling. Every field is matched against what the connection
//! proved (the peer certificate, the socket) or what a verified JWT said, never a request header.

use super::rule::{Clause, Matcher, TrustDomainMatch};
use super::string_match::StrMatch;
use super::values::{cidr, field, FieldCtx, RuleDropped};
use crate::model::Source;

/// `requestPrincipals` value -> matchers on the JWT `iss` and `sub`, split at the LAST `/` since
/// the issuer may be a URL (Istio `requestPrincipalGenerator`, 1.22+).
pub(crate) fn request_principal(value: &str) -> Matcher {
    let (iss, sub, found) = match value.rfind('/') {
        Some(i) => (
            value.get(..i).unwrap_or(""),
            value.get(i + 1..).unwrap_or(""),
            true,
        ),
        None => (value, "", false),
    };
    let exact = |s: &str| StrMatch::Exact(s.into());
    let (iss_m, sub_m) = if value == "*" {
        (StrMatch::NonEmpty, StrMatch::NonEmpty)
    } else if value.starts_with('*') {
        if found {
            let iss_m = if iss == "*" {
                StrMatch::NonEmpty
            } else {
                StrMatch::Suffix(iss.trim_start_matches('*').into())
            };
            (iss_m, exact(sub))
        } else {
            (
                StrMatch::NonEmpty,
                StrMatch::Suffix(value.trim_start_matches('*').into()),
            )
        }
    } else if value.ends_with('*') {
        if found {
            let sub_m = if sub == "*" {
                StrMatch::NonEmpty
            } else {
                StrMatch::Prefix(sub.trim_end_matches('*').into())
            };
            (exact(iss), sub_m)
        } else {
            (
                StrMatch::Prefix(value.trim_end_matches('*').into()),
                StrMatch::NonEmpty,
            )
        }
    } else {
        (exact(iss), exact(sub))
    };
    Matcher::RequestPrincipal {
        iss: iss_m,
        sub: sub_m,
    }
}

/// `principals` / `source.principal` value (after trust-domain alias expansion).
pub(crate) fn principals(ctx: &FieldCtx<'_>, v: &str) -> Vec<Matcher> {
    ctx.trust
        .expand_principal(v)
        .iter()
        .map(|p| Matcher::Principal(StrMatch::spiffe_principal(p)))
        .collect()
}

/// `serviceAccounts` / `source.serviceAccount` value: `sa` or `namespace/sa`.
pub(crate) fn service_account(ctx: &FieldCtx<'_>, v: &str) -> Matcher {
    let (namespace, name) = v.split_once('/').unwrap_or((ctx.policy_namespace, v));
    Matcher::ServiceAccount {
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// `trustDomains` / `source.trustDomain` value (a mesh trust domain expands to its aliases).
pub(crate) fn trust_domains(ctx: &FieldCtx<'_>, v: &str) -> Vec<Matcher> {
    ctx.trust
        .expand_trust_domain(v)
        .iter()
        .map(|td| Matcher::TrustDomain(TrustDomainMatch::parse(td)))
        .collect()
}

/// Compiles one `source`; its fields are ANDed.
pub(crate) fn compile(ctx: &FieldCtx<'_>, s: &Source) -> Result<Clause, RuleDropped> {
    let one = |m: Matcher| Ok(vec![m]);
    let fields = [
        field(ctx, false, &s.principals, &s.not_principals, |v, _| {
            Ok(principals(ctx, v))
        })?,
        field(
            ctx,
            true,
            &s.request_principals,
            &s.not_request_principals,
            |v, _| one(request_principal(v)),
        )?,
        field(ctx, false, &s.namespaces, &s.not_namespaces, |v, _| {
            one(Matcher::Namespace(StrMatch::namespace(v)))
        })?,
        field(
            ctx,
            false,
            &s.service_accounts,
            &s.not_service_accounts,
            |v, _| one(service_account(ctx, v)),
        )?,
        field(
            ctx,
            false,
            &s.trust_domains,
            &s.not_trust_domains,
            |v, _| Ok(trust_domains(ctx, v)),
        )?,
        field(ctx, false, &s.ip_blocks, &s.not_ip_blocks, |v, _| {
            one(Matcher::SourceIp(cidr(v)?))
        })?,
        field(
            ctx,
            false,
            &s.remote_ip_blocks,
            &s.not_remote_ip_blocks,
            |v, _| one(Matcher::RemoteIp(cidr(v)?)),
        )?,
    ];
    Ok(fields.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::request_principal;
    use crate::authz::rule::Matcher;
    use crate::authz::string_match::StrMatch;

    fn rp(v: &str) -> (StrMatch, StrMatch) {
        match request_principal(v) {
            Matcher::RequestPrincipal { iss, sub } => (iss, sub),
            _ => (StrMatch::Present, StrMatch::Present),
        }
    }

    #[test]
    fn istio_request_principal_table() {
        use StrMatch::*;
        assert_eq!(rp("*"), (NonEmpty, NonEmpty));
        assert_eq!(rp("foo*"), (Prefix("foo".into()), NonEmpty));
        assert_eq!(rp("*foo"), (NonEmpty, Suffix("foo".into())));
        assert_eq!(rp("foo/*"), (Exact("foo".into()), NonEmpty));
        assert_eq!(rp("foo/bar*"), (Exact("foo".into()), Prefix("bar".into())));
        assert_eq!(rp("*/foo"), (NonEmpty, Exact("foo".into())));
        assert_eq!(rp("*bar/foo"), (Suffix("bar".into()), Exact("foo".into())));
        assert_eq!(rp("foo/bar"), (Exact("foo".into()), Exact("bar".into())));
        assert_eq!(
            rp("https://example.com/*"),
            (Exact("https://example.com".into()), NonEmpty)
        );
        assert_eq!(
            rp("requestPrincipals"),
            (Exact("requestPrincipals".into()), Exact("".into()))
        );
    }
}
