//! The names meshauthz shares with Envoy's configuration: root ids, filter-state keys, the deny
//! body. The bottom of the module: it imports nothing.

pub const ROOT_HTTP: &str = "meshauthz_http";
pub const ROOT_HTTP_ENFORCE: &str = "meshauthz_http_enforce";
pub const ROOT_NET: &str = "meshauthz_net";
pub const ROOT_NET_ENFORCE: &str = "meshauthz_net_enforce";

/// Filter-state keys (Envoy prefixes them with `wasm.`). HTTP keys live on the request, network
/// keys on the connection; they differ because connection filter state is visible from the
/// requests of that connection, and an L4 decision must never stand in for an L7 one.
pub const HTTP_DECISION: &str = "meshauthz_decision";
pub const HTTP_AUDIT: &str = "meshauthz_audit";
pub const HTTP_SHADOW: &str = "meshauthz_shadow";
pub const NET_DECISION: &str = "meshauthz_net_decision";
pub const NET_AUDIT: &str = "meshauthz_net_audit";
pub const NET_SHADOW: &str = "meshauthz_net_shadow";
/// `"enforce": "connection"`: the HTTP verdict `meshauthz_net` reached once for the whole
/// connection (and its dry-run shadow), which Envoy's RBAC filter reads for each request. Never
/// written otherwise, so that a chain expecting it denies every request when it is absent.
pub const CONN_DECISION: &str = "meshauthz_conn_decision";
pub const CONN_AUDIT: &str = "meshauthz_conn_audit";
pub const CONN_SHADOW: &str = "meshauthz_conn_shadow";
/// The direct peer IP, written by `meshauthz_net` for `ipBlocks` / `source.ip` at L7.
pub const PEER_IP: &str = "meshauthz_peer_ip";

/// Connection filter state written by Envoy's `envoy.filters.network.set_filter_state` companion
/// when the downstream TLS handshake completes (`on_downstream_tls_handshake`): every URI SAN of
/// the peer certificate, comma-joined, a space, then every DNS SAN, comma-joined
/// (`%DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_PEER_DNS_SAN%` with `omit_empty_values`). Envoy writes
/// it from the verified certificate; no client can set it. proxy-wasm alone exposes only the
/// first URI SAN.
pub const PEER_SANS: &str = "meshauthz.peer_sans";

/// Request filter state written by Envoy's `envoy.filters.http.set_filter_state` companion right
/// before `meshauthz_http` (`on_request_headers`): the downstream connection's id, `:method`,
/// `:authority` and `:path` as the connection manager normalized them, one per line
/// ([`REQUEST_FACTS_FORMAT`], `omit_empty_values`: an absent header is an empty line). Envoy writes
/// it from the request; no client can set filter state, and no header value holds a newline. One
/// host call instead of three (`connection_id`, `:method`, `:path`); without it the decide stage
/// reads each.
pub const REQUEST_FACTS: &str = "meshauthz.request";

/// The companion's format string (templates, `render`).
pub const REQUEST_FACTS_FORMAT: &str =
    "%CONNECTION_ID%\n%REQ(:METHOD)%\n%REQ(:AUTHORITY)%\n%REQ(:PATH)%";

/// The network stage's verdict on a port listed in `httpPorts`.
pub const HTTP_PORT_LABEL: &[u8] = b"allow http-port";

/// The same keys as Envoy names them (`filter_state` lookups).
pub(crate) const FS_HTTP_DECISION: &str = "wasm.meshauthz_decision";
pub(crate) const FS_NET_DECISION: &str = "wasm.meshauthz_net_decision";
pub(crate) const FS_PEER_IP: &str = "wasm.meshauthz_peer_ip";

/// Where Envoy's RBAC LOG filter writes its verdict.
pub(crate) const ACCESS_LOG_HINT: [&str; 4] = [
    "metadata",
    "filter_metadata",
    "envoy.common",
    "access_log_hint",
];

/// The dynamic-metadata namespace Envoy's JWT filter writes (`payload_in_metadata: payload`).
pub(crate) const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";

/// The downstream connection's id (Envoy's `Network::Connection::id()`, unique in the process):
/// the Wasm property `connection_id`, which Envoy answers directly. `connection.id` gives the same
/// number through the attribute tree (a connection wrapper built in a per-call arena, then a field
/// lookup), so the top-level name is the cheaper read on the request path.
pub const CONNECTION_ID: [&str; 1] = ["connection_id"];

/// How often each root context hands its counts to Envoy (`on_tick`): `/stats` lags by up to this.
pub const METRICS_FLUSH_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// The body Istio's (Envoy RBAC's) 403 carries.
pub const DENY_BODY: &[u8] = b"RBAC: access denied";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_state_names_are_the_keys_prefixed() {
        assert_eq!(FS_HTTP_DECISION, format!("wasm.{HTTP_DECISION}"));
        assert_eq!(FS_NET_DECISION, format!("wasm.{NET_DECISION}"));
        assert_eq!(FS_PEER_IP, format!("wasm.{PEER_IP}"));
        assert_eq!("wasm.meshauthz_audit", format!("wasm.{HTTP_AUDIT}"));
        assert_eq!("wasm.meshauthz_net_audit", format!("wasm.{NET_AUDIT}"));
    }
}
