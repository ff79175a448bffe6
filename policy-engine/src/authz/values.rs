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

/// What compiling a rule needs to know.
pub(crate) struct FieldCtx<'a> {
    pub(crate) protocol: Protocol,
    pub(crate) action: Action,
    /// The policy's namespace (`serviceAccounts: [sa]` means `<policy namespace>/sa`).
    pub(crate) policy_namespace: &'a str,
    pub(crate) trust: &'a super::trust_domain::TrustBundle,
}

impl FieldCtx<'_> {
    fn narrows(&self) -> bool {
        self.action == Action::Allow
    }
}

/// Compiles one field. `http_only` fields on a TCP chain follow the rule above; so does a value
/// for which `compile` fails. Returns `Ok(None)` when nothing of the field remains.
pub(crate) fn field<F>(
    ctx: &FieldCtx<'_>,
    http_only: bool,
    values: &[String],
    not_values: &[String],
    compile: F,
) -> Result<Option<Field>, RuleDropped>
where
    F: Fn(&str, Polarity) -> Result<Vec<Matcher>, String>,
{
    if values.is_empty() && not_values.is_empty() {
        return Ok(None);
    }
    if http_only && ctx.protocol == Protocol::Tcp {
        return if ctx.narrows() {
            Err(RuleDropped)
        } else {
            Ok(None)
        };
    }
    let mut out = Field::default();
    for (list, polarity, target) in [
        (values, Polarity::Positive, &mut out.values),
        (not_values, Polarity::Negative, &mut out.not_values),
    ] {
        for v in list {
            match compile(v, polarity) {
                Ok(ms) => target.extend(ms),
                Err(_) if ctx.narrows() => return Err(RuleDropped),
                Err(_) => {}
            }
        }
    }
    // Istio matches the path the application receives; a DENY or AUDIT also matches the
    // normalized path, which can only tighten (see `crate::path`).
    out.also_normalized = ctx.action != Action::Allow && out.reads_path();
    Ok(if out.is_empty() { None } else { Some(out) })
}

/// Whether a value is in `values` or `notValues` (CEL needs it to pick its error outcome).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Polarity {
    Positive,
    Negative,
}

/// `ipBlocks` and friends: a CIDR, or a bare IP meaning /32 or /128.
pub(crate) fn cidr(v: &str) -> Result<IpNet, String> {
    if v.contains('/') {
        v.parse::<IpNet>()
            .map_err(|e| format!("bad CIDR range ({v}): {e}"))
    } else {
        v.parse::<std::net::IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("bad IP address ({v})"))
    }
}

/// `ports`, `destination.port`.
pub(crate) fn port(v: &str) -> Result<u16, String> {
    v.parse::<u16>().map_err(|e| format!("bad port ({v}): {e}"))
}
