//! The compiled form of a rule and how it is matched (ztunnel's model of Istio's semantics):
//! a rule is `from` clauses (any of) AND `to` clauses (any of) AND `when` conditions (all of); a
//! clause (one `source` or `operation`) is fields (all of); a field is values (any of) and
//! not-values (none of).

use std::borrow::Cow;
use std::cell::Cell;
use std::net::IpAddr;

use ipnet::IpNet;

use super::path_template::PathTemplate;
use super::string_match::StrMatch;
use crate::attributes::{Attributes, HttpAttributes, Requirements};
use crate::cel::CelExpression;
use crate::decision::RuleId;

/// One value of one field, compiled.
#[derive(Debug)]
pub(crate) enum Matcher {
    /// `principals`, `source.principal`: the authenticated peer identity.
    Principal(StrMatch),
    /// `namespaces`, `source.namespace`: a pattern over the peer identity (`.*/ns/<v>/.*`).
    Namespace(StrMatch),
    /// `serviceAccounts`, `source.serviceAccount`.
    ServiceAccount { namespace: Box<str>, name: Box<str> },
    /// `trustDomains`, `source.trustDomain`.
    TrustDomain(TrustDomainMatch),
    /// `ipBlocks`, `source.ip`: the direct peer.
    SourceIp(IpNet),
    /// `remoteIpBlocks`, `remote.ip`: the client after trusted proxies.
    RemoteIp(IpNet),
    /// `destination.ip`.
    DestinationIp(IpNet),
    /// `ports`, `destination.port`.
    Port(u16),
    /// `connection.sni`.
    Sni(StrMatch),
    /// `requestPrincipals`, `request.auth.principal`: JWT `iss` and `sub`, matched separately.
    RequestPrincipal { iss: StrMatch, sub: StrMatch },
    /// `request.auth.claims[a][b]`, `request.auth.audiences` (`aud`), `request.auth.presenter` (`azp`):
    /// a string claim that matches, or a list claim with an element that matches.
    Claim {
        path: Vec<Box<str>>,
        value: StrMatch,
    },
    /// `hosts`: `:authority`, case-insensitive.
    Host(StrMatch),
    /// `methods`: `:method`.
    Method(StrMatch),
    /// `paths`: the path without query (see [`PathView`]).
    Path(StrMatch),
    /// `paths` with `{*}` / `{**}`.
    PathTemplate(PathTemplate),
    /// `request.headers[name]`.
    Header { name: Box<str>, value: StrMatch },
    /// `experimental.envoy.filters.<filter>[<key>]`: a string value, or with `[v]` a list element.
    Metadata {
        filter: Box<str>,
        key: Box<str>,
        value: StrMatch,
        list: bool,
    },
    /// `meshauthz.io/cel`. `on_error` is what a failed evaluation counts as, chosen so that an
    /// error never widens access.
    Cel {
        expression: Box<CelExpression>,
        on_error: bool,
    },
}

/// `trustDomains` forms: `td` is the prefix `spiffe://td/`, `*` the prefix `spiffe://`, `x*` the
/// regex `spiffe://x[^/]*/.*`, `*x` the regex `spiffe://[^/]*x/.*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TrustDomainMatch {
    Exact(Box<str>),
    Any,
    Prefix(Box<str>),
    Suffix(Box<str>),
}

impl TrustDomainMatch {
    pub(crate) fn parse(v: &str) -> TrustDomainMatch {
        if v == "*" {
            TrustDomainMatch::Any
        } else if let Some(s) = v.strip_prefix('*') {
            TrustDomainMatch::Suffix(s.into())
        } else if let Some(p) = v.strip_suffix('*') {
            TrustDomainMatch::Prefix(p.into())
        } else {
            TrustDomainMatch::Exact(v.into())
        }
    }

    fn matches(&self, principal: &str) -> bool {
        let Some(rest) = principal.strip_prefix("spiffe://") else {
            return false;
        };
        if *self == TrustDomainMatch::Any {
            return true;
        }
        // The trust domain is what precedes the first `/`, which must exist.
        let Some((td, _)) = rest.split_once('/') else {
            return false;
        };
        match self {
            TrustDomainMatch::Exact(t) => td == &**t,
            TrustDomainMatch::Prefix(p) => td.starts_with(&**p),
            TrustDomainMatch::Suffix(s) => td.ends_with(&**s),
            TrustDomainMatch::Any => true,
        }
    }
}

/// The regex `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?` with `<ns>` and `<sa>` literal.
fn service_account_matches(principal: &str, namespace: &str, name: &str) -> bool {
    let Some(rest) = principal.strip_prefix("spiffe://") else {
        return false;
    };
    let ns_marker = format!("/ns/{namespace}/");
    let sa_marker = format!("sa/{name}");
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

/// Which path a matcher reads ([`crate::path`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PathView {
    /// The path the application receives, without query: what Istio matches.
    Forwarded,
    /// The forwarded path normalized again (dot segments, unreserved `%XX`, `\`, `//`).
    Normalized,
}

/// A field: `(values empty OR any value matches) AND NOT (any not-value matches)`.
#[derive(Debug, Default)]
pub(crate) struct Field {
    pub(crate) values: Vec<Matcher>,
    pub(crate) not_values: Vec<Matcher>,
    /// A DENY or AUDIT field that reads the path: it matches if it matches on the forwarded path
    /// OR on the normalized path, so that extra normalization only ever tightens.
    pub(crate) also_normalized: bool,
}

impl Field {
    pub(crate) fn is_empty(&self) -> bool {
        self.values.is_empty() && self.not_values.is_empty()
    }

    /// Whether a matcher of this field reads the request path.
    pub(crate) fn reads_path(&self) -> bool {
        self.values
            .iter()
            .chain(&self.not_values)
            .any(Matcher::reads_path)
    }

    fn matches(&self, ctx: &Ctx<'_>) -> bool {
        self.matches_on(ctx, PathView::Forwarded)
            || (self.also_normalized
                && ctx.normalized.is_some()
                && self.matches_on(ctx, PathView::Normalized))
    }

    /// The whole field (values and not-values) on one view of the path: evaluating `notPaths` on
    /// each path separately keeps the OR of the two a tightening for DENY.
    fn matches_on(&self, ctx: &Ctx<'_>, view: PathView) -> bool {
        (self.values.is_empty() || self.values.iter().any(|m| m.matches(ctx, view)))
            && !self.not_values.iter().any(|m| m.matches(ctx, view))
    }

    /// Cheap matchers first, CEL last: fields are ANDed, so the order only changes the cost.
    pub(crate) fn cost(&self) -> u8 {
        self.values
            .iter()
            .chain(&self.not_values)
            .map(Matcher::cost)
            .max()
            .unwrap_or(0)
    }
}

/// One `source` or `operation`: all its fields.
pub(crate) type Clause = Vec<Field>;

#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub(crate) id: RuleId,
    /// `from` clauses, any of; empty means no `from` (any source).
    pub(crate) from: Vec<Clause>,
    /// `to` clauses, any of; empty means no `to` (any operation).
    pub(crate) to: Vec<Clause>,
    /// `when` conditions, all of.
    pub(crate) when: Vec<Field>,
}

fn clause_matches(clause: &Clause, ctx: &Ctx<'_>) -> bool {
    clause.iter().all(|f| f.matches(ctx))
}

impl CompiledRule {
    pub(crate) fn matches(&self, ctx: &Ctx<'_>) -> bool {
        (self.from.is_empty() || self.from.iter().any(|c| clause_matches(c, ctx)))
            && (self.to.is_empty() || self.to.iter().any(|c| clause_matches(c, ctx)))
            && self.when.iter().all(|f| f.matches(ctx))
    }

    pub(crate) fn reads_normalized_path(&self) -> bool {
        let mut fields = self.from.iter().chain(&self.to).flatten().chain(&self.when);
        fields.any(|f| f.also_normalized)
    }

    pub(crate) fn add_requirements(&self, req: &mut Requirements) {
        let fields = self.from.iter().chain(&self.to).flatten().chain(&self.when);
        for m in fields.flat_map(|f| f.values.iter().chain(&f.not_values)) {
            m.add_requirements(req);
        }
    }
}

/// Per-check state: the attributes, the two paths computed once, the CEL error count.
pub(crate) struct Ctx<'a> {
    pub(crate) attrs: &'a Attributes<'a>,
    /// The forwarded path without query ([`crate::path::url_path`]).
    forwarded: Option<&'a str>,
    /// The normalized path, only when some DENY/AUDIT field reads it and it differs from the
    /// forwarded one.
    normalized: Option<String>,
    pub(crate) cel_errors: Cell<u32>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(attrs: &'a Attributes<'a>, need_normalized: bool) -> Ctx<'a> {
        let raw = attrs.http.as_ref().and_then(|h| h.path);
        let forwarded = raw.map(crate::path::url_path);
        let normalized = match (need_normalized, forwarded) {
            (true, Some(f)) => match crate::path::normalize(f) {
                Cow::Owned(n) if n != f => Some(n),
                _ => None,
            },
            _ => None,
        };
        Ctx {
            attrs,
            forwarded,
            normalized,
            cel_errors: Cell::new(0),
        }
    }

    fn path(&self, view: PathView) -> Option<&str> {
        match view {
            PathView::Forwarded => self.forwarded,
            PathView::Normalized => self.normalized.as_deref().or(self.forwarded),
        }
    }

    /// The attributes a CEL expression sees for one view of the path.
    fn cel_attrs(&self, view: PathView) -> Cow<'_, Attributes<'_>> {
        match (view, self.normalized.as_deref(), self.attrs.http.as_ref()) {
            (PathView::Normalized, Some(n), Some(http)) => Cow::Owned(Attributes {
                http: Some(HttpAttributes {
                    path: Some(n),
                    ..http.clone()
                }),
                ..self.attrs.clone()
            }),
            _ => Cow::Borrowed(self.attrs),
        }
    }

    fn principal(&self) -> Option<&'a str> {
        self.attrs.principal.filter(|p| !p.is_empty())
    }
}

fn ip_in(net: &IpNet, ip: Option<IpAddr>) -> bool {
    ip.is_some_and(|ip| net.contains(&ip))
}

/// `jwt_authn` turns these space-delimited string claims into lists (`scope`, `permission`).
const SPACE_DELIMITED_CLAIMS: [&str; 2] = ["scope", "permission"];

fn claim_matches(jwt: Option<&serde_json::Value>, path: &[Box<str>], m: &StrMatch) -> bool {
    let Some(mut v) = jwt else {
        return false;
    };
    for key in path {
        match v.get(&**key) {
            Some(next) => v = next,
            None => return false,
        }
    }
    let top_level_split = path.len() == 1
        && path
            .first()
            .is_some_and(|k| SPACE_DELIMITED_CLAIMS.contains(&&**k));
    match v {
        serde_json::Value::String(s) if top_level_split => s.split(' ').any(|part| m.matches(part)),
        serde_json::Value::String(s) => m.matches(s),
        serde_json::Value::Array(items) => items
            .iter()
            .any(|i| i.as_str().is_some_and(|s| m.matches(s))),
        _ => false,
    }
}

impl Matcher {
    pub(crate) fn matches(&self, ctx: &Ctx<'_>, view: PathView) -> bool {
        let a = ctx.attrs;
        let http = a.http.as_ref();
        match self {
            Matcher::Principal(m) | Matcher::Namespace(m) => {
                ctx.principal().is_some_and(|p| m.matches(p))
            }
            Matcher::ServiceAccount { namespace, name } => ctx
                .principal()
                .is_some_and(|p| service_account_matches(p, namespace, name)),
            Matcher::TrustDomain(m) => ctx.principal().is_some_and(|p| m.matches(p)),
            Matcher::SourceIp(net) => ip_in(net, a.source_ip),
            Matcher::RemoteIp(net) => ip_in(net, a.remote_ip),
            Matcher::DestinationIp(net) => ip_in(net, a.destination_ip),
            Matcher::Port(p) => a.destination_port == Some(*p),
            Matcher::Sni(m) => a.sni.is_some_and(|s| m.matches(s)),
            Matcher::RequestPrincipal { iss, sub } => {
                let jwt = http.and_then(|h| h.jwt);
                let field = |k: &str| jwt.and_then(|j| j.get(k)).and_then(|v| v.as_str());
                field("iss").is_some_and(|v| iss.matches(v))
                    && field("sub").is_some_and(|v| sub.matches(v))
            }
            Matcher::Claim { path, value } => claim_matches(http.and_then(|h| h.jwt), path, value),
            Matcher::Host(m) => http
                .and_then(|h| h.host)
                .is_some_and(|h| m.matches_ignore_case(h)),
            Matcher::Method(m) => http.and_then(|h| h.method).is_some_and(|v| m.matches(v)),
            Matcher::Path(m) => ctx.path(view).is_some_and(|p| m.matches(p)),
            Matcher::PathTemplate(t) => ctx.path(view).is_some_and(|p| t.matches(p)),
            // Envoy RBAC: a header sent several times matches when any one of its values does.
            Matcher::Header { name, value } => {
                http.is_some_and(|h| h.header_values(name).any(|v| value.matches(v)))
            }
            Matcher::Metadata {
                filter,
                key,
                value,
                list,
            } => {
                let v = a
                    .dynamic_metadata
                    .and_then(|md| md.get(&**filter))
                    .and_then(|f| f.get(&**key));
                match (v, list) {
                    (Some(serde_json::Value::Array(items)), true) => items
                        .iter()
                        .any(|i| i.as_str().is_some_and(|s| value.matches(s))),
                    (Some(serde_json::Value::String(s)), false) => value.matches(s),
                    _ => false,
                }
            }
            Matcher::Cel {
                expression,
                on_error,
            } => match expression.evaluate(&ctx.cel_attrs(view)) {
                Ok(b) => b,
                Err(_) => {
                    ctx.cel_errors.set(ctx.cel_errors.get().saturating_add(1));
                    *on_error
                }
            },
        }
    }

    fn reads_path(&self) -> bool {
        let mut req = Requirements::default();
        self.add_requirements(&mut req);
        req.path
    }

    /// Relative cost, to order the fields of a clause.
    fn cost(&self) -> u8 {
        match self {
            Matcher::Port(_)
            | Matcher::SourceIp(_)
            | Matcher::RemoteIp(_)
            | Matcher::DestinationIp(_) => 0,
            Matcher::Principal(_)
            | Matcher::Host(_)
            | Matcher::Method(_)
            | Matcher::Path(_)
            | Matcher::Sni(_) => 1,
            Matcher::Namespace(_)
            | Matcher::TrustDomain(_)
            | Matcher::Header { .. }
            | Matcher::PathTemplate(_)
            | Matcher::ServiceAccount { .. } => 2,
            Matcher::RequestPrincipal { .. } | Matcher::Claim { .. } | Matcher::Metadata { .. } => {
                3
            }
            Matcher::Cel { .. } => 9,
        }
    }

    fn add_requirements(&self, req: &mut Requirements) {
        match self {
            Matcher::Principal(_)
            | Matcher::Namespace(_)
            | Matcher::ServiceAccount { .. }
            | Matcher::TrustDomain(_) => {
                req.principal = true;
            }
            Matcher::SourceIp(_) => req.source_ip = true,
            Matcher::RemoteIp(_) => req.remote_ip = true,
            Matcher::DestinationIp(_) => req.destination_ip = true,
            Matcher::Port(_) => req.destination_port = true,
            Matcher::Sni(_) => req.sni = true,
            Matcher::RequestPrincipal { .. } | Matcher::Claim { .. } => req.jwt = true,
            Matcher::Host(_) => req.host = true,
            Matcher::Method(_) => req.method = true,
            Matcher::Path(_) | Matcher::PathTemplate(_) => req.path = true,
            Matcher::Header { name, .. } => req.add_header(name),
            Matcher::Metadata { filter, .. } => req.add_dynamic_metadata(filter),
            Matcher::Cel { expression, .. } => expression.add_requirements(req),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{service_account_matches, TrustDomainMatch};

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
        assert!(TrustDomainMatch::parse("cluster.local").matches(p));
        assert!(!TrustDomainMatch::parse("cluster").matches(p));
        assert!(TrustDomainMatch::parse("cluster*").matches(p));
        assert!(TrustDomainMatch::parse("*.local").matches(p));
        assert!(TrustDomainMatch::parse("*").matches(p));
        assert!(!TrustDomainMatch::parse("*").matches("cluster.local/ns/a"));
    }
}
