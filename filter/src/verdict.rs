//! The outcome of a decide stage: the engine's [`Decision`] turned into a `Verdict` with its
//! access-log label (cached per configuration in [`Labels`]), counted, and published as filter
//! state for the RBAC LOG companion, the enforce stage and the access log.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use policy_engine::{Cause, Decision, RuleId, ShadowResult};

use crate::metrics::Metrics;
use crate::traits::{Authorizer, Host};

/// A decision label: a constant, or a rule's label shared from [`Labels`]. Neither allocates on
/// the request path.
#[derive(Clone, Debug)]
pub(crate) enum Label {
    Static(&'static str),
    Shared(Rc<str>),
}

impl Label {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Label::Static(s) => s,
            Label::Shared(s) => s,
        }
    }
}

/// One dry-run outcome as the label shows it: allowed, and the matching rule.
type ShadowKey = Option<(bool, Option<RuleId>)>;

/// Bound of the dry-run label cache. Its key is a pair of outcomes, so in theory it grows with the
/// square of the dry-run rules; past this many entries a label is built per request instead.
const MAX_SHADOW_LABELS: usize = 4096;

/// The access-log labels of one compiled configuration (`allow ns[foo]-policy[bar]-rule[0]`,
/// `dry-run-allow=allowed(...)`), each built the first time a request needs it and shared after.
/// Owned by [`crate::config::Compiled`]: a new configuration starts with an empty cache, so no label of a
/// previous configuration is ever shown.
#[derive(Debug, Default)]
pub struct Labels {
    /// Keyed by (allowed, rule).
    decisions: RefCell<BTreeMap<(bool, RuleId), Rc<str>>>,
    /// Keyed by the (ALLOW, DENY) dry-run outcomes.
    shadows: RefCell<BTreeMap<(ShadowKey, ShadowKey), Rc<str>>>,
}

impl Labels {
    fn decision(&self, allowed: bool, rule: RuleId, authz: &dyn Authorizer) -> Rc<str> {
        let key = (allowed, rule);
        if let Some(l) = self.decisions.borrow().get(&key) {
            return Rc::clone(l);
        }
        let verb = if allowed { "allow " } else { "deny " };
        let label: Rc<str> = Rc::from(format!("{verb}{}", authz.rule_name(rule)));
        // Bounded by twice the number of rules of this configuration.
        self.decisions.borrow_mut().insert(key, Rc::clone(&label));
        label
    }

    /// `None` when the decision has no dry-run outcome.
    fn shadow(&self, d: &Decision, authz: &dyn Authorizer) -> Option<Rc<str>> {
        let of = |s: &Option<ShadowResult>| s.map(|s| (s.allowed, s.rule));
        let key = (of(&d.shadow_allow), of(&d.shadow_deny));
        if key == (None, None) {
            return None;
        }
        if let Some(l) = self.shadows.borrow().get(&key) {
            return Some(Rc::clone(l));
        }
        let mut out = String::new();
        if let Some(s) = &d.shadow_allow {
            shadow_label("dry-run-allow", s, authz, &mut out);
        }
        if let Some(s) = &d.shadow_deny {
            shadow_label("dry-run-deny", s, authz, &mut out);
        }
        let label: Rc<str> = Rc::from(out);
        let mut shadows = self.shadows.borrow_mut();
        if shadows.len() < MAX_SHADOW_LABELS {
            shadows.insert(key, Rc::clone(&label));
        }
        Some(label)
    }
}

/// The outcome of a decide stage.
pub(crate) struct Verdict {
    pub(crate) allowed: bool,
    /// For the access log: `allow ns[foo]-policy[bar]-rule[0]`, `deny no-allow-rule-matched`, ...
    pub(crate) label: Label,
    /// `None`: no AUDIT policy applies (nothing written); else whether an AUDIT rule matched.
    pub(crate) audit: Option<bool>,
    pub(crate) shadow: Option<Rc<str>>,
    pub(crate) fail_closed: bool,
}

impl Verdict {
    pub(crate) fn deny(label: &'static str, fail_closed: bool) -> Verdict {
        Verdict {
            allowed: false,
            label: Label::Static(label),
            audit: None,
            shadow: None,
            fail_closed,
        }
    }
}

fn shadow_label(kind: &str, s: &ShadowResult, authz: &dyn Authorizer, out: &mut String) {
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(kind);
    out.push_str(if s.allowed { "=allowed" } else { "=denied" });
    if let Some(r) = s.rule {
        out.push('(');
        out.push_str(&authz.rule_name(r));
        out.push(')');
    }
}

/// The verdict of `d` under one configuration (its rules' names in `authz`, its label cache
/// `labels`); counts the dry-run, audit and CEL-error outcomes.
pub(crate) fn verdict_of(
    d: &Decision,
    labels: &Labels,
    authz: &dyn Authorizer,
    metrics: &Metrics,
) -> Verdict {
    let label = match d.cause {
        Cause::AllowRule(r) | Cause::DenyRule(r) => {
            Label::Shared(labels.decision(d.allowed(), r, authz))
        }
        Cause::NoAllowPolicy => Label::Static("allow no-allow-policy"),
        Cause::NoAllowRuleMatched => Label::Static("deny no-allow-rule-matched"),
    };
    if let Some(s) = &d.shadow_allow {
        metrics.add(
            if s.allowed {
                metrics.shadow_allow_allowed
            } else {
                metrics.shadow_allow_denied
            },
            1,
        );
    }
    if let Some(s) = &d.shadow_deny {
        metrics.add(
            if s.allowed {
                metrics.shadow_deny_allowed
            } else {
                metrics.shadow_deny_denied
            },
            1,
        );
    }
    if d.audit_rule.is_some() {
        metrics.add(metrics.audited, 1);
    }
    if d.cel_errors > 0 {
        metrics.add(metrics.cel_errors, i64::from(d.cel_errors));
    }
    Verdict {
        allowed: d.allowed(),
        label,
        audit: d.audit_policy_applies.then_some(d.audit_rule.is_some()),
        shadow: labels.shadow(d, authz),
        fail_closed: false,
    }
}

/// Writes the verdict for the enforce stage and the access log, counts it, and denies by itself
/// when no enforce stage exists in this VM.
pub(crate) fn publish(
    host: &dyn Host,
    m: &Metrics,
    v: &Verdict,
    keys: (&str, &str, &str),
    enforce_present: bool,
) -> bool {
    let (decision_key, audit_key, shadow_key) = keys;
    host.set_filter_state(decision_key, v.label.as_str().as_bytes());
    if let Some(audited) = v.audit {
        host.set_filter_state(audit_key, if audited { b"1" } else { b"0" });
    }
    if let Some(s) = &v.shadow {
        host.set_filter_state(shadow_key, s.as_bytes());
    }
    m.add(if v.allowed { m.allowed } else { m.denied }, 1);
    if v.fail_closed {
        m.add(m.fail_closed, 1);
    }
    // Deny here when nothing after us would.
    !v.allowed && !enforce_present
}
