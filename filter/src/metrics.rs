//! Counters (proxy-wasm metrics). Envoy shows them as `wasmcustom.<name>` in `/stats`. Names follow
//! Envoy RBAC's where they mean the same thing.

use std::cell::RefCell;

use crate::traits::Host;

pub const ALLOWED: &str = "meshauthz.rbac.allowed";
pub const DENIED: &str = "meshauthz.rbac.denied";
pub const SHADOW_ALLOW_ALLOWED: &str = "meshauthz.rbac.istio_dry_run_allow_shadow_allowed";
pub const SHADOW_ALLOW_DENIED: &str = "meshauthz.rbac.istio_dry_run_allow_shadow_denied";
pub const SHADOW_DENY_ALLOWED: &str = "meshauthz.rbac.istio_dry_run_deny_shadow_allowed";
pub const SHADOW_DENY_DENIED: &str = "meshauthz.rbac.istio_dry_run_deny_shadow_denied";
pub const AUDITED: &str = "meshauthz.audited";
pub const CONFIG_REFUSED: &str = "meshauthz.config_refused";
pub const CEL_ERRORS: &str = "meshauthz.cel_errors";
/// Requests/connections denied because something the decision depends on was missing (no valid
/// configuration yet, no decision from the decide stage, no LOG companion, no peer address).
pub const FAIL_CLOSED: &str = "meshauthz.fail_closed";

/// Connections and requests whose protocol disagrees with the configuration: a port listed in
/// `httpPorts` whose traffic reaches the network enforce stage (a TCP chain), or HTTP requests on
/// a port the network stage decided as TCP.
pub const PROTOCOL_MISMATCH: &str = "meshauthz.protocol_mismatch";
/// TLS connections reset on a DISABLE port (Istio has only plaintext filter chains there).
pub const DISABLE_TLS_REJECTED: &str = "meshauthz.disable_tls_rejected";

/// `meshauthz.plaintext.<port>.accepted|rejected`; `<port>` is `other` for ports that no policy
/// names.
pub fn plaintext_name(port: Option<u16>, accepted: bool) -> String {
    let outcome = if accepted { "accepted" } else { "rejected" };
    match port {
        Some(p) => format!("meshauthz.plaintext.{p}.{outcome}"),
        None => format!("meshauthz.plaintext.other.{outcome}"),
    }
}

/// Metric ids of one root context. `None` where the host refused the definition: counting is
/// then skipped, never a reason to fail a request.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub allowed: Option<u32>,
    pub denied: Option<u32>,
    pub shadow_allow_allowed: Option<u32>,
    pub shadow_allow_denied: Option<u32>,
    pub shadow_deny_allowed: Option<u32>,
    pub shadow_deny_denied: Option<u32>,
    pub audited: Option<u32>,
    pub config_refused: Option<u32>,
    pub cel_errors: Option<u32>,
    pub fail_closed: Option<u32>,
    pub protocol_mismatch: Option<u32>,
    pub disable_tls_rejected: Option<u32>,
    /// Per named port: (port, accepted, rejected).
    pub plaintext: Vec<(u16, Option<u32>, Option<u32>)>,
    pub plaintext_other: (Option<u32>, Option<u32>),
    /// Counts not yet handed to the host: (id, sum). A host call costs about 1 µs of Envoy CPU,
    /// so the request path counts here and [`Metrics::flush`] runs from `on_tick`.
    pending: RefCell<Vec<(u32, i64)>>,
}

impl Metrics {
    pub fn define(host: &dyn Host) -> Metrics {
        Metrics {
            allowed: host.define_counter(ALLOWED),
            denied: host.define_counter(DENIED),
            shadow_allow_allowed: host.define_counter(SHADOW_ALLOW_ALLOWED),
            shadow_allow_denied: host.define_counter(SHADOW_ALLOW_DENIED),
            shadow_deny_allowed: host.define_counter(SHADOW_DENY_ALLOWED),
            shadow_deny_denied: host.define_counter(SHADOW_DENY_DENIED),
            audited: host.define_counter(AUDITED),
            config_refused: host.define_counter(CONFIG_REFUSED),
            cel_errors: host.define_counter(CEL_ERRORS),
            fail_closed: host.define_counter(FAIL_CLOSED),
            protocol_mismatch: host.define_counter(PROTOCOL_MISMATCH),
            disable_tls_rejected: host.define_counter(DISABLE_TLS_REJECTED),
            plaintext: Vec::new(),
            plaintext_other: (
                host.define_counter(&plaintext_name(None, true)),
                host.define_counter(&plaintext_name(None, false)),
            ),
            pending: RefCell::new(Vec::new()),
        }
    }

    /// Defines the per-port plaintext counters of the ports a configuration names.
    pub fn define_ports(&mut self, host: &dyn Host, ports: &[u16]) {
        for &port in ports {
            if self.plaintext.iter().any(|(p, _, _)| *p == port) {
                continue;
            }
            self.plaintext.push((
                port,
                host.define_counter(&plaintext_name(Some(port), true)),
                host.define_counter(&plaintext_name(Some(port), false)),
            ));
        }
    }

    /// Adds `by` to a counter (if defined) in VM memory; the host sees it at the next
    /// [`Metrics::flush`].
    pub fn add(&self, id: Option<u32>, by: i64) {
        let Some(id) = id else {
            return;
        };
        let mut pending = self.pending.borrow_mut();
        match pending.iter_mut().find(|(i, _)| *i == id) {
            Some((_, n)) => *n = n.saturating_add(by),
            None => pending.push((id, by)),
        }
    }

    /// Hands the pending counts to the host: one `increment_metric` per counter that changed.
    pub fn flush(&self, host: &dyn Host) {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        for (id, n) in pending {
            if n != 0 {
                host.increment(id, n);
            }
        }
    }

    pub fn plaintext_id(&self, port: Option<u16>, accepted: bool) -> Option<u32> {
        let (a, r) = port
            .and_then(|port| self.plaintext.iter().find(|(p, _, _)| *p == port))
            .map(|(_, a, r)| (*a, *r))
            .unwrap_or(self.plaintext_other);
        if accepted {
            a
        } else {
            r
        }
    }
}

/// Increments a counter if it is defined.
pub fn bump(host: &dyn Host, id: Option<u32>) {
    if let Some(id) = id {
        host.increment(id, 1);
    }
}

/// The metric names a test or an operator can expect (for documentation tests).
pub fn base_metric_names() -> [&'static str; 12] {
    [
        ALLOWED,
        DENIED,
        SHADOW_ALLOW_ALLOWED,
        SHADOW_ALLOW_DENIED,
        SHADOW_DENY_ALLOWED,
        SHADOW_DENY_DENIED,
        AUDITED,
        CONFIG_REFUSED,
        CEL_ERRORS,
        FAIL_CLOSED,
        PROTOCOL_MISMATCH,
        DISABLE_TLS_REJECTED,
    ]
}
