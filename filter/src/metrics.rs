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

/// What happened to a plaintext connection (or request) on a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plaintext {
    /// Admitted: the port is PERMISSIVE (or DISABLE).
    Accepted,
    /// Reset (or refused): the port is STRICT.
    Rejected,
    /// Admitted only because the port's STRICT is report-only (`meshauthz.io/strict-report-only`):
    /// it would be reset without the annotation.
    ReportOnly,
}

impl Plaintext {
    pub fn as_str(self) -> &'static str {
        match self {
            Plaintext::Accepted => "accepted",
            Plaintext::Rejected => "rejected",
            Plaintext::ReportOnly => "report_only",
        }
    }
}

/// How many ports get counters of their own; connections to further ports (and to a port the
/// host did not report) are counted in `meshauthz.plaintext.other.*`. Each port costs three
/// Envoy stats.
pub const MAX_PORT_METRICS: usize = 64;

/// `meshauthz.plaintext.<port>.accepted|rejected|report_only`; `<port>` is `other` for a port
/// the host did not report, or beyond the first [`MAX_PORT_METRICS`] ports seen.
pub fn plaintext_name(port: Option<u16>, outcome: Plaintext) -> String {
    let outcome = outcome.as_str();
    match port {
        Some(p) => format!("meshauthz.plaintext.{p}.{outcome}"),
        None => format!("meshauthz.plaintext.other.{outcome}"),
    }
}

/// The plaintext counters of one port (or of `other`).
#[derive(Clone, Copy, Debug, Default)]
pub struct PortCounters {
    pub accepted: Option<u32>,
    pub rejected: Option<u32>,
    pub report_only: Option<u32>,
}

impl PortCounters {
    fn define(host: &dyn Host, port: Option<u16>) -> PortCounters {
        PortCounters {
            accepted: host.define_counter(&plaintext_name(port, Plaintext::Accepted)),
            rejected: host.define_counter(&plaintext_name(port, Plaintext::Rejected)),
            report_only: host.define_counter(&plaintext_name(port, Plaintext::ReportOnly)),
        }
    }

    fn id(&self, outcome: Plaintext) -> Option<u32> {
        match outcome {
            Plaintext::Accepted => self.accepted,
            Plaintext::Rejected => self.rejected,
            Plaintext::ReportOnly => self.report_only,
        }
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
    /// Per port, in the order first seen (the ports the configuration names first), at most
    /// [`MAX_PORT_METRICS`].
    ports: RefCell<Vec<(u16, PortCounters)>>,
    pub plaintext_other: PortCounters,
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
            ports: RefCell::new(Vec::new()),
            plaintext_other: PortCounters::define(host, None),
            pending: RefCell::new(Vec::new()),
        }
    }

    /// Defines the per-port plaintext counters of the ports a configuration names, so that
    /// they show (at zero) before any traffic.
    pub fn define_ports(&mut self, host: &dyn Host, ports: &[u16]) {
        for &port in ports {
            self.see_port(host, port);
        }
    }

    /// A connection or request to `port` was seen: its counters are defined the first time
    /// (three host calls, once per port and root context), while fewer than
    /// [`MAX_PORT_METRICS`] ports have their own. Returns its counters, or `None` when the port
    /// is counted in `other`.
    pub fn see_port(&self, host: &dyn Host, port: u16) -> Option<PortCounters> {
        let mut ports = self.ports.borrow_mut();
        if let Some((_, c)) = ports.iter().find(|(p, _)| *p == port) {
            return Some(*c);
        }
        if ports.len() >= MAX_PORT_METRICS {
            return None;
        }
        let c = PortCounters::define(host, Some(port));
        ports.push((port, c));
        Some(c)
    }

    /// The counter of a plaintext `outcome` at `port` (defined on first sight).
    pub fn plaintext_id(
        &self,
        host: &dyn Host,
        port: Option<u16>,
        outcome: Plaintext,
    ) -> Option<u32> {
        port.and_then(|p| self.see_port(host, p))
            .unwrap_or(self.plaintext_other)
            .id(outcome)
    }

    /// The ports with counters of their own, in the order first seen.
    pub fn counted_ports(&self) -> Vec<u16> {
        self.ports.borrow().iter().map(|(p, _)| *p).collect()
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
