//! Shared compilation of one field (values + not-values) with Istio's treatment of values that
//! cannot apply: on a TCP chain an HTTP-only field, or a value that does not parse, drops the whole
//! rule of an ALLOW policy (narrower) and only that value of a DENY or AUDIT policy (wider).

use ipnet::IpNet;

use super::rule::{Field, Matcher};
use crate::decision::Protocol;
use crate::model::Action;

/// The rule cannot be built for this chain and is dropped (ALLOW only).
#[derive(Debug)]
pub(crate) struct RuleDropped;

/// A value that does not compile (validation refuses it; a policy set built by hand may not).
#[derive(Debug)]
pub(crate) struct InvalidValue;

/// What compiling a rule needs to know.
pub(crate) struct FieldCtx<'a> {
    pub(crate) protocol: Protocol,
    pub(crate) action: Action,
    /// The policy's namespace (`serviceAccounts: [sa]` means `<policy namespace>/sa`).
    pub(crate) policy_namespace: &'a str,
    pub(crate) trust: &'a super::trust_domain::TrustBundle,
    /// The CEL expressions compiled so far in this compilation, by source text: an expression
    /// written in many rules (and on both chain types) is compiled once and shared.
    pub(crate) cel: &'a CelCache,
}

/// See [`FieldCtx::cel`]. `None`: the expression does not compile.
pub(crate) type CelCache = std::cell::RefCell<
    rustc_hash::FxHashMap<Box<str>, Option<std::rc::Rc<crate::cel::CelExpression>>>,
>;

impl FieldCtx<'_> {
    fn narrows(&self) -> bool {
        self.action == Action::Allow
    }
}

/// Whether a field exists only on HTTP requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Also on TCP connections.
    Connection,
    /// `hosts`, `methods`, `paths`, `requestPrincipals`, `request.*` keys.
    HttpOnly,
}

/// Compiles one field from its values and not-values (each compiled once by `compile`). An
/// HTTP-only field on a TCP chain follows the rule above; so does a value for which `compile`
/// fails. Returns `Ok(None)` when nothing of the field remains.
pub(crate) fn field<T, F>(
    ctx: &FieldCtx<'_>,
    scope: Scope,
    values: impl IntoIterator<Item = T>,
    not_values: impl IntoIterator<Item = T>,
    mut compile: F,
) -> Result<Option<Field>, RuleDropped>
where
    F: FnMut(T, Polarity) -> Result<Vec<Matcher>, InvalidValue>,
{
    let mut values = values.into_iter().peekable();
    let mut not_values = not_values.into_iter().peekable();
    if values.peek().is_none() && not_values.peek().is_none() {
        return Ok(None);
    }
    if scope == Scope::HttpOnly && ctx.protocol == Protocol::Tcp {
        return if ctx.narrows() {
            Err(RuleDropped)
        } else {
            Ok(None)
        };
    }
    let mut out = Field::default();
    for (polarity, list) in [
        (
            Polarity::Positive,
            &mut values as &mut dyn Iterator<Item = T>,
        ),
        (Polarity::Negative, &mut not_values),
    ] {
        for v in list {
            match compile(v, polarity) {
                Ok(ms) if polarity == Polarity::Positive => out.values.extend(ms),
                Ok(ms) => out.not_values.extend(ms),
                Err(InvalidValue) if ctx.narrows() => return Err(RuleDropped),
                Err(InvalidValue) => {}
            }
        }
    }
    // Istio matches the path the application receives; a DENY or AUDIT also matches the
    // normalized path, which can only tighten (see `crate::path`).
    out.also_normalized = ctx.action != Action::Allow && out.reads_path();
    // Kept for the configuration's lifetime: no spare capacity (most fields have one value, and
    // a grown Vec holds four).
    out.values.shrink_to_fit();
    out.not_values.shrink_to_fit();
    Ok(if out.is_empty() { None } else { Some(out) })
}

/// Whether a value is in `values` or `notValues` (CEL needs it to pick its error outcome).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Polarity {
    Positive,
    Negative,
}

/// `ipBlocks` and friends: a CIDR, or a bare IP meaning /32 or /128.
pub(crate) fn cidr(v: &str) -> Result<IpNet, InvalidValue> {
    if v.contains('/') {
        v.parse::<IpNet>().map_err(|_| InvalidValue)
    } else {
        v.parse::<std::net::IpAddr>()
            .map(IpNet::from)
            .map_err(|_| InvalidValue)
    }
}

/// `ports`, `destination.port`.
pub(crate) fn port(v: &str) -> Result<u16, InvalidValue> {
    v.parse::<u16>().map_err(|_| InvalidValue)
}
