//! `rules[].to[].operation`: what is being called. One type per field, its compilation and its
//! match side by side: [`Port`] (`ports`, the workload port the connection arrived on), [`Host`]
//! (`hosts`), [`Method`] (`methods`), [`Path`] (`paths`). `hosts`, `methods` and `paths` are HTTP
//! only. The `not*` form of each is the same matcher in `notValues`.

use super::path_template::{is_template, PathTemplate};
use super::rule::{Clause, Ctx, FieldMatcher, Matcher, PathView};
use super::string_match::StrMatch;
use super::values::{field, port, FieldCtx, InvalidValue, RuleDropped, Scope};
use crate::attributes::Requirements;
use crate::model::Operation;

/// Compiles one `operation`: "Operation specifies the operations of a request. Fields in the
/// operation are ANDed together."
pub(crate) fn compile(ctx: &FieldCtx<'_>, o: &Operation) -> Result<Clause, RuleDropped> {
    use Scope::{Connection, HttpOnly};
    let fields = [
        field(ctx, Connection, &o.ports, &o.not_ports, |v, _| {
            Port::compile(v)
        })?,
        field(ctx, HttpOnly, &o.hosts, &o.not_hosts, |v, _| {
            Host::compile(v)
        })?,
        field(ctx, HttpOnly, &o.methods, &o.not_methods, |v, _| {
            Method::compile(v)
        })?,
        field(ctx, HttpOnly, &o.paths, &o.not_paths, |v, _| {
            Path::compile(v)
        })?,
    ];
    Ok(fields.into_iter().flatten().collect())
}

// ---- ports ----------------------------------------------------------------------------------------

/// `ports`, `destination.port`: the local (workload) port, not the Service port.
#[derive(Debug)]
pub(crate) struct Port(u16);

impl Port {
    pub(crate) fn compile(v: &str) -> Result<Vec<Matcher>, InvalidValue> {
        Ok(vec![Matcher::Port(Port(port(v)?))])
    }

    /// The port (the rule index files the rule there).
    pub(crate) fn number(&self) -> u16 {
        self.0
    }
}

impl FieldMatcher for Port {
    fn matches(&self, ctx: &Ctx<'_>, _: PathView) -> bool {
        ctx.attrs.destination_port == Some(self.0)
    }
    fn add_requirements(&self, req: &mut Requirements) {
        req.destination_port = true;
    }
    fn cost(&self) -> u8 {
        0
    }
}

// ---- hosts ----------------------------------------------------------------------------------------

/// `hosts`: `:authority` (with its port, if the client sent one), case-insensitive, `*` meaning
/// present ([`StrMatch::host`]).
#[derive(Debug)]
pub(crate) struct Host(StrMatch);

impl Host {
    pub(crate) fn compile(v: &str) -> Result<Vec<Matcher>, InvalidValue> {
        Ok(vec![Matcher::Host(Host(StrMatch::host(v)))])
    }
}

impl FieldMatcher for Host {
    fn matches(&self, ctx: &Ctx<'_>, _: PathView) -> bool {
        ctx.http()
            .and_then(|h| h.host)
            .is_some_and(|h| self.0.matches_ignore_case(h))
    }
    fn add_requirements(&self, req: &mut Requirements) {
        req.host = true;
    }
    fn cost(&self) -> u8 {
        1
    }
}

// ---- methods --------------------------------------------------------------------------------------

/// `methods`: `:method`, case-sensitive, `*` meaning present ([`StrMatch::header`]).
#[derive(Debug)]
pub(crate) struct Method(StrMatch);

impl Method {
    pub(crate) fn compile(v: &str) -> Result<Vec<Matcher>, InvalidValue> {
        Ok(vec![Matcher::Method(Method(StrMatch::header(v)))])
    }
}

impl FieldMatcher for Method {
    fn matches(&self, ctx: &Ctx<'_>, _: PathView) -> bool {
        ctx.http()
            .and_then(|h| h.method)
            .is_some_and(|m| self.0.matches(m))
    }
    fn add_requirements(&self, req: &mut Requirements) {
        req.method = true;
    }
    fn cost(&self) -> u8 {
        1
    }
}

// ---- paths ----------------------------------------------------------------------------------------

/// `paths`: the path without query, with Istio's wildcard forms, or a `{*}`/`{**}` template.
/// Which path ([`PathView`]) is the field's choice: the forwarded one, and for DENY and AUDIT
/// also the normalized one (`crate::path`).
#[derive(Debug)]
pub(crate) enum Path {
    Pattern(StrMatch),
    Template(PathTemplate),
}

impl Path {
    pub(crate) fn compile(v: &str) -> Result<Vec<Matcher>, InvalidValue> {
        let path = if is_template(v) {
            Path::Template(PathTemplate::parse(v))
        } else {
            Path::Pattern(StrMatch::istio(v))
        };
        Ok(vec![Matcher::Path(path)])
    }
}

impl FieldMatcher for Path {
    fn matches(&self, ctx: &Ctx<'_>, view: PathView) -> bool {
        ctx.path(view).is_some_and(|p| match self {
            Path::Pattern(m) => m.matches(p),
            Path::Template(t) => t.matches(p),
        })
    }
    fn add_requirements(&self, req: &mut Requirements) {
        req.path = true;
    }
    fn cost(&self) -> u8 {
        match self {
            Path::Pattern(_) => 1,
            Path::Template(_) => 2,
        }
    }
}
