//! The enforce stages, HTTP and network alike: read the decide stage's verdict from filter state
//! and check that the RBAC LOG companion ran when AUDIT policies apply. Anything missing denies.
//! The caller acts on the answer (`403` for HTTP, close for a connection).

use policy_engine::EnforceMode;

use crate::attrs::decode_bool;
use crate::names::ACCESS_LOG_HINT;
use crate::plugin::Plugin;
use crate::traits::Host;
use crate::verdict::Verdict;

/// The filter-state keys one enforce stage reads (as Envoy names them, `wasm.` included).
pub(crate) struct Keys {
    pub(crate) decision: &'static str,
    pub(crate) audit: &'static str,
    /// How the audit trail is checked (which read first, or none).
    pub(crate) audit_check: AuditCheck,
    /// Logged when the decision is missing.
    pub(crate) missing: &'static str,
    /// An allowing verdict this stage must still refuse, and the log line: the network enforce
    /// stage runs only on TCP chains, where an HTTP-port verdict means a misdeclared port.
    pub(crate) refuse: Option<(&'static [u8], &'static str)>,
}

/// How an enforce stage checks the audit trail of an allowed request. Each read is a host call
/// that returns a value (about 12 k instructions in Envoy 1.40, BENCHMARKS.md "Hot path").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuditCheck {
    /// No decide stage that can have run for this stream ever published an audit flag: nothing
    /// to check, nothing read.
    Skip,
    /// The audit flag first (absent: done, one read), then `access_log_hint`: cheapest when
    /// AUDIT policies rarely apply.
    FlagFirst,
    /// `access_log_hint` first (`true`: done, one read), then the flag: cheapest when AUDIT
    /// policies apply (the hint is then always there).
    HintFirst,
}

/// Whether the verdict in filter state allows. No verdict, a deny, or an AUDIT trail the
/// companion did not write: false, counted, and (for the missing pieces) logged.
pub(crate) fn allows(host: &dyn Host, plugin: &Plugin, keys: &Keys) -> bool {
    match host.property(&["filter_state", keys.decision]) {
        None => {
            plugin.log_error(host, keys.missing);
            plugin.count(|m| m.fail_closed);
            false
        }
        Some(label) if keys.refuse.is_some_and(|(refused, _)| label == refused) => {
            if let Some((_, message)) = keys.refuse {
                plugin.log_error(host, message);
            }
            plugin.count(|m| m.protocol_mismatch);
            plugin.count(|m| m.fail_closed);
            false
        }
        Some(label) if is_allow(&label) => audit_companion_ran(host, plugin, keys),
        Some(_) => false,
    }
}

/// An allowing verdict label (`allow`, `allow <why>`).
pub(crate) fn is_allow(label: &[u8]) -> bool {
    label == b"allow" || label.starts_with(b"allow ")
}

/// When AUDIT policies apply, Envoy's RBAC LOG filter must have run between the stages (it alone
/// can set `access_log_hint`). If it did not, the request is denied: an audit trail that silently
/// disappears is a security failure too.
/// The same answer whichever is read first ([`AuditCheck`]): a hint of `true` means the companion
/// ran and matched; no audit flag means nothing was expected.
fn audit_companion_ran(host: &dyn Host, plugin: &Plugin, keys: &Keys) -> bool {
    let flag = || host.property(&["filter_state", keys.audit]);
    let hint = || host.property(&ACCESS_LOG_HINT).map(|b| decode_bool(&b));
    let (audit, hint) = match keys.audit_check {
        AuditCheck::Skip => return true,
        AuditCheck::FlagFirst => {
            let Some(audit) = flag() else {
                return true;
            };
            (audit, hint())
        }
        AuditCheck::HintFirst => {
            let hint = hint();
            if hint == Some(Some(true)) {
                return true;
            }
            let Some(audit) = flag() else {
                return true;
            };
            (audit, hint)
        }
    };
    let problem = match hint {
        None => "AUDIT policies apply but envoy.common.access_log_hint is absent: the RBAC LOG companion filter is missing between the decide and enforce stages: denied",
        // An AUDIT rule matched, yet the companion did not see the flag: it ran before the
        // decide stage (or matches another key).
        Some(Some(false)) if audit == b"1" => "an AUDIT rule matched but envoy.common.access_log_hint is false: the RBAC LOG companion runs before meshauthz's decide stage or matches another key: denied",
        Some(_) => return true,
    };
    plugin.log_error(host, problem);
    plugin.count(|m| m.fail_closed);
    false
}

/// Who answers the denials a decide stage reaches, from the configuration's `enforce` mode and
/// whether an enforce stage of this kind is configured in this VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answering {
    /// Something after the decide stage checks the audit trail (a Wasm enforce stage, or Envoy's
    /// RBAC filter in DENY mode with `"enforce": "native"`).
    pub(crate) companion_checked: bool,
    /// With `"native"`: the decide stage answers a denial itself unless AUDIT policies apply to
    /// the request (then the RBAC LOG companion must mark it before the native filter denies).
    native: bool,
}

impl Answering {
    /// `mode`: `None` when there is no valid configuration (every request is denied here unless
    /// a Wasm enforce stage follows, which denies it too).
    pub(crate) fn new(mode: Option<EnforceMode>, enforce_stage_in_vm: bool) -> Answering {
        match mode {
            Some(EnforceMode::Native) => Answering {
                companion_checked: true,
                native: true,
            },
            // With "connection", a decide stage that runs anyway (a TCP port, or the Wasm HTTP
            // stage left in the chain) answers its denials itself, as with "decide".
            Some(EnforceMode::Decide | EnforceMode::Connection) => Answering {
                companion_checked: false,
                native: false,
            },
            Some(EnforceMode::Separate) | None => Answering {
                companion_checked: enforce_stage_in_vm,
                native: false,
            },
        }
    }

    /// Whether a later filter answers this verdict's denial (else the decide stage does).
    pub(crate) fn deferred(self, v: &Verdict) -> bool {
        if self.native {
            v.audit.is_some()
        } else {
            self.companion_checked
        }
    }
}

/// With AUDIT policies applying, an enforce stage must follow the decide stage: only it checks
/// that the RBAC LOG companion marked the request. Without one (`enforce_present` false: no
/// enforce root in this VM, or `"enforce": "decide"`) the audit trail would vanish silently, so
/// the request is denied (fail closed), logged and counted.
pub(crate) fn audit_needs_enforce_stage(
    host: &dyn Host,
    plugin: &Plugin,
    v: Verdict,
    enforce_present: bool,
    message: &str,
) -> Verdict {
    if enforce_present || v.audit.is_none() || !v.allowed {
        return v;
    }
    plugin.log_error(host, message);
    Verdict {
        audit: v.audit,
        ..Verdict::deny("deny audit-companion-missing", true)
    }
}
