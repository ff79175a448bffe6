//! `rules[].when[]`: conditions on Istio's attribute keys, plus the meshauthz CEL extension.
//!
//! Keys on the source and the operation reuse their field's type (`source.principal` is
//! [`super::source::Principal`], `destination.port` is [`super::operation::Port`], ...). The
//! keys with no `source`/`operation` field have their type here, compilation and match side by
//! side: [`DestinationIp`], [`Sni`], [`Claim`] (`request.auth.claims[..]`, `audiences`,
//! `presenter`), [`Header`] (`request.headers[..]`), [`Metadata`]
//! (`experimental.envoy.filters.*`), [`Cel`] (`meshauthz.io/cel`).

use std::rc::Rc;

use ipnet::IpNet;

use super::operation::Port;
use super::rule::{Ctx, Field, FieldMatcher, Matcher, PathView};
use super::source::{
    Namespace, Principal, RemoteIp, RequestPrincipal, ServiceAccount, SourceIp, TrustDomain,
};
use super::string_match::StrMatch;
use super::values::{cidr, field, FieldCtx, InvalidValue, Polarity, RuleDropped, Scope};
use crate::attributes::{RepeatedHeaders, Requirements};
use crate::cel::{CelExpression, CEL_CONDITION_KEY};
use crate::model::{Action, Condition};

/// `a[b][c]` -> `["b", "c"]` after `prefix` (Istio `extractNameInNestedBrackets`).
pub(crate) fn bracketed(rest: &str) -> Option<Vec<&str>> {
    let inner = rest.strip_prefix('[')?.strip_suffix(']')?;
    let parts: Vec<&str> = inner.split("][").collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || p.contains('[') || p.contains(']'))
    {
        return None;
    }
    Some(parts)
}

/// Compiles one condition. An unknown key drops the rule for every action (Istio's
/// `model.New` fails; validation rejects such keys anyway).
pub(crate) fn compile(ctx: &FieldCtx<'_>, c: &Condition) -> Result<Option<Field>, RuleDropped> {
    use Scope::{Connection, HttpOnly};
    let key = c.key.as_str();
    let (v, nv) = (&c.values, &c.not_values);
    match key {
        "source.ip" => field(ctx, Connection, v, nv, |x, _| SourceIp::compile(x)),
        "remote.ip" => field(ctx, Connection, v, nv, |x, _| RemoteIp::compile(x)),
        "source.namespace" => field(ctx, Connection, v, nv, |x, _| Namespace::compile(x)),
        "source.principal" => field(ctx, Connection, v, nv, |x, _| Principal::compile(ctx, x)),
        "source.serviceAccount" => field(ctx, Connection, v, nv, |x, _| {
            ServiceAccount::compile(ctx, x)
        }),
        "source.trustDomain" => field(ctx, Connection, v, nv, |x, _| TrustDomain::compile(ctx, x)),
        "destination.ip" => field(ctx, Connection, v, nv, |x, _| DestinationIp::compile(x)),
        "destination.port" => field(ctx, Connection, v, nv, |x, _| Port::compile(x)),
        "connection.sni" => field(ctx, Connection, v, nv, |x, _| Sni::compile(x)),
        "request.auth.principal" => {
            field(ctx, HttpOnly, v, nv, |x, _| RequestPrincipal::compile(x))
        }
        "request.auth.audiences" => field(ctx, HttpOnly, v, nv, |x, _| Claim::compile(&["aud"], x)),
        "request.auth.presenter" => field(ctx, HttpOnly, v, nv, |x, _| Claim::compile(&["azp"], x)),
        CEL_CONDITION_KEY => Cel::compile_field(ctx, v, nv),
        _ => {
            if let Some(rest) = key.strip_prefix("request.headers") {
                let name = match bracketed(rest).as_deref() {
                    Some([name]) => name.to_ascii_lowercase(),
                    _ => return Err(RuleDropped),
                };
                field(ctx, HttpOnly, v, nv, |x, polarity| {
                    Header::compile(&name, x, Header::strict_needs_both(ctx.action, polarity))
                })
            } else if let Some(rest) = key.strip_prefix("request.auth.claims") {
                let Some(path) = bracketed(rest) else {
                    return Err(RuleDropped);
                };
                field(ctx, HttpOnly, v, nv, |x, _| Claim::compile(&path, x))
            } else if let Some(rest) = key.strip_prefix("experimental.") {
                let Some((filter, k)) = rest.strip_suffix(']').and_then(|r| r.split_once('['))
                else {
                    return Err(RuleDropped);
                };
                field(ctx, Connection, v, nv, |x, _| {
                    Metadata::compile(filter, k, x)
                })
            } else {
                Err(RuleDropped)
            }
        }
    }
}

// ---- destination.ip -------------------------------------------------------------------------------

/// `destination.ip`: the local address the connection arrived on.
#[derive(Debug)]
pub(crate) struct DestinationIp(IpNet);

impl DestinationIp {
    fn compile(v: &str) -> Result<Vec<Matcher>, InvalidValue> {
        Ok(vec![Matcher::DestinationIp(DestinationIp(cidr(v)?))])
    }
}

impl FieldMatcher for DestinationIp {
    fn matches(&self, ctx: &Ctx<'_>, _: PathView) -> bool {
        ctx.attrs
            .destination_ip
            .is_some_and(|ip| self.0.contains(&ip))
    }
    fn add_requirements(&self, req: &mut Requirements) {
        req.destination_ip = true;
    }
    fn cost(&self) -> u8 {
        0
    }
}

// ---- connection.sni -------------------------------------------------------------------------------

/// `connection.sni`: the TLS server name the client requested.
#[derive(Debug)]
pub(crate) struct Sni(StrMatch);

impl Sni {
    fn compile(v: &str) -> Result<Vec<Matcher>, InvalidValue> {
        Ok(vec![Matcher::Sni(Sni(StrMatch::istio(v)))])
    }
}

impl FieldMatcher for Sni {
    fn matches(&self, ctx: &Ctx<'_>, _: PathView) -> bool {
        ctx.attrs.sni.is_some_and(|s| self.0.matches(s))
    }
    fn add_requirements(&self, req: &mut Requirements) {
        req.sni = true;
    }
    fn cost(&self) -> u8 {
        1
    }
}

// ---- request.auth.claims, audiences, presenter ----------------------------------------------------

/// `request.auth.claims[a][b]`, `request.auth.audiences` (`aud`), `request.auth.presenter`
/// (`azp`): a string claim that matches, or a list claim with an element that matches.
#[derive(Debug)]
pub(crate) struct Claim {
    path: Vec<Box<str>>,
    value: StrMatch,
}

/// `jwt_authn` turns these space-delimited string claims into lists (`scope`, `permission`).
const SPACE_DELIMITED_CLAIMS: [&str; 2] = ["scope", "permission"];

impl Claim {
    fn compile(path: &[&str], v: &str) -> Result<Vec<Matcher>, InvalidValue> {
        Ok(vec![Matcher::Claim(Box::new(Claim {
            path: path.iter().map(|&k| k.into()).collect(),
            value: StrMatch::istio(v),
        }))])
    }
}

impl FieldMatcher for Claim {
    fn matches(&self, ctx: &Ctx<'_>, _: PathView) -> bool {
        let Some(mut v) = ctx.http().and_then(|h| h.jwt) else {
            return false;
        };
        for key in &self.path {
            match v.get(&**key) {
                Some(next) => v = next,
                None => return false,
            }
        }
        let split = matches!(&*self.path, [k] if SPACE_DELIMITED_CLAIMS.contains(&&**k));
        match v {
            serde_json::Value::String(s) if split => s.split(' ').any(|p| self.value.matches(p)),
            serde_json::Value::String(s) => self.value.matches(s),
            serde_json::Value::Array(items) => items
                .iter()
                .any(|i| i.as_str().is_some_and(|s| self.value.matches(s))),
            _ => false,
        }
    }
    fn add_requirements(&self, req: &mut Requirements) {
        req.jwt = true;
    }
    fn cost(&self) -> u8 {
        3
    }
}

// ---- request.headers[name] ------------------------------------------------------------------------

/// `request.headers[name]`: `*` means present (even empty). A header sent several times is read
/// as [`RepeatedHeaders`] says: Envoy's RBAC reads it one way or the other depending on its
/// release, the module takes the stricter reading for the rule's action.
#[derive(Debug)]
pub(crate) struct Header {
    name: Box<str>,
    value: StrMatch,
    /// Under [`RepeatedHeaders::Strict`]: the matcher matches only when both readings do (a value
    /// of an ALLOW rule, a `notValues` entry of a DENY/AUDIT rule), else when either does.
    strict_both: bool,
}

impl Header {
    fn compile(name: &str, v: &str, strict_both: bool) -> Result<Vec<Matcher>, InvalidValue> {
        Ok(vec![Matcher::Header(Box::new(Header {
            name: name.into(),
            value: StrMatch::header(v),
            strict_both,
        }))])
    }

    /// The stricter reading: the one that makes the rule match less for an ALLOW and more for a
    /// DENY or AUDIT. A `notValues` entry matches when the header does NOT match, so its header
    /// matcher takes the opposite reading.
    fn strict_needs_both(action: Action, polarity: Polarity) -> bool {
        let allow = action == Action::Allow;
        match polarity {
            Polarity::Positive => allow,
            Polarity::Negative => !allow,
        }
    }
}

impl FieldMatcher for Header {
    fn matches(&self, ctx: &Ctx<'_>, _: PathView) -> bool {
        let Some(h) = ctx.http() else {
            return false;
        };
        let any = || h.header_values(&self.name).any(|v| self.value.matches(v));
        let joined = || {
            h.header_joined(&self.name)
                .is_some_and(|v| self.value.matches(&v))
        };
        match ctx.repeated_headers {
            RepeatedHeaders::AnyValue => any(),
            RepeatedHeaders::Joined => joined(),
            RepeatedHeaders::Strict if self.strict_both => any() && joined(),
            RepeatedHeaders::Strict => any() || joined(),
        }
    }
    fn add_requirements(&self, req: &mut Requirements) {
        req.add_header(&self.name);
    }
    fn cost(&self) -> u8 {
        2
    }
}

// ---- experimental.envoy.filters.<filter>[<key>] ---------------------------------------------------

/// `experimental.envoy.filters.<filter>[<key>]`: a string value, or with `[v]` a list element.
#[derive(Debug)]
pub(crate) struct Metadata {
    filter: Box<str>,
    key: Box<str>,
    value: StrMatch,
    list: bool,
}

impl Metadata {
    fn compile(filter: &str, key: &str, v: &str) -> Result<Vec<Matcher>, InvalidValue> {
        Ok(vec![Matcher::Metadata(Box::new(Metadata {
            filter: filter.into(),
            key: key.into(),
            value: StrMatch::istio(v.trim_matches(|c| c == '[' || c == ']')),
            list: v.starts_with('[') && v.ends_with(']'),
        }))])
    }
}

impl FieldMatcher for Metadata {
    fn matches(&self, ctx: &Ctx<'_>, _: PathView) -> bool {
        let v = ctx
            .attrs
            .dynamic_metadata
            .and_then(|md| md.get(&*self.filter))
            .and_then(|f| f.get(&*self.key));
        match (v, self.list) {
            (Some(serde_json::Value::Array(items)), true) => items
                .iter()
                .any(|i| i.as_str().is_some_and(|s| self.value.matches(s))),
            (Some(serde_json::Value::String(s)), false) => self.value.matches(s),
            _ => false,
        }
    }
    fn add_requirements(&self, req: &mut Requirements) {
        req.add_dynamic_metadata(&self.filter);
    }
    fn cost(&self) -> u8 {
        3
    }
}

// ---- meshauthz.io/cel -----------------------------------------------------------------------------

/// `meshauthz.io/cel`: a boolean CEL expression. `on_error` is what a failed evaluation counts
/// as, chosen so that an error never widens access.
#[derive(Debug)]
pub(crate) struct Cel {
    /// Shared by every rule that writes the same expression.
    expression: Rc<CelExpression>,
    on_error: bool,
}

impl Cel {
    /// The whole field: each expression is compiled once, and the expressions decide together
    /// whether the field is HTTP only (one of them reads `request.*`).
    fn compile_field(
        ctx: &FieldCtx<'_>,
        values: &[String],
        not_values: &[String],
    ) -> Result<Option<Field>, RuleDropped> {
        let compile = |list: &[String]| -> Vec<Result<Rc<CelExpression>, InvalidValue>> {
            list.iter()
                .map(|s| {
                    let known = ctx.cel.borrow().get(s.as_str()).cloned();
                    let compiled = known.unwrap_or_else(|| {
                        let compiled = CelExpression::compile(s).ok().map(Rc::new);
                        ctx.cel
                            .borrow_mut()
                            .insert(s.as_str().into(), compiled.clone());
                        compiled
                    });
                    compiled.ok_or(InvalidValue)
                })
                .collect()
        };
        let (values, not_values) = (compile(values), compile(not_values));
        let http_only = values
            .iter()
            .chain(&not_values)
            .flatten()
            .any(|e| e.is_http_only());
        let scope = if http_only {
            Scope::HttpOnly
        } else {
            Scope::Connection
        };
        field(ctx, scope, values, not_values, |expression, polarity| {
            // An error never widens access: DENY/AUDIT conditions count it as matched, ALLOW as
            // not matched; in `notValues` the other way round, so the condition follows.
            let restrictive_match = ctx.action != Action::Allow;
            let on_error = match polarity {
                Polarity::Positive => restrictive_match,
                Polarity::Negative => !restrictive_match,
            };
            Ok(vec![Matcher::Cel(Cel {
                expression: expression?,
                on_error,
            })])
        })
    }
}

impl FieldMatcher for Cel {
    fn matches(&self, ctx: &Ctx<'_>, view: PathView) -> bool {
        match self.expression.evaluate(&ctx.cel_attrs(view)) {
            Ok(b) => b,
            Err(_) => {
                ctx.count_cel_error();
                self.on_error
            }
        }
    }
    fn add_requirements(&self, req: &mut Requirements) {
        self.expression.add_requirements(req);
    }
    fn cost(&self) -> u8 {
        9
    }
}
