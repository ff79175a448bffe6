//! The compiled form of a rule and how it is matched (ztunnel's model of Istio's semantics):
//! a rule is `from` clauses (any of) AND `to` clauses (any of) AND `when` conditions (all of); a
//! clause (one `source` or `operation`) is fields (all of); a field is values (any of) and
//! not-values (none of).
//!
//! What one value of one field means lives next to its compilation, one type per field (Envoy's
//! `Matcher::create`): `source.*` in [`super::source`], `operation.*` in [`super::operation`],
//! `when` keys in [`super::condition`]. [`Matcher`] only names them.

use std::borrow::Cow;
use std::cell::Cell;

use super::condition::{Cel, Claim, DestinationIp, Header, Metadata, Sni};
use super::operation::{Host, Method, Path, Port};
use super::source::{
    Namespace, Principal, RemoteIp, RequestPrincipal, ServiceAccount, SourceIp, TrustDomain,
};
use crate::attributes::{Attributes, HttpAttributes, Requirements};
use crate::decision::RuleId;

/// What every compiled field value implements, in its field's file.
pub(crate) trait FieldMatcher {
    /// Whether the request or connection has this value. An absent attribute never matches
    /// (so the same value in `notValues` matches), as in Envoy RBAC.
    fn matches(&self, ctx: &Ctx<'_>, view: PathView) -> bool;
    /// The attributes it reads, so the host fetches only those.
    fn add_requirements(&self, req: &mut Requirements);
    /// Relative cost: fields are ANDed, so the cheap ones run first.
    fn cost(&self) -> u8;
}

/// One value of one field, compiled: the field types, by name.
#[derive(Debug)]
pub(crate) enum Matcher {
    Principal(Principal),
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    TrustDomain(TrustDomain),
    SourceIp(SourceIp),
    RemoteIp(RemoteIp),
    // The largest field types are boxed: every matcher takes the size of the largest variant,
    // and a compiled configuration holds tens of thousands (issue 12: 88 -> 48 bytes each).
    RequestPrincipal(Box<RequestPrincipal>),
    Port(Port),
    Host(Host),
    Method(Method),
    Path(Path),
    DestinationIp(DestinationIp),
    Sni(Sni),
    Claim(Box<Claim>),
    Header(Box<Header>),
    Metadata(Box<Metadata>),
    Cel(Cel),
}

/// `$m` bound to the field type inside any [`Matcher`].
macro_rules! each_matcher {
    ($self:expr, $m:ident => $body:expr) => {
        match $self {
            Matcher::Principal($m) => $body,
            Matcher::Namespace($m) => $body,
            Matcher::ServiceAccount($m) => $body,
            Matcher::TrustDomain($m) => $body,
            Matcher::SourceIp($m) => $body,
            Matcher::RemoteIp($m) => $body,
            Matcher::RequestPrincipal($m) => $body,
            Matcher::Port($m) => $body,
            Matcher::Host($m) => $body,
            Matcher::Method($m) => $body,
            Matcher::Path($m) => $body,
            Matcher::DestinationIp($m) => $body,
            Matcher::Sni($m) => $body,
            Matcher::Claim($m) => $body,
            Matcher::Header($m) => $body,
            Matcher::Metadata($m) => $body,
            Matcher::Cel($m) => $body,
        }
    };
}

impl Matcher {
    fn matches(&self, ctx: &Ctx<'_>, view: PathView) -> bool {
        each_matcher!(self, m => m.matches(ctx, view))
    }

    fn add_requirements(&self, req: &mut Requirements) {
        each_matcher!(self, m => m.add_requirements(req))
    }

    fn cost(&self) -> u8 {
        each_matcher!(self, m => m.cost())
    }

    fn reads_path(&self) -> bool {
        let mut req = Requirements::default();
        self.add_requirements(&mut req);
        req.path
    }
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
    /// "Rule matches requests from a list of sources that perform a list of operations subject
    /// to a list of conditions. A match occurs when at least one source, one operation and all
    /// conditions matches the request. An empty rule is always matched." (Within a source or an
    /// operation, every field that is set must match: [`Field`].)
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
    pub(crate) repeated_headers: crate::attributes::RepeatedHeaders,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        attrs: &'a Attributes<'a>,
        need_normalized: bool,
        repeated_headers: crate::attributes::RepeatedHeaders,
    ) -> Ctx<'a> {
        let raw = attrs.http.as_ref().and_then(|h| h.path);
        let forwarded = raw.map(crate::path::url_path);
        let normalized = match (need_normalized, forwarded) {
            (true, Some(f)) => match crate::path::normalize_url_path(f) {
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
            repeated_headers,
        }
    }

    /// The authenticated peer identity, if any (an empty one is none).
    pub(crate) fn principal(&self) -> Option<&'a str> {
        self.attrs.principal.filter(|p| !p.is_empty())
    }

    /// The HTTP request, `None` on a TCP check.
    pub(crate) fn http(&self) -> Option<&'a HttpAttributes<'a>> {
        self.attrs.http.as_ref()
    }

    /// The path in one view.
    pub(crate) fn path(&self, view: PathView) -> Option<&str> {
        match view {
            PathView::Forwarded => self.forwarded,
            PathView::Normalized => self.normalized.as_deref().or(self.forwarded),
        }
    }

    /// The attributes a CEL expression sees for one view of the path.
    pub(crate) fn cel_attrs(&self, view: PathView) -> Cow<'_, Attributes<'_>> {
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

    pub(crate) fn count_cel_error(&self) {
        self.cel_errors.set(self.cel_errors.get().saturating_add(1));
    }
}

#[cfg(test)]
mod tests {
    /// A compiled configuration holds one [`Matcher`] per value of every field: keep it small
    /// (issue 12, loading memory). A field type larger than a string matcher goes in a `Box`.
    #[test]
    fn a_matcher_is_no_larger_than_a_string_matcher_and_its_tag() {
        let limit = std::mem::size_of::<super::super::string_match::StrMatch>() + 8;
        assert!(
            std::mem::size_of::<super::Matcher>() <= limit,
            "Matcher is {} bytes, over {limit}",
            std::mem::size_of::<super::Matcher>()
        );
    }
}
