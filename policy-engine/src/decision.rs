//! The answer to "is this request or connection allowed, and was it audited?", and why.

/// Which filter chain the check runs on. Istio decides by the port's protocol, not by the
/// traffic: on a TCP chain, HTTP-only fields narrow ALLOW rules (the rule is dropped) and widen
/// DENY and AUDIT rules (the field is ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Tcp,
}

/// One rule of one policy: `rules[rule]` of the policy number `policy` in the engine's table
/// ([`crate::Engine::policy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId {
    pub policy: u32,
    pub rule: u32,
}

/// Why the request was allowed or denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// No enforced DENY rule matched and no enforced ALLOW policy applies.
    NoAllowPolicy,
    /// This enforced ALLOW rule matched (the first in policy order).
    AllowRule(RuleId),
    /// This enforced DENY rule matched (the first in policy order).
    DenyRule(RuleId),
    /// Enforced ALLOW policies apply and none of their rules matched.
    NoAllowRuleMatched,
}

impl Cause {
    /// Whether this cause allows: the cause decides, so an allowed request with a denying cause
    /// cannot be built (ztunnel's shape).
    pub fn allows(self) -> bool {
        match self {
            Cause::NoAllowPolicy | Cause::AllowRule(_) => true,
            Cause::DenyRule(_) | Cause::NoAllowRuleMatched => false,
        }
    }
}

/// The outcome of the dry-run (`istio.io/dry-run: "true"`) policies of one action, computed exactly
/// like an enforced outcome and never enforced (Envoy RBAC `shadow_rules`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowResult {
    /// `allowed`/`denied` as Envoy's `shadow_engine_result`: for ALLOW, allowed iff a rule matched;
    /// for DENY, denied iff a rule matched.
    pub allowed: bool,
    /// The matching rule, if any (`shadow_effective_policy_id`).
    pub rule: Option<RuleId>,
}

/// Istio's decision for one request or connection: the enforced outcome ([`Decision::allowed`],
/// derived from its [`Cause`]), the AUDIT outcome and the dry-run outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Why it is allowed or denied.
    pub cause: Cause,
    /// At least one AUDIT policy applies to this workload (Envoy writes `access_log_hint` only then).
    pub audit_policy_applies: bool,
    /// The first AUDIT rule that matched: `access_log_hint` is `true` exactly when this is `Some`.
    pub audit_rule: Option<RuleId>,
    /// Dry-run ALLOW policies (`istio_dry_run_allow_`), if any apply.
    pub shadow_allow: Option<ShadowResult>,
    /// Dry-run DENY policies (`istio_dry_run_deny_`), if any apply.
    pub shadow_deny: Option<ShadowResult>,
    /// CEL conditions that failed at run time during this check. A failure never widens access: in
    /// DENY and AUDIT rules it counts as matched, in ALLOW rules as not matched.
    pub cel_errors: u32,
}

impl Decision {
    /// The request or connection is allowed (by its [`Cause`]).
    pub fn allowed(&self) -> bool {
        self.cause.allows()
    }

    /// `%DYNAMIC_METADATA(envoy.common:access_log_hint)%`.
    pub fn access_log_hint(&self) -> bool {
        self.audit_rule.is_some()
    }

    /// The rule that decided, if one did.
    pub fn deciding_rule(&self) -> Option<RuleId> {
        match self.cause {
            Cause::AllowRule(r) | Cause::DenyRule(r) => Some(r),
            Cause::NoAllowPolicy | Cause::NoAllowRuleMatched => None,
        }
    }
}
