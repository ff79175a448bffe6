//! The network stages, per connection: `meshauthz_net` resets plaintext on STRICT ports
//! (`on_new_connection`), records the connection's transport facts for the HTTP stages and decides
//! TCP ports with Istio's TCP semantics (first `on_downstream_data`: TLS is done);
//! `meshauthz_net_enforce` closes a denied connection.

use std::net::IpAddr;

use policy_engine::{MtlsMode, Protocol};

use crate::attrs::{decode_port, decode_u64};
use crate::enforce::{self, Keys};
use crate::fetch::{evaluate, peer_identity, prop_ip, prop_str, transport, Transport};
use crate::names::{FS_NET_DECISION, NET_AUDIT, NET_DECISION, NET_SHADOW, PEER_IP};
use crate::plugin::Plugin;
use crate::traits::{Flow, Host};
use crate::verdict::{publish, verdict_of, Verdict};
use crate::vm::ConnFacts;

/// Per-connection state of a network stage.
#[derive(Debug, Default)]
pub struct Conn {
    decided: bool,
    closed: bool,
    /// The socket peer, read in `on_new_connection`.
    peer_ip: Option<IpAddr>,
    /// Set when this connection's facts were recorded in [`crate::vm::VmState`].
    recorded: Option<u64>,
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
    conn.peer_ip = prop_ip(host, &["source", "address"]);
    if let Some(ip) = conn.peer_ip {
        host.set_filter_state(PEER_IP, ip.to_string().as_bytes());
    }
    let chain = prop_str(host, &["xds", "filter_chain_name"]);
    let plaintext = chain.is_some_and(|name| c.plaintext_filter_chains.contains(&name));
    if plaintext {
        let port = host
            .property(&["destination", "port"])
            .and_then(|b| decode_port(&b));
        let mode = match port {
            Some(p) => c.authz.mtls_mode(p),
            None if c.authz.port_specific_mtls() => MtlsMode::Strict,
            None => c.authz.mtls_mode(0),
        };
        let rejected = mode == MtlsMode::Strict;
        plugin.count(|m| m.plaintext_id(port, !rejected));
        if rejected {
            return conn.close(host);
        }
    }
    Flow::Continue
}

/// `meshauthz_net`, `on_downstream_data`: the first data of the connection (the TLS handshake is
/// done). Re-checks the transport, then authorizes TCP ports with Istio's TCP semantics.
pub fn decide(host: &dyn Host, plugin: &Plugin, conn: &mut Conn) -> Flow {
    if conn.closed {
        return Flow::Stop;
    }
    if conn.decided {
        return Flow::Continue;
    }
    conn.decided = true;
    let enforce = plugin.vm.net_enforce.get();
    let keys = (NET_DECISION, NET_AUDIT, NET_SHADOW);
    let Some(c) = plugin.compiled() else {
        publish(
            host,
            &plugin.metrics.borrow(),
            &Verdict::deny("deny no-valid-configuration", true),
            keys,
            enforce,
        );
        return conn.close(host);
    };
    let authz = c.authz.as_ref();
    let t = transport(host, authz, true, None);
    if t.mode == MtlsMode::Strict && !t.mtls {
        // A plaintext connection on a chain not listed in plaintextFilterChains.
        let m = plugin.metrics.borrow();
        m.add(m.plaintext_id(t.port, false), 1);
        m.add(m.denied, 1);
        return conn.close(host);
    }
    let v = if t.port.is_some_and(|p| c.http_ports.contains(&p)) {
        // HTTP port: meshauthz_http authorizes each request, with these facts.
        host.set_filter_state(NET_DECISION, b"allow http-port");
        record_conn(host, plugin, conn, &t);
        return Flow::Continue;
    } else {
        let peer_ip = prop_ip(host, &["source", "address"]);
        let d = evaluate(host, authz, Protocol::Tcp, &t, peer_ip, None);
        verdict_of(&d, &c.labels, authz, &plugin.metrics.borrow())
    };
    if publish(host, &plugin.metrics.borrow(), &v, keys, enforce) {
        return conn.close(host);
    }
    Flow::Continue
}

/// Records the connection's transport facts for the HTTP stages of this VM. Only a connection
/// whose id the host reported is recorded; `peer_ip` is only kept when `on_new_connection` read it.
fn record_conn(host: &dyn Host, plugin: &Plugin, conn: &mut Conn, t: &Transport) {
    let Some(id) = host
        .property(&["connection", "id"])
        .and_then(|b| decode_u64(&b))
    else {
        return;
    };
    let identity = if t.mtls { peer_identity(host) } else { None };
    plugin.vm.record_conn(
        id,
        ConnFacts {
            mtls: t.mtls,
            identity,
            port: t.port,
            peer_ip: conn.peer_ip,
        },
    );
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
