//! The HTTP stages, per request (`on_http_request_headers`): `meshauthz_http` decides and
//! publishes its verdict; `meshauthz_http_enforce` answers a deny with `403`.

use std::net::IpAddr;
use std::rc::Rc;

use policy_engine::{MtlsMode, Protocol};

use crate::attrs::decode_u64;
use crate::config::Compiled;
use crate::enforce::{self, audit_needs_enforce_stage, Answering, AuditCheck, Keys};
use crate::fetch::{evaluate, principal, prop_ip, prop_str, request_facts, transport};
use crate::metrics::Plaintext;
use crate::names::{
    CONNECTION_ID, FS_HTTP_DECISION, FS_NET_DECISION, FS_PEER_IP, HTTP_AUDIT, HTTP_DECISION,
    HTTP_PORT_LABEL, HTTP_SHADOW,
};
use crate::plugin::Plugin;
use crate::traits::{Flow, Host};
use crate::verdict::{publish, verdict_of, Verdict};
use crate::vm::ConnFacts;

/// `meshauthz_http`, `on_http_request_headers`.
pub fn decide(host: &dyn Host, plugin: &Plugin) -> Flow {
    let compiled = plugin.compiled();
    let answering = Answering::new(
        compiled.as_ref().map(|c| c.enforce),
        plugin.vm.http_enforce.get(),
    );
    let v = match compiled {
        None => Verdict::deny("deny no-valid-configuration", true),
        Some(c) => verdict(host, plugin, &c),
    };
    let v = audit_needs_enforce_stage(
        host,
        plugin,
        v,
        answering.companion_checked,
        AUDIT_WITHOUT_ENFORCE,
    );
    if v.audit.is_some() {
        // From now on the enforce stages of this VM check the audit trail.
        plugin.vm.http_audit_seen.set(true);
    }
    if publish(
        host,
        &plugin.metrics.borrow(),
        &v,
        (HTTP_DECISION, HTTP_AUDIT, HTTP_SHADOW),
        answering.deferred(&v),
    ) {
        host.send_forbidden();
        return Flow::Stop;
    }
    Flow::Continue
}

const AUDIT_WITHOUT_ENFORCE: &str = "AUDIT policies apply but no meshauthz_http_enforce stage follows (none configured in this VM, or \"enforce\": \"decide\"): the RBAC LOG companion cannot be checked, the audit trail would be lost: denied";

fn verdict(host: &dyn Host, plugin: &Plugin, c: &Compiled) -> Verdict {
    let authz = c.authz.as_ref();
    // What Envoy's companion wrote for the request (the connection id and the pseudo-headers, in
    // one host call), when anything in it is needed.
    let req = authz.requirements();
    let pre = if plugin.vm.net_decide.get() || req.method || req.path || req.host {
        request_facts(host)
    } else {
        None
    };
    let facts = recorded_conn(host, plugin, pre.as_ref().map(|p| p.connection_id));
    let facts = facts.as_deref();
    let t = transport(host, authz, false, facts);
    if t.strict_refuses() {
        // Normally the network filter has already reset such a connection; this is the HTTP
        // filter's own guarantee, whatever the filter order.
        plugin.count_plaintext(host, t.port, Plaintext::Rejected);
        return Verdict::deny("deny mtls-strict-plaintext", false);
    }
    if t.strict_reports() && facts.is_none() {
        // Report-only STRICT without a network stage that counted the connection: counted and
        // logged per request. The request is then authorized as on a PERMISSIVE port.
        let source = prop_str(host, &["source", "address"]);
        plugin.report_plaintext(host, t.port, source.as_deref(), "request");
    }
    if t.mode == MtlsMode::Disable && t.mtls {
        // Istio has only plaintext filter chains on a DISABLE port: a TLS client fails there.
        // Normally meshauthz_net has reset the connection already.
        plugin.count(|m| m.disable_tls_rejected);
        return Verdict::deny("deny mtls-disable-tls", false);
    }
    if facts.is_none() && plugin.vm.net_decide.get() {
        if let Some(v) = tcp_verdict_on_this_connection(host, plugin) {
            return v;
        }
    }
    let principal = match principal(host, authz, &t, facts) {
        Ok(p) => p,
        Err(unseen) => {
            // With recorded facts, meshauthz_net logged it once for the connection.
            if facts.is_none() {
                plugin.log_error(host, unseen.message());
            }
            return Verdict::deny("deny peer-certificate-unseen", true);
        }
    };
    let peer_ip = if authz.requirements().source_ip {
        match facts.and_then(|f| f.peer_ip).or_else(|| l7_peer_ip(host)) {
            Some(ip) => Some(ip),
            None => {
                plugin.log_error(
                    host,
                    "a policy matches ipBlocks/source.ip but the direct peer address is unknown (X-Forwarded-For present and meshauthz_net not on the listener): request denied",
                );
                return Verdict::deny("deny peer-address-unknown", true);
            }
        }
    } else {
        None
    };
    let d = evaluate(
        host,
        authz,
        Protocol::Http,
        &t,
        principal,
        peer_ip,
        pre.as_ref(),
    );
    verdict_of(&d, &c.labels, authz, &plugin.metrics.borrow())
}

/// HTTP on a port the configuration does not list in `httpPorts`: meshauthz_net decided this
/// connection with Istio's TCP semantics (its verdict is in connection filter state) and recorded
/// no facts. The stricter reading applies: the request is allowed only if the TCP verdict allows
/// too (here) and the HTTP policies allow it (the caller). Counted and logged either way.
/// `None`: no TCP verdict on this connection (an HTTP port, or no meshauthz_net on this chain).
fn tcp_verdict_on_this_connection(host: &dyn Host, plugin: &Plugin) -> Option<Verdict> {
    let label = host.property(&["filter_state", FS_NET_DECISION])?;
    if label == HTTP_PORT_LABEL {
        return None;
    }
    plugin.count(|m| m.protocol_mismatch);
    plugin.log_error(
        host,
        "HTTP request on a port missing from httpPorts: meshauthz_net decided the connection as TCP; the request must pass both the TCP and the HTTP reading of the policies (add the port to httpPorts)",
    );
    if enforce::is_allow(&label) {
        None
    } else {
        Some(Verdict::deny("deny protocol-mismatch", true))
    }
}

/// The facts `meshauthz_net` recorded for this request's connection: one host call
/// (`connection_id`, unless the companion's `id` gave it) instead of one per fact. `None` (the
/// caller asks the host for each fact, as without a network stage) when no `meshauthz_net` runs
/// in this VM or it recorded nothing for this connection id.
fn recorded_conn(host: &dyn Host, plugin: &Plugin, id: Option<u64>) -> Option<Rc<ConnFacts>> {
    if !plugin.vm.net_decide.get() {
        return None;
    }
    let id = match id {
        Some(id) => id,
        None => host.property(&CONNECTION_ID).and_then(|b| decode_u64(&b))?,
    };
    plugin.vm.conn(id)
}

/// The direct peer at L7. Preferred: what `meshauthz_net` recorded from the socket. Without it,
/// `source.address` is the direct peer only when the request carries no `X-Forwarded-For`
/// (otherwise the HTTP connection manager may have replaced it with an address the client
/// chose); with one, the peer is unknown.
fn l7_peer_ip(host: &dyn Host) -> Option<IpAddr> {
    if let Some(ip) = prop_ip(host, &["filter_state", FS_PEER_IP]) {
        return Some(ip);
    }
    if host.request_header("x-forwarded-for").is_some() {
        return None;
    }
    prop_ip(host, &["source", "address"])
}

/// `meshauthz_http_enforce`, `on_http_request_headers`.
pub fn enforce(host: &dyn Host, plugin: &Plugin) -> Flow {
    let keys = Keys {
        decision: FS_HTTP_DECISION,
        audit: "wasm.meshauthz_audit",
        // The decide stage runs before this one, in this VM when the chain is as shipped: if it
        // never published an audit flag, this request has none either. A decide stage of
        // another VM (no `meshauthz_http` root here) could have: then the flag is read.
        audit_check: if plugin.vm.http_audit_seen.get() {
            AuditCheck::HintFirst
        } else if plugin.vm.http_decide.get() {
            AuditCheck::Skip
        } else {
            AuditCheck::FlagFirst
        },
        refuse: None,
        missing: "meshauthz_http_enforce: no decision in filter state: meshauthz_http is missing or placed after the enforce stage: request denied",
    };
    if enforce::allows(host, plugin, &keys) {
        Flow::Continue
    } else {
        host.send_forbidden();
        Flow::Stop
    }
}

/// The context of a root whose id is unknown: every request is denied.
pub fn unknown_root(host: &dyn Host) -> Flow {
    host.send_forbidden();
    Flow::Stop
}
