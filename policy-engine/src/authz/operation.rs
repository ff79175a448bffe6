//! `rules[].to[].operation`: what is being called. `hosts`, `methods` and `paths` are HTTP only;
//! `ports` is the workload port the connection arrived on.

use super::path_template::{is_template, PathTemplate};
use super::rule::{Clause, Matcher};
use super::string_match::StrMatch;
use super::values::{field, port, FieldCtx, RuleDropped};
use crate::model::Operation;

/// `paths` value: a `{*}`/`{**}` template, or the generic forms on the normalized path.
pub(crate) fn path(v: &str) -> Matcher {
    if is_template(v) {
        Matcher::PathTemplate(PathTemplate::parse(v))
    } else {
        Matcher::Path(StrMatch::istio(v))
    }
}

/// Compiles one `operation`; its fields are ANDed.
pub(crate) fn compile(ctx: &FieldCtx<'_>, o: &Operation) -> Result<Clause, RuleDropped> {
    let one = |m: Matcher| Ok(vec![m]);
    let fields = [
        field(ctx, false, &o.ports, &o.not_ports, |v, _| {
            one(Matcher::Port(port(v)?))
        })?,
        field(ctx, true, &o.hosts, &o.not_hosts, |v, _| {
            one(Matcher::Host(StrMatch::host(v)))
        })?,
        field(ctx, true, &o.methods, &o.not_methods, |v, _| {
            one(Matcher::Method(StrMatch::header(v)))
        })?,
        field(ctx, true, &o.paths, &o.not_paths, |v, _| one(path(v)))?,
    ];
    Ok(fields.into_iter().flatten().collect())
}
