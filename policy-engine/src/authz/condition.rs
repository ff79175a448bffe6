//! `rules[].when[]`: conditions on Istio's attribute keys, plus the meshauthz CEL extension.

use super::rule::{Field, Matcher};
use super::source::{principals, request_principal, service_account, trust_domains};
use super::string_match::StrMatch;
use super::values::{cidr, field, port, FieldCtx, Polarity, RuleDropped};
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

fn one(m: Matcher) -> Result<Vec<Matcher>, String> {
    Ok(vec![m])
}

/// Compiles one condition. An unknown key drops the rule for every action (Istio's
/// `model.New` fails; validation rejects such keys anyway).
pub(crate) fn compile(ctx: &FieldCtx<'_>, c: &Condition) -> Result<Option<Field>, RuleDropped> {
    let key = c.key.as_str();
    let (v, nv) = (&c.values, &c.not_values);
    let claim = |path: Vec<Box<str>>| {
        move |val: &str, _: Polarity| {
            one(Matcher::Claim {
                path: path.clone(),
                value: StrMatch::istio(val),
            })
        }
    };
    match key {
        "source.ip" => field(ctx, false, v, nv, |x, _| one(Matcher::SourceIp(cidr(x)?))),
        "remote.ip" => field(ctx, false, v, nv, |x, _| one(Matcher::RemoteIp(cidr(x)?))),
        "source.namespace" => field(ctx, false, v, nv, |x, _| {
            one(Matcher::Namespace(StrMatch::namespace(x)))
        }),
        "source.principal" => field(ctx, false, v, nv, |x, _| Ok(principals(ctx, x))),
        "source.serviceAccount" => field(ctx, false, v, nv, |x, _| one(service_account(ctx, x))),
        "source.trustDomain" => field(ctx, false, v, nv, |x, _| Ok(trust_domains(ctx, x))),
        "destination.ip" => field(ctx, false, v, nv, |x, _| {
            one(Matcher::DestinationIp(cidr(x)?))
        }),
        "destination.port" => field(ctx, false, v, nv, |x, _| one(Matcher::Port(port(x)?))),
        "connection.sni" => field(ctx, false, v, nv, |x, _| {
            one(Matcher::Sni(StrMatch::istio(x)))
        }),
        "request.auth.principal" => field(ctx, true, v, nv, |x, _| one(request_principal(x))),
        "request.auth.audiences" => field(ctx, true, v, nv, claim(vec!["aud".into()])),
        "request.auth.presenter" => field(ctx, true, v, nv, claim(vec!["azp".into()])),
        CEL_CONDITION_KEY => {
            // The expression decides on its own whether it is HTTP only (it reads `request.*`).
            let exprs: Vec<CelExpression> = v
                .iter()
                .chain(nv)
                .filter_map(|s| CelExpression::compile(s).ok())
                .collect();
            let http_only = exprs.iter().any(CelExpression::is_http_only);
            field(ctx, http_only, v, nv, |x, polarity| {
                let expression = CelExpression::compile(x)?;
                // An error never widens access: DENY/AUDIT conditions count it as matched, ALLOW as not
                // matched; in `notValues` the other way round, so the condition as a whole follows.
                let restrictive_match = ctx.action != Action::Allow;
                let on_error = match polarity {
                    Polarity::Positive => restrictive_match,
                    Polarity::Negative => !restrictive_match,
                };
                one(Matcher::Cel {
                    expression: Box::new(expression),
                    on_error,
                })
            })
        }
        _ => {
            if let Some(rest) = key.strip_prefix("request.headers") {
                let name = match bracketed(rest).as_deref() {
                    Some([name]) => name.to_ascii_lowercase(),
                    _ => return Err(RuleDropped),
                };
                field(ctx, true, v, nv, |x, _| {
                    one(Matcher::Header {
                        name: name.as_str().into(),
                        value: StrMatch::header(x),
                    })
                })
            } else if let Some(rest) = key.strip_prefix("request.auth.claims") {
                let Some(path) = bracketed(rest) else {
                    return Err(RuleDropped);
                };
                field(
                    ctx,
                    true,
                    v,
                    nv,
                    claim(path.into_iter().map(Into::into).collect()),
                )
            } else if let Some(rest) = key.strip_prefix("experimental.") {
                let Some((filter, k)) = rest.strip_suffix(']').and_then(|r| r.split_once('['))
                else {
                    return Err(RuleDropped);
                };
                field(ctx, false, v, nv, |x, _| {
                    let list = x.starts_with('[') && x.ends_with(']');
                    let value = StrMatch::istio(x.trim_matches(|c| c == '[' || c == ']'));
                    one(Matcher::Metadata {
                        filter: filter.into(),
                        key: k.into(),
                        value,
                        list,
                    })
                })
            } else {
                Err(RuleDropped)
            }
        }
    }
}
