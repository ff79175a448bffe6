//! The network stages, per connection: `meshauthz_net` resets plaintext on STRICT ports
//! (`on_new_connection`), records the connection's transport facts for the HTTP stages and decides
//! TCP ports with Istio's TCP semantics (first `on_downstream_data`: TLS is done);
//! `meshauthz_net_enforce` closes a denied connection.

use std::net::IpAddr;
use std::rc::{Rc, Weak};

use policy_engine::{EnforceMode, MtlsMode, Protocol};

use crate::attrs::{decode_port, decode_u64, parse_ip};
use crate::config::Compiled;
use crate::enforce::{self, audit_needs_enforce_stage, Answering, AuditCheck, Keys};
use crate::fetch::{evaluate, peer_identity, principal, prop_ip, prop_str, transport, Transport};
use crate::metrics::Plaintext;
use crate::names::{
    CONNECTION_ID, CONN_AUDIT, CONN_DECISION, CONN_SHADOW, FS_NET_DECISION, HTTP_PORT_LABEL,
    NET_AUDIT, NET_DECISION, NET_SHADOW, PEER_IP,
};
use crate::plugin::Plugin;
use crate::traits::{Authorizer, Flow, Host};
use crate::verdict::{publish, verdict_of, Verdict};
use crate::vm::ConnFacts;

/// The connection verdict of a connection whose configuration no longer decides per connection.
const WITHDRAWN_CONN_VERDICT: &[u8] = b"deny connection-verdict-withdrawn";

/// Per-connection state of a network stage.
#[derive(Debug, Default)]
pub struct Conn {
    decided: bool,
    closed: bool,
    /// The socket peer, read in `on_new_connection`.
    peer_ip: Option<IpAddr>,
    /// The socket peer as Envoy gives it (`ip:port`), for the report-only log line.
    peer: Option<String>,
    /// This connection was counted and logged as plaintext on a report-only STRICT port.
    reported: bool,
    /// Set when this connection's facts were recorded in [`crate::vm::VmState`].
    recorded: Option<u64>,
    /// The configuration the connection was decided under, and the VM's configuration count
    /// ([`crate::vm::VmState::generation`]) when that was last checked.
    decided_with: Option<Weak<Compiled>>,
    generation: u64,
    /// A connection verdict (`"enforce": "connection"`) was published for this connection.
    conn_verdict: bool,
}

impl Conn {
    fn close(&mut self, host: &dyn Host) -> Flow {
        if !self.closed {
            host.close_downstream();
        }
        self.closed = true;
        Flow::Stop
    }
}

/// `meshauthz_net`, `on_new_connection`: TLS attributes are not ready yet, the filter chain name
/// is. A plaintext chain on a STRICT port is reset here (the client sees a connection reset, as
/// with Istio's STRICT).
pub fn new_connection(host: &dyn Host, plugin: &Plugin, conn: &mut Conn) -> Flow {
    let Some(c) = plugin.compiled() else {
        let m = plugin.metrics.borrow();
        m.add(m.denied, 1);
        m.add(m.fail_closed, 1);
        return conn.close(host);
    };
    // Hand the direct peer to the HTTP filter: at L7 `source.address` may come from
    // X-Forwarded-For, which the client controls.
    conn.peer = prop_str(host, &["source", "address"]);
    conn.peer_ip = conn.peer.as_deref().and_then(parse_ip);
    if let Some(ip) = conn.peer_ip {
        host.set_filter_state(PEER_IP, ip.to_string().as_bytes());
    }
    let chain = prop_str(host, &["xds", "filter_chain_name"]);
    let plaintext = chain
        .as_ref()
        .is_some_and(|name| c.plaintext_filter_chains.contains(name));
    let authz = c.authz.as_ref();
    // The port is read when the mode depends on it (and always for the plaintext counters).
    let port = if plaintext || authz.has_port_level_mtls() {
        host.property(&["destination", "port"])
            .and_then(|b| decode_port(&b))
    } else {
        None
    };
    let answer = authz.mtls_mode_at(port);
    if plaintext {
        if answer.resets_plaintext() {
            plugin.count_plaintext(host, port, Plaintext::Rejected);
            return conn.close(host);
        }
        if answer.reports_plaintext() {
            // Report-only STRICT: admitted, counted and logged once for this connection; its
            // requests are then authorized as on a PERMISSIVE port.
            plugin.report_plaintext(host, port, conn.peer.as_deref(), "connection");
            conn.reported = true;
        } else {
            plugin.count_plaintext(host, port, Plaintext::Accepted);
        }
    } else if answer.mode == MtlsMode::Disable && chain.is_some() {
        // A named chain not listed in plaintextFilterChains (TLS) on a DISABLE port: Istio has
        // only plaintext chains there, so a TLS client fails. Reset before the handshake, as
        // Istio's missing filter chain does. (A chain the host does not name is checked at
        // first data, when `connection.mtls` tells.)
        plugin.count(|m| m.disable_tls_rejected);
        return conn.close(host);
    }
    Flow::Continue
}

/// `meshauthz_net`, `on_downstream_data`: the first data of the connection (the TLS handshake is
/// done). Re-checks the transport, then authorizes TCP ports with Istio's TCP semantics.
///
/// A decided connection is decided again when its filter's configuration was updated in place
/// (Envoy keeps the old configuration's root for the connections it has, e.g. when Istio
/// delivers a `WasmPlugin` by ECDS; [`Plugin::follow_update`]): a verdict taken once per
/// connection (TCP ports, and HTTP ports with `"enforce": "connection"`) never outlives the
/// policies it was taken under. Checking costs one comparison per read.
pub fn decide(host: &dyn Host, plugin: &Plugin, conn: &mut Conn) -> Flow {
    if conn.closed {
        return Flow::Stop;
    }
    let generation = plugin.vm.generation();
    if conn.decided && conn.generation == generation {
        return Flow::Continue;
    }
    conn.generation = generation;
    let compiled = plugin.follow_update(host);
    let again = conn.decided;
    if again {
        let same = match (&conn.decided_with, &compiled) {
            (Some(before), Some(now)) => Weak::ptr_eq(before, &Rc::downgrade(now)),
            (None, None) => true,
            _ => false,
        };
        if same {
            return Flow::Continue;
        }
    }
    conn.decided = true;
    conn.decided_with = compiled.as_ref().map(Rc::downgrade);
    let answering = Answering::new(
        compiled.as_ref().map(|c| c.enforce),
        plugin.vm.net_enforce.get(),
    );
    let keys = (NET_DECISION, NET_AUDIT, NET_SHADOW);
    let Some(c) = compiled else {
        publish(
            host,
            &plugin.metrics.borrow(),
            &Verdict::deny("deny no-valid-configuration", true),
            keys,
            answering.companion_checked,
        );
        return conn.close(host);
    };
    let authz = c.authz.as_ref();
    let t = transport(host, authz, true, None);
    plugin.see_port(host, t.port);
    if t.strict_refuses() {
        // A plaintext connection on a chain not listed in plaintextFilterChains.
        plugin.count_plaintext(host, t.port, Plaintext::Rejected);
        plugin.count(|m| m.denied);
        return conn.close(host);
    }
    if t.strict_reports() && !conn.reported {
        // Likewise, on a report-only STRICT port: admitted, counted and logged once.
        if conn.peer.is_none() {
            conn.peer = prop_str(host, &["source", "address"]);
        }
        plugin.report_plaintext(host, t.port, conn.peer.as_deref(), "connection");
        conn.reported = true;
    }
    if t.mode == MtlsMode::Disable && t.mtls {
        // TLS on a DISABLE port that on_new_connection did not reset (the port became known
        // only now): refused all the same.
        let m = plugin.metrics.borrow();
        m.add(m.disable_tls_rejected, 1);
        m.add(m.denied, 1);
        return conn.close(host);
    }
    if t.port.is_some_and(|p| c.http_ports.contains(&p)) {
        // HTTP port: meshauthz_http authorizes each request, with these facts. Should this
        // connection run on a TCP chain instead (the port is misdeclared), the network enforce
        // stage refuses this verdict.
        host.set_filter_state(NET_DECISION, HTTP_PORT_LABEL);
        let facts = conn_facts(host, plugin, conn, &t, authz);
        if c.enforce == EnforceMode::Connection {
            // The whole connection's HTTP verdict, for Envoy's RBAC filter to answer each
            // request with (`403` unless `allow`); the connection stays open either way, as with
            // Istio on an HTTP port. Accepted only for policies that read no request attribute,
            // so every request of the connection gets this answer.
            let v = connection_verdict(host, plugin, conn, &c, &t, Protocol::Http, Some(&facts));
            publish(
                host,
                &plugin.metrics.borrow(),
                &v,
                (CONN_DECISION, CONN_AUDIT, CONN_SHADOW),
                true,
            );
            conn.conn_verdict = true;
        } else if conn.conn_verdict {
            // Updated in place to a configuration that no longer decides per connection (a
            // policy now reads the request): the verdict taken under the previous one is
            // withdrawn, never left allowing. Envoy's RBAC filter on the old chain then answers
            // 403 until the connection closes (the chain's own update drains it).
            host.set_filter_state(CONN_DECISION, WITHDRAWN_CONN_VERDICT);
        }
        record_conn(host, plugin, conn, facts);
        return Flow::Continue;
    }
    let v = connection_verdict(host, plugin, conn, &c, &t, Protocol::Tcp, None);
    let v = audit_needs_enforce_stage(host, plugin, v, answering.companion_checked, "AUDIT policies apply but no meshauthz_net_enforce stage follows (none configured in this VM, or \"enforce\": \"decide\"): the RBAC LOG companion cannot be checked, the audit trail would be lost: connection closed");
    // Decided again after an update, a deny closes here: the enforce stage, if any, acted on
    // the first verdict and is done with this connection.
    let deferred = answering.deferred(&v) && !again;
    if publish(host, &plugin.metrics.borrow(), &v, keys, deferred) {
        return conn.close(host);
    }
    Flow::Continue
}

/// The verdict of the whole connection with `protocol`'s semantics. `facts`: what this stage
/// read for the connection (its identity, a failure already logged), else the identity is read
/// and a failure logged here: once per connection either way. The direct peer is the one
/// `on_new_connection` read.
fn connection_verdict(
    host: &dyn Host,
    plugin: &Plugin,
    conn: &Conn,
    c: &Compiled,
    t: &Transport,
    protocol: Protocol,
    facts: Option<&ConnFacts>,
) -> Verdict {
    let authz = c.authz.as_ref();
    match principal(host, authz, t, facts) {
        Ok(principal) => {
            let peer_ip = if authz.requirements().source_ip {
                conn.peer_ip
                    .or_else(|| prop_ip(host, &["source", "address"]))
            } else {
                None
            };
            let d = evaluate(host, authz, protocol, t, principal, peer_ip, None);
            verdict_of(&d, &c.labels, authz, &plugin.metrics.borrow())
        }
        Err(unseen) => {
            if facts.is_none() {
                plugin.log_error(host, unseen.message());
            }
            Verdict::deny("deny peer-certificate-unseen", true)
        }
    }
}

/// The connection's transport facts for the HTTP stages. The identity is read once per
/// connection, and only when the policies read it; a certificate the module cannot fully see is
/// logged here, once per connection, and each request on it is denied.
fn conn_facts(
    host: &dyn Host,
    plugin: &Plugin,
    conn: &Conn,
    t: &Transport,
    authz: &dyn Authorizer,
) -> ConnFacts {
    let identity = if !t.mtls {
        Some(Ok(None))
    } else if authz.requirements().principal {
        Some(peer_identity(host))
    } else {
        None
    };
    if let Some(Err(unseen)) = &identity {
        plugin.log_error(host, unseen.message());
    }
    ConnFacts {
        mtls: t.mtls,
        identity,
        port: t.port,
        peer_ip: conn.peer_ip,
    }
}

/// Records `facts` for the HTTP stages of this VM. Only a connection whose id the host reported
/// is recorded (the HTTP stages then ask the host themselves).
fn record_conn(host: &dyn Host, plugin: &Plugin, conn: &mut Conn, facts: ConnFacts) {
    let Some(id) = host.property(&CONNECTION_ID).and_then(|b| decode_u64(&b)) else {
        return;
    };
    plugin.vm.record_conn(id, facts);
    conn.recorded = Some(id);
}

/// The network context is deleted (the connection is gone): its facts are forgotten.
pub fn done(plugin: &Plugin, conn: &mut Conn) {
    if let Some(id) = conn.recorded.take() {
        plugin.vm.forget_conn(id);
    }
}

/// `meshauthz_net_enforce`, `on_downstream_data`.
pub fn enforce(host: &dyn Host, plugin: &Plugin, conn: &mut Conn) -> Flow {
    if conn.closed {
        return Flow::Stop;
    }
    if conn.decided {
        return Flow::Continue;
    }
    conn.decided = true;
    let keys = Keys {
        decision: FS_NET_DECISION,
        audit: "wasm.meshauthz_net_audit",
        // Once per connection: always checked.
        audit_check: AuditCheck::FlagFirst,
        refuse: Some((
            HTTP_PORT_LABEL,
            "meshauthz_net_enforce: the port is listed in httpPorts, but its traffic runs on a TCP chain (meshauthz_net_enforce is only placed before tcp_proxy): connection closed; remove the port from httpPorts",
        )),
        missing: "meshauthz_net_enforce: no decision in filter state: meshauthz_net is missing or placed after the enforce stage: connection closed",
    };
    let allowed = enforce::allows(host, plugin, &keys);
    if allowed {
        Flow::Continue
    } else {
        conn.close(host)
    }
}

/// Network context of an unknown root: closes.
pub fn unknown_root(host: &dyn Host, conn: &mut Conn) -> Flow {
    conn.close(host)
}
