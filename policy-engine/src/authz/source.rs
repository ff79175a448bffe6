//! `rules[].from[].source`: who is calling. Every field is matched against what the connection
//! proved (the peer certificate, the socket) or what a verified JWT said, never a request header.
//!
//! One type per field, its compilation and its match side by side: [`Principal`] (`principals`),
//! [`RequestPrincipal`] (`requestPrincipals`), [`Namespace`] (`namespaces`), [`ServiceAccount`]
//! (`serviceAccounts`), [`TrustDomain`] (`trustDomains`), [`SourceIp`] (`ipBlocks`),
//! [`RemoteIp`] (`remoteIpBlocks`). The `not*` form of each is the same matcher in `notValues`.
//! `when` keys on the source (`source.principal`, ...) use the same types.

use ipnet::IpNet;

use super::rule::{Clause, Ctx, FieldMatcher, Matcher, PathView};
use super::string_match::StrMatch;
use super::values::{cidr, field, FieldCtx, InvalidValue, RuleDropped, Scope};
use crate::attributes::Requirements;
use crate::model::Source;

/// Compiles one `source`: "Source specifies the source identities of a request. Fields in the
/// source are ANDed together."
pub(crate) fn compile(ctx: &FieldCtx<'_>, s: &Source) -> Result<Clause, RuleDropped> {
    use Scope::{Connection, HttpOnly};
    let fields = [
        field(ctx, Connection, &s.principals, &s.not_principals, |v, _| {
            Principal::compile(ctx, v)
        })?,
        field(
            ctx,
            HttpOnly,
            &s.request_principals,
            &s.not_request_principals,
            |v, _| RequestPrincipal::compile(v),
        )?,
        field(ctx, Connection, &s.namespaces, &s.not_namespaces, |v, _| {
            Namespace::compile(v)
        })?,
        field(
            ctx,
            Connection,
            &s.service_accounts,
            &s.not_service_accounts,
            |v, _| ServiceAccount::compile(ctx, v),
        )?,
        field(
            ctx,
            Connection,
            &s.trust_domains,
            &s.not_trust_domains,
            |v, _| TrustDomain::compile(ctx, v),
        )?,
        field(ctx, Connection, &s.ip_blocks, &s.not_ip_blocks, |v, _| {
            SourceIp::compile(v)
        })?,
        field(
            ctx,
            Connection,
            &s.remote_ip_blocks,
            &s.not_remote_ip_blocks,
            |v, _| RemoteIp::compile(v),
        )?,
    ];
    Ok(fields.into_iter().flatten().collect())
}

// ---- principals ---------------------------------------------------------------------------------

/// `principals`, `source.principal`: the peer identity (Envoy `authenticated.principal_name`)
/// against `spiffe://<value>` with Istio's wildcard forms ([`StrMatch::spiffe_principal`]).
#[derive(Debug)]
pub(crate) struct Principal(StrMatch);

impl Principal {
    /// One matcher per trust domain of the bundle (`cluster.local/ns/a/sa/b` also matches the
    /// mesh trust domain and its aliases).
    pub(crate) fn compile(ctx: &FieldCtx<'_>, v: &str) -> Result<Vec<Matcher>, InvalidValue> {
        Ok(ctx
            .trust
            .expand_principal(v)
            .iter()
            .map(|p| Matcher::Principal(Principal(StrMatch::spiffe_principal(p))))
            .collect())
    }

    /// The identity this value matches exactly, if it is exact (the rule index files it there).
    pub(crate) fn exact(&self) -> Option<&str> {
        self.0.exact()
    }

    /// `x*`: the prefix every identity it matches starts with (`spiffe://x`).
    pub(crate) fn prefix(&self) -> Option<&str> {
        match &self.0 {
            StrMatch::Prefix(p) => Some(p),
            _ => None,
        }
    }

    /// `*x`: the suffix every identity it matches ends with.
    pub(crate) fn suffix(&self) -> Option<&str> {
        match &self.0 {
            StrMatch::PrefixThenSuffix { suffix, .. } => Some(suffix),
            _ => None,
        }
    }
}

impl FieldMatcher for Principal {
    fn matches(&self, ctx: &Ctx<'_>, _: PathView) -> bool {
        ctx.principal().is_some_and(|p| self.0.matches(p))
    }
    fn add_requirements(&self, req: &mut Requirements) {
        req.principal = true;
    }
    fn cost(&self) -> u8 {
        1
    }
}

// ---- requestPrincipals --------------------------------------------------------------------------

/// `requestPrincipals`, `request.auth.principal`: the verified JWT's `iss` and `sub`, matched
/// separately (Istio 1.22+).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RequestPrincipal {
    iss: StrMatch,
    sub: StrMatch,
}

impl RequestPrincipal {
    pub(crate) fn compile(v: &str) -> Result<Vec<Matcher>, InvalidValue> {
        Ok(vec![Matcher::RequestPrincipal(Box::new(
            RequestPrincipal::parse(v),
        ))])
    }

    /// Split at the LAST `/`, since the issuer may be a URL (Istio `requestPrincipalGenerator`).
    fn parse(value: &str) -> RequestPrincipal {
        let (iss, sub, found) = match value.rfind('/') {
            Some(i) => (
                value.get(..i).unwrap_or(""),
                value.get(i + 1..).unwrap_or(""),
                true,
            ),
            None => (value, "", false),
        };
        let exact = |s: &str| StrMatch::Exact(s.into());
        let (iss, sub) = if value == "*" {
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
        RequestPrincipal { iss, sub }
    }
}

impl FieldMatcher for RequestPrincipal {
    fn matches(&self, ctx: &Ctx<'_>, _: PathView) -> bool {
        let jwt = ctx.http().and_then(|h| h.jwt);
        let claim = |k: &str| jwt.and_then(|j| j.get(k)).and_then(|v| v.as_str());
        claim("iss").is_some_and(|v| self.iss.matches(v))
            && claim("sub").is_some_and(|v| self.sub.matches(v))
    }
    fn add_requirements(&self, req: &mut Requirements) {
        req.jwt = true;
    }
    fn cost(&self) -> u8 {
        3
    }
}

// ---- namespaces ---------------------------------------------------------------------------------

/// `namespaces`, `source.namespace`: the regex `.*/ns/<value>/.*` over the peer identity, every
/// `*` of the value a wildcard ([`StrMatch::namespace`]).
#[derive(Debug)]
pub(crate) struct Namespace(StrMatch);

impl Namespace {
    pub(crate) fn compile(v: &str) -> Result<Vec<Matcher>, InvalidValue> {
        Ok(vec![Matcher::Namespace(Namespace(StrMatch::namespace(v)))])
    }

    /// The namespace this value names exactly, without `/` (the rule index files it there).
    pub(crate) fn exact(&self) -> Option<&str> {
        match &self.0 {
            StrMatch::Contains(c) => c
                .strip_prefix("/ns/")
                .and_then(|r| r.strip_suffix('/'))
                .filter(|ns| !ns.contains('/')),
            _ => None,
        }
    }

    /// `team-*` (one `*`, at the end): the pattern `*/ns/team-*/*`, so every principal it
    /// matches has, right after some `/ns/`, text starting with `team-` (the rule index files it
    /// there).
    pub(crate) fn prefix(&self) -> Option<&str> {
        match &self.0 {
            StrMatch::Glob(parts) => match parts.as_slice() {
                [first, ns, slash, last]
                    if first.is_empty() && last.is_empty() && &**slash == "/" =>
                {
                    ns.strip_prefix("/ns/")
                }
                _ => None,
            },
            _ => None,
        }
    }
}

impl FieldMatcher for Namespace {
    fn matches(&self, ctx: &Ctx<'_>, _: PathView) -> bool {
        ctx.principal().is_some_and(|p| self.0.matches(p))
    }
    fn add_requirements(&self, req: &mut Requirements) {
        req.principal = true;
    }
    fn cost(&self) -> u8 {
        2
    }
}

// ---- serviceAccounts ----------------------------------------------------------------------------

/// `serviceAccounts`, `source.serviceAccount`: `sa` (in the policy's namespace) or `ns/sa`, as
/// the regex `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?` with `<ns>` and `<sa>` literal.
#[derive(Debug)]
pub(crate) struct ServiceAccount {
    namespace: Box<str>,
    name: Box<str>,
}

impl ServiceAccount {
    pub(crate) fn compile(ctx: &FieldCtx<'_>, v: &str) -> Result<Vec<Matcher>, InvalidValue> {
        let (namespace, name) = v.split_once('/').unwrap_or((ctx.policy_namespace, v));
        Ok(vec![Matcher::ServiceAccount(ServiceAccount {
            namespace: namespace.into(),
            name: name.into(),
        })])
    }
}

impl FieldMatcher for ServiceAccount {
    fn matches(&self, ctx: &Ctx<'_>, _: PathView) -> bool {
        ctx.principal()
            .is_some_and(|p| service_account_matches(p, &self.namespace, &self.name))
    }
    fn add_requirements(&self, req: &mut Requirements) {
        req.principal = true;
    }
    fn cost(&self) -> u8 {
        2
    }
}

/// The regex `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?` with `<ns>` and `<sa>` literal.
fn service_account_matches(principal: &str, namespace: &str, name: &str) -> bool {
    let Some(rest) = principal.strip_prefix("spiffe://") else {
        return false;
    };
    let ns_marker = ["/ns/", namespace, "/"].concat();
    let sa_marker = ["sa/", name].concat();
    let mut from = 1; // `.+` before `/ns/`: at least one character of trust domain.
    while let Some(i) = rest
        .get(from..)
        .and_then(|r| r.find(&ns_marker))
        .map(|i| i + from)
    {
        let tail = rest.get(i + ns_marker.len()..).unwrap_or("");
        let mut at = 0;
        while let Some(j) = tail
            .get(at..)
            .and_then(|t| t.find(&sa_marker))
            .map(|j| j + at)
        {
            // `(.+/|)`: directly after `/ns/<ns>/`, or after at least one character and a `/`.
            let prefix_ok = j == 0 || (j >= 2 && tail.as_bytes().get(j - 1) == Some(&b'/'));
            let after = tail.get(j + sa_marker.len()..).unwrap_or("");
            // `(/.+)?`: end of string, or `/` and at least one more character.
            let suffix_ok = after.is_empty() || (after.starts_with('/') && after.len() > 1);
            if prefix_ok && suffix_ok {
                return true;
            }
            at = j + 1;
        }
        from = i + 1;
    }
    false
}

// ---- trustDomains -------------------------------------------------------------------------------

/// `trustDomains`, `source.trustDomain`: `td` is the prefix `spiffe://td/`, `*` the prefix
/// `spiffe://`, `x*` the regex `spiffe://x[^/]*/.*`, `*x` the regex `spiffe://[^/]*x/.*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TrustDomain {
    Exact(Box<str>),
    Any,
    Prefix(Box<str>),
    Suffix(Box<str>),
}

impl TrustDomain {
    /// One matcher per trust domain of the bundle when the value is one of them.
    pub(crate) fn compile(ctx: &FieldCtx<'_>, v: &str) -> Result<Vec<Matcher>, InvalidValue> {
        Ok(ctx
            .trust
            .expand_trust_domain(v)
            .iter()
            .map(|td| Matcher::TrustDomain(TrustDomain::parse(td)))
            .collect())
    }

    fn parse(v: &str) -> TrustDomain {
        if v == "*" {
            TrustDomain::Any
        } else if let Some(s) = v.strip_prefix('*') {
            TrustDomain::Suffix(s.into())
        } else if let Some(p) = v.strip_suffix('*') {
            TrustDomain::Prefix(p.into())
        } else {
            TrustDomain::Exact(v.into())
        }
    }

    fn matches_principal(&self, principal: &str) -> bool {
        let Some(rest) = principal.strip_prefix("spiffe://") else {
            return false;
        };
        if *self == TrustDomain::Any {
            return true;
        }
        // The trust domain is what precedes the first `/`, which must exist.
        let Some((td, _)) = rest.split_once('/') else {
            return false;
        };
        match self {
            TrustDomain::Exact(t) => td == &**t,
            TrustDomain::Prefix(p) => td.starts_with(&**p),
            TrustDomain::Suffix(s) => td.ends_with(&**s),
            TrustDomain::Any => true,
        }
    }
}

impl FieldMatcher for TrustDomain {
    fn matches(&self, ctx: &Ctx<'_>, _: PathView) -> bool {
        ctx.principal().is_some_and(|p| self.matches_principal(p))
    }
    fn add_requirements(&self, req: &mut Requirements) {
        req.principal = true;
    }
    fn cost(&self) -> u8 {
        2
    }
}

// ---- ipBlocks, remoteIpBlocks -------------------------------------------------------------------

/// `ipBlocks`, `source.ip`: the direct peer of the socket (Envoy `direct_remote_ip`).
#[derive(Debug)]
pub(crate) struct SourceIp(IpNet);

impl SourceIp {
    pub(crate) fn compile(v: &str) -> Result<Vec<Matcher>, InvalidValue> {
        Ok(vec![Matcher::SourceIp(SourceIp(cidr(v)?))])
    }
}

impl FieldMatcher for SourceIp {
    fn matches(&self, ctx: &Ctx<'_>, _: PathView) -> bool {
        ctx.attrs.source_ip.is_some_and(|ip| self.0.contains(&ip))
    }
    fn add_requirements(&self, req: &mut Requirements) {
        req.source_ip = true;
    }
    fn cost(&self) -> u8 {
        0
    }
}

/// `remoteIpBlocks`, `remote.ip`: the client after trusted `X-Forwarded-For` hops or the PROXY
/// protocol (Envoy `remote_ip`).
#[derive(Debug)]
pub(crate) struct RemoteIp(IpNet);

impl RemoteIp {
    pub(crate) fn compile(v: &str) -> Result<Vec<Matcher>, InvalidValue> {
        Ok(vec![Matcher::RemoteIp(RemoteIp(cidr(v)?))])
    }
}

impl FieldMatcher for RemoteIp {
    fn matches(&self, ctx: &Ctx<'_>, _: PathView) -> bool {
        ctx.attrs.remote_ip.is_some_and(|ip| self.0.contains(&ip))
    }
    fn add_requirements(&self, req: &mut Requirements) {
        req.remote_ip = true;
    }
    fn cost(&self) -> u8 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::{service_account_matches, RequestPrincipal, TrustDomain};
    use crate::authz::string_match::StrMatch;

    fn rp(v: &str) -> (StrMatch, StrMatch) {
        let RequestPrincipal { iss, sub } = RequestPrincipal::parse(v);
        (iss, sub)
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

    #[test]
    fn service_account_regex() {
        let p = "spiffe://cluster.local/ns/my-ns/sa/my-sa";
        assert!(service_account_matches(p, "my-ns", "my-sa"));
        assert!(!service_account_matches(
            "spiffe://cluster.local/ns/my-ns/sa/my-sa-suffix",
            "my-ns",
            "my-sa"
        ));
        assert!(service_account_matches(
            "spiffe://cluster.local/ns/my-ns/sa/my-sa/k/v",
            "my-ns",
            "my-sa"
        ));
        assert!(service_account_matches(
            "spiffe://cluster.local/ns/my-ns/k/v/sa/my-sa",
            "my-ns",
            "my-sa"
        ));
        assert!(!service_account_matches(
            "spiffe://cluster.local/ns/my-ns/sa/my-sa/",
            "my-ns",
            "my-sa"
        ));
        assert!(!service_account_matches(
            "spiffe:///ns/my-ns/sa/my-sa",
            "my-ns",
            "my-sa"
        ));
        assert!(!service_account_matches(
            "spiffe://td/ns/myXns/sa/my-sa",
            "my.ns",
            "my-sa"
        ));
    }

    #[test]
    fn trust_domains() {
        let p = "spiffe://cluster.local/ns/a/sa/b";
        assert!(TrustDomain::parse("cluster.local").matches_principal(p));
        assert!(!TrustDomain::parse("cluster").matches_principal(p));
        assert!(TrustDomain::parse("cluster*").matches_principal(p));
        assert!(TrustDomain::parse("*.local").matches_principal(p));
        assert!(TrustDomain::parse("*").matches_principal(p));
        assert!(!TrustDomain::parse("*").matches_principal("cluster.local/ns/a"));
    }
}
