//! Istio attachments rendered from the policies a user keeps: `WasmPlugin`s (the module's HTTP
//! stages in the AUTHZ and STATS phases, the network stages for TCP ports) or one `EnvoyFilter`
//! that inserts the module and its companion RBAC LOG filter into `SIDECAR_INBOUND`.
//!
//! Filter order on the inbound HTTP chain, as the shipped Envoy configs have it:
//! `meshauthz_http` (decides, sets filter state) -> `envoy.filters.http.rbac` in LOG mode keyed on
//! `wasm.meshauthz_audit` (Envoy writes `envoy.common:access_log_hint`) -> `meshauthz_http_enforce`
//! (answers 403 `RBAC: access denied`) -> router. With [`EnforceMode::Decide`] (no AUDIT policy
//! applies) only the decide stages are rendered: `meshauthz_http` answers the 403 itself and
//! `meshauthz_net` closes a denied connection itself, one Wasm call per request. With
//! [`EnforceMode::Connection`] (no policy reads a request attribute, no AUDIT) there is no Wasm
//! filter per request: `meshauthz_net` decides each connection of the HTTP ports once and
//! Envoy's RBAC filter answers its requests from that verdict ([`rbac_connection_enforce`]), as
//! the template `envoy-config/envoy/server-http-conn.yaml` does.

use policy_engine::EnforceMode;
use serde_json::{json, Value};

/// What to render.
pub struct Attachment<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub selector: &'a [(String, String)],
    /// `oci://...`, `file://...`, `https://...`.
    pub url: &'a str,
    pub sha256: Option<&'a str>,
    /// Where an EnvoyFilter's remote fetch goes (`None`: a local file, or a WasmPlugin, which
    /// Istio's agent fetches itself).
    pub remote: Option<&'a RemoteSource>,
    pub http_ports: &'a [u16],
    pub tcp_ports: &'a [u16],
    /// The filter's plugin configuration (policies and settings).
    pub plugin_config: &'a Value,
    /// The chain's shape: `Separate` renders the enforce stages and the RBAC LOG companions,
    /// `Decide` only the decide stages (the plugin configuration says the same).
    pub enforce: EnforceMode,
}

impl Attachment<'_> {
    /// The Wasm enforce stages follow the RBAC LOG companions.
    fn separate(&self) -> bool {
        self.enforce == EnforceMode::Separate
    }

    /// Envoy's RBAC filter in DENY mode ([`rbac_native_enforce`]) follows the companions.
    fn native(&self) -> bool {
        self.enforce == EnforceMode::Native
    }

    /// The RBAC LOG companions are rendered (every mode but `Decide` and `Connection`).
    fn companions(&self) -> bool {
        self.separate() || self.native()
    }

    /// No HTTP Wasm stage: `meshauthz_net` decides the HTTP ports' connections.
    fn connection(&self) -> bool {
        self.enforce == EnforceMode::Connection
    }
}

/// The host an `http(s)://` module URL is fetched from: Envoy's remote data source needs a
/// cluster, which the EnvoyFilter adds.
pub struct RemoteSource {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// The name of that cluster.
pub const MODULE_CLUSTER: &str = "meshauthz-module-source";

impl RemoteSource {
    /// `None` for a `file://` URL.
    pub fn parse(url: &str) -> Result<Option<RemoteSource>, String> {
        let (rest, tls, default_port) = if let Some(r) = url.strip_prefix("https://") {
            (r, true, 443)
        } else if let Some(r) = url.strip_prefix("http://") {
            (r, false, 80)
        } else {
            return Ok(None);
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err("user information in the URL is not supported".into());
        }
        let (host, port) = match authority.strip_prefix('[') {
            // An IPv6 literal: `[::1]` or `[::1]:8080`.
            Some(v6) => match v6.split_once(']') {
                Some((h, "")) => (h, None),
                Some((h, p)) => (h, Some(p.strip_prefix(':').unwrap_or(p))),
                None => return Err("unclosed `[` in the URL".into()),
            },
            None => match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("bad port {p:?} in the URL"))?,
        };
        if host.is_empty() {
            return Err("no host in the URL".into());
        }
        Ok(Some(RemoteSource {
            host: host.to_string(),
            port,
            tls,
        }))
    }

    /// The cluster the fetch goes through (DNS-resolved; TLS verified against the system CAs
    /// for `https`, and the module itself against `sha256` in any case).
    fn cluster(&self) -> Value {
        let mut cluster = json!({
            "name": MODULE_CLUSTER,
            "type": "STRICT_DNS",
            "connect_timeout": "5s",
            "load_assignment": {
                "cluster_name": MODULE_CLUSTER,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": self.host, "port_value": self.port}}}}]}]
            }
        });
        if self.tls {
            if let Some(o) = cluster.as_object_mut() {
                o.insert("transport_socket".into(), json!({
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                        "sni": self.host,
                        "common_tls_context": {"validation_context": {
                            "trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"}
                        }}
                    }
                }));
            }
        }
        cluster
    }
}

/// The label every object of one attachment carries, its value the attachment's name: `kubectl
/// apply --prune -l meshauthz.io/attachment=NAME` removes what an earlier render of the same
/// attachment created and this one no longer does (after a switch of the chain's shape).
pub const ATTACHMENT_LABEL: &str = "meshauthz.io/attachment";

/// The attachment's name (`--name`) labels its objects ([`ATTACHMENT_LABEL`]) and prefixes their
/// names (`NAME-http`, `NAME-audit-companion`, ...), so it must be valid as both: a Kubernetes
/// label value that is also the start of an object name (lowercase letters, digits, `-` and `.`,
/// beginning and ending with a letter or digit, at most 63 characters).
pub fn check_attachment_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name.len() > 63 {
        return Err(format!(
            "{} characters: at most 63 (it is the value of the label {ATTACHMENT_LABEL} on every object)",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "{c:?} is not allowed: lowercase letters, digits, `-` and `.` (a Kubernetes object name and label value)"
        ));
    }
    if !edge(bytes.first()) || !edge(bytes.last()) {
        return Err(
            "expected a name that begins and ends with a lowercase letter or a digit".into(),
        );
    }
    Ok(())
}

/// The metadata of one rendered object: its name, namespace and the labels that tie it to its
/// attachment.
fn metadata(a: &Attachment<'_>, name: String) -> Value {
    json!({
        "name": name,
        "namespace": a.namespace,
        "labels": {
            "app.kubernetes.io/managed-by": "meshauthz",
            ATTACHMENT_LABEL: a.name,
        },
    })
}

fn labels(a: &Attachment<'_>) -> Value {
    let labels: serde_json::Map<String, Value> = a
        .selector
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    Value::Object(labels)
}

fn selector(a: &Attachment<'_>) -> Value {
    json!({ "matchLabels": labels(a) })
}

fn ports(ports: &[u16]) -> Value {
    json!([{ "mode": "SERVER", "ports": ports.iter().map(|p| json!({"number": p})).collect::<Vec<_>>() }])
}

/// The companion that turns the module's audit flag into `envoy.common:access_log_hint`.
pub fn rbac_log_companion(network: bool) -> Value {
    let (name, ty) = if network {
        (
            "envoy.filters.network.rbac",
            "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
        )
    } else {
        (
            "envoy.filters.http.rbac",
            "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        )
    };
    // The network stage writes its own key: connection filter state is visible from the
    // requests of that connection, so L4 and L7 flags must not share a name.
    let key = if network {
        "wasm.meshauthz_net_audit"
    } else {
        "wasm.meshauthz_audit"
    };
    let mut config = json!({
        "@type": ty,
        "rules": {
            "action": "LOG",
            "policies": {
                "meshauthz-audit": {
                    "permissions": [{"any": true}],
                    "principals": [{"filter_state": {"key": key, "string_match": {"exact": "1"}}}]
                }
            }
        }
    });
    if network {
        if let Some(o) = config.as_object_mut() {
            o.insert("stat_prefix".into(), json!("meshauthz_audit."));
        }
    }
    json!({ "name": name, "typed_config": config })
}

/// The native enforce stage (`"enforce": "native"`): Envoy's RBAC filter in DENY mode, after the
/// RBAC LOG companion. It denies unless the decide stage wrote an allowing decision (none, e.g.
/// the decide stage missing or placed after it, denies), and denies an audited request that the
/// companion did not mark: the same checks as the Wasm enforce stage, without a Wasm call.
pub fn rbac_native_enforce(network: bool) -> Value {
    let (name, ty, decision, audit) = if network {
        (
            "envoy.filters.network.rbac",
            "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
            "wasm.meshauthz_net_decision",
            "wasm.meshauthz_net_audit",
        )
    } else {
        (
            "envoy.filters.http.rbac",
            "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "wasm.meshauthz_decision",
            "wasm.meshauthz_audit",
        )
    };
    let mut config = json!({
        "@type": ty,
        "rules": {
            "action": "DENY",
            "policies": {
                "meshauthz-enforce": {
                    "permissions": [{"any": true}],
                    "principals": [
                        {"not_id": {"filter_state": {"key": decision, "string_match": {"prefix": "allow"}}}},
                        {"and_ids": {"ids": [
                            {"filter_state": {"key": audit, "string_match": {"exact": "1"}}},
                            {"not_id": {"metadata": {"filter": "envoy.common", "path": [{"key": "access_log_hint"}], "value": {"bool_match": true}}}}
                        ]}}
                    ]
                }
            }
        }
    });
    if network {
        if let Some(o) = config.as_object_mut() {
            o.insert("stat_prefix".into(), json!("meshauthz_enforce."));
        }
        // On a TCP chain the verdict `allow http-port` means a port misdeclared in `httpPorts`.
        if let Some(principals) = config
            .pointer_mut("/rules/policies/meshauthz-enforce/principals")
            .and_then(Value::as_array_mut)
        {
            principals.push(http_port_verdict());
        }
    }
    json!({ "name": name, "typed_config": config })
}

/// With `"enforce": "connection"`, before the router on the chains of each HTTP port: Envoy's
/// RBAC filter in DENY mode on the verdict `meshauthz_net` wrote for the connection (`403 RBAC:
/// access denied` unless it allows; no verdict, e.g. the network stage missing, denies).
pub fn rbac_connection_enforce() -> Value {
    json!({
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {
                "action": "DENY",
                "policies": {
                    "meshauthz-enforce": {
                        "permissions": [{"any": true}],
                        "principals": [{"not_id": {"filter_state": {
                            "key": format!("wasm.{}", meshauthz_filter::names::CONN_DECISION),
                            "string_match": {"prefix": "allow"}
                        }}}]
                    }
                }
            }
        }
    })
}

/// Envoy's `set_filter_state` HTTP filter right before `meshauthz_http`: the request's connection id
/// and pseudo-headers in one filter-state value, which the decide stage reads in one host call
/// instead of three (`meshauthz_filter::names::REQUEST_FACTS`).
pub fn request_facts_companion() -> Value {
    use meshauthz_filter::names::{REQUEST_FACTS, REQUEST_FACTS_FORMAT};
    json!({
        "name": "envoy.filters.http.set_filter_state",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config",
            "on_request_headers": [{
                "object_key": REQUEST_FACTS,
                "factory_key": "envoy.string",
                "format_string": {
                    "text_format_source": {"inline_string": REQUEST_FACTS_FORMAT},
                    "omit_empty_values": true
                }
            }]
        }
    })
}

/// [`rbac_connection_enforce`] before the router on the HTTP chains of `port`.
fn connection_enforce_patch(port: u16) -> Value {
    json!({"applyTo": "HTTP_FILTER",
        "match": {"context": "SIDECAR_INBOUND", "listener": {"portNumber": port,
            "filterChain": {"filter": {"name": "envoy.filters.network.http_connection_manager",
                "subFilter": {"name": "envoy.filters.http.router"}}}}},
        "patch": {"operation": "INSERT_BEFORE", "value": rbac_connection_enforce()}})
}

/// The network stage's verdict for a port listed in `httpPorts` (its requests are left to
/// `meshauthz_http`).
fn http_port_verdict() -> Value {
    json!({"filter_state": {"key": "wasm.meshauthz_net_decision", "string_match": {"exact": "allow http-port"}}})
}

/// With `"enforce": "decide"`, on each TCP chain after `meshauthz_net`: Envoy's network RBAC
/// denying the verdict `allow http-port` (a port listed in `httpPorts` whose traffic runs on a TCP
/// chain, where no `meshauthz_http` authorizes it). The full chain's `meshauthz_net_enforce`
/// refuses it itself; the native enforce stage carries the same principal.
pub fn http_port_guard() -> Value {
    json!({
        "name": "envoy.filters.network.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
            "stat_prefix": "meshauthz_http_port_guard.",
            "rules": {
                "action": "DENY",
                "policies": {
                    "meshauthz-http-port-on-tcp-chain": {
                        "permissions": [{"any": true}],
                        "principals": [http_port_verdict()]
                    }
                }
            }
        }
    })
}

/// The companion that writes every SAN of the verified peer certificate into connection filter
/// state `meshauthz.peer_sans` once the TLS handshake is done (proxy-wasm exposes only the first
/// URI SAN). The module refuses a certificate with several SANs, or without this list, wherever a
/// policy reads the principal: Envoy RBAC would match every SAN.
pub fn peer_sans_companion() -> Value {
    json!({
        "name": "envoy.filters.network.set_filter_state",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.set_filter_state.v3.Config",
            "on_downstream_tls_handshake": [{
                "object_key": "meshauthz.peer_sans",
                "factory_key": "envoy.string",
                "format_string": {
                    "text_format_source": {"inline_string": "%DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_PEER_DNS_SAN%"},
                    "omit_empty_values": true
                }
            }]
        }
    })
}

/// [`peer_sans_companion`] first on every inbound HTTP chain and on the chains of `tcp_ports`.
fn peer_sans_patches(tcp_ports: &[u16]) -> Vec<Value> {
    let first = |listener: Value| {
        json!({"applyTo": "NETWORK_FILTER",
               "match": {"context": "SIDECAR_INBOUND", "listener": listener},
               "patch": {"operation": "INSERT_FIRST", "value": peer_sans_companion()}})
    };
    let mut patches = vec![first(
        json!({"filterChain": {"filter": {"name": "envoy.filters.network.http_connection_manager"}}}),
    )];
    for port in tcp_ports {
        patches.push(first(json!({"portNumber": port, "filterChain": {"filter": {"name": "envoy.filters.network.tcp_proxy"}}})));
    }
    patches
}

/// `WasmPlugin`s: two HTTP stages and, when TCP ports are given, two network stages, plus the
/// `EnvoyFilter` that places the RBAC LOG companion between the HTTP stages (a WasmPlugin cannot)
/// and the peer-SAN companions. In `Decide` mode: the decide stages only, and the EnvoyFilter
/// (same name, so `kubectl apply` replaces it) carries the peer-SAN companions and the
/// misdeclared-port guards ([`http_port_guard`]). In `Native` mode: the decide stages, and the
/// EnvoyFilter places the RBAC LOG companion and [`rbac_native_enforce`] after each.
pub fn wasm_plugins(a: &Attachment<'_>) -> Vec<Value> {
    let mut docs = Vec::new();
    let plugin = |suffix: &str, root_id: &str, phase: &str, ty: &str, match_ports: &[u16]| {
        let mut spec = json!({
            "selector": selector(a),
            "url": a.url,
            "pluginName": root_id,
            "phase": phase,
            "failStrategy": "FAIL_CLOSE",
            "type": ty,
            "match": ports(match_ports),
            "pluginConfig": a.plugin_config,
        });
        if let (Some(sha), Some(o)) = (a.sha256, spec.as_object_mut()) {
            o.insert("sha256".into(), json!(sha));
        }
        json!({
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": metadata(a, format!("{}-{suffix}", a.name)),
            "spec": spec,
        })
    };
    let all_ports: Vec<u16> = a.http_ports.iter().chain(a.tcp_ports).copied().collect();
    // Decide after jwt_authn (AUTHZ phase), enforce after Istio's own RBAC (STATS phase).
    if !a.connection() {
        docs.push(plugin(
            "http",
            "meshauthz_http",
            "AUTHZ",
            "HTTP",
            a.http_ports,
        ));
    }
    if a.separate() {
        docs.push(plugin(
            "http-enforce",
            "meshauthz_http_enforce",
            "STATS",
            "HTTP",
            a.http_ports,
        ));
    }
    if !a.tcp_ports.is_empty() || a.connection() {
        docs.push(plugin(
            "net",
            "meshauthz_net",
            "AUTHN",
            "NETWORK",
            &all_ports,
        ));
        // Only on TCP chains: there an HTTP-port verdict means a misdeclared port, refused.
        if a.separate() {
            docs.push(plugin(
                "net-enforce",
                "meshauthz_net_enforce",
                "AUTHZ",
                "NETWORK",
                a.tcp_ports,
            ));
        }
    }
    // Istio names a WasmPlugin's filter `<namespace>.<name>`.
    let decide_filter = format!("{}.{}-http", a.namespace, a.name);
    let after_decide = |value: Value| {
        json!({"applyTo": "HTTP_FILTER",
            "match": {
                "context": "SIDECAR_INBOUND",
                "listener": {"filterChain": {"filter": {
                    "name": "envoy.filters.network.http_connection_manager",
                    "subFilter": {"name": decide_filter}
                }}}
            },
            "patch": {"operation": "INSERT_AFTER", "value": value}
        })
    };
    let mut audit_patches = Vec::new();
    // On each TCP port, right after the network decide stage (the network WasmPlugin): what the
    // chain needs there, in chain order. Each insertion lands right after the decide stage, so
    // they are inserted last first.
    let net_filter = format!("{}.{}-net", a.namespace, a.name);
    let after_net: Vec<Value> = match a.enforce {
        // Before `meshauthz-net-enforce` (a later phase): the companion that marks an audited
        // connection, which the enforce stage checks.
        EnforceMode::Separate => vec![rbac_log_companion(true)],
        EnforceMode::Native => vec![rbac_log_companion(true), rbac_native_enforce(true)],
        // The network stage closes a denied TCP connection itself.
        EnforceMode::Decide | EnforceMode::Connection => vec![http_port_guard()],
    };
    for port in a.tcp_ports {
        for value in after_net.iter().rev() {
            audit_patches.push(json!({"applyTo": "NETWORK_FILTER",
                "match": {"context": "SIDECAR_INBOUND", "listener": {"portNumber": port,
                    "filterChain": {"filter": {"name": net_filter}}}},
                "patch": {"operation": "INSERT_AFTER", "value": value}}));
        }
    }
    if a.native() {
        // The native enforce stage first, so that the companion inserted next sits between the
        // decide stage and it.
        audit_patches.push(after_decide(rbac_native_enforce(false)));
    }
    if a.companions() {
        audit_patches.push(after_decide(rbac_log_companion(false)));
    }
    if a.connection() {
        audit_patches.extend(a.http_ports.iter().map(|p| connection_enforce_patch(*p)));
    } else {
        // Right before the decide stage: nothing between them changes the headers.
        audit_patches.push(json!({"applyTo": "HTTP_FILTER",
            "match": {
                "context": "SIDECAR_INBOUND",
                "listener": {"filterChain": {"filter": {
                    "name": "envoy.filters.network.http_connection_manager",
                    "subFilter": {"name": decide_filter}
                }}}
            },
            "patch": {"operation": "INSERT_BEFORE", "value": request_facts_companion()}
        }));
    }
    audit_patches.extend(peer_sans_patches(a.tcp_ports));
    docs.push(json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata(a, format!("{}-audit-companion", a.name)),
        "spec": {
            "workloadSelector": {"labels": labels(a)},
            "configPatches": audit_patches,
        }
    }));
    docs
}

fn wasm_filter(network: bool, root_id: &str, a: &Attachment<'_>, config: &Value) -> Value {
    let (name, ty) = if network {
        (
            "envoy.filters.network.wasm",
            "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
        )
    } else {
        (
            "envoy.filters.http.wasm",
            "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        )
    };
    let code = match a.url.strip_prefix("file://") {
        Some(path) => json!({"local": {"filename": path}}),
        None => json!({"remote": {
            "http_uri": {"uri": a.url, "cluster": MODULE_CLUSTER, "timeout": "10s"},
            "sha256": a.sha256.unwrap_or_default(),
            "retry_policy": {"num_retries": 3}
        }}),
    };
    json!({
        "name": name,
        "typed_config": {
            "@type": ty,
            "config": {
                "name": root_id,
                "root_id": root_id,
                "failure_policy": "FAIL_CLOSED",
                "vm_config": {"vm_id": "meshauthz", "runtime": "envoy.wasm.runtime.v8", "code": code},
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config.to_string()}
            }
        }
    })
}

/// One `EnvoyFilter` with the module (a local file, or a remote URL with `sha256`), its RBAC LOG
/// companions and the migration access-log format, inserted into `SIDECAR_INBOUND`; in `Decide`
/// mode the decide stages only (no RBAC LOG, no enforce stage; the misdeclared-port guard on TCP
/// ports); in `Native` mode Envoy's RBAC filter in DENY mode instead of the Wasm enforce stages.
pub fn envoy_filter(a: &Attachment<'_>) -> Value {
    let http_match = |sub: &str| {
        json!({"context": "SIDECAR_INBOUND", "listener": {"filterChain": {"filter": {
            "name": "envoy.filters.network.http_connection_manager", "subFilter": {"name": sub}}}}})
    };
    let insert_before_router = |value: Value| {
        json!({"applyTo": "HTTP_FILTER", "match": http_match("envoy.filters.http.router"),
               "patch": {"operation": "INSERT_BEFORE", "value": value}})
    };
    let empty = json!({});
    let mut patches = Vec::new();
    if a.connection() {
        // On each HTTP port: the network stage before the connection manager, Envoy's RBAC
        // filter on its verdict before the router.
        for port in a.http_ports {
            patches.push(json!({"applyTo": "NETWORK_FILTER",
                "match": {"context": "SIDECAR_INBOUND", "listener": {"portNumber": port,
                    "filterChain": {"filter": {"name": "envoy.filters.network.http_connection_manager"}}}},
                "patch": {"operation": "INSERT_BEFORE",
                    "value": wasm_filter(true, "meshauthz_net", a, a.plugin_config)}}));
            patches.push(connection_enforce_patch(*port));
        }
    } else {
        patches.push(insert_before_router(request_facts_companion()));
        patches.push(insert_before_router(wasm_filter(
            false,
            "meshauthz_http",
            a,
            a.plugin_config,
        )));
    }
    if a.companions() {
        patches.push(insert_before_router(rbac_log_companion(false)));
    }
    if a.separate() {
        patches.push(insert_before_router(wasm_filter(
            false,
            "meshauthz_http_enforce",
            a,
            &empty,
        )));
    }
    if a.native() {
        patches.push(insert_before_router(rbac_native_enforce(false)));
    }
    patches.push(json!({
            "applyTo": "NETWORK_FILTER",
            "match": {"context": "SIDECAR_INBOUND", "listener": {"filterChain": {"filter": {"name": "envoy.filters.network.http_connection_manager"}}}},
            "patch": {"operation": "MERGE", "value": {"typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "access_log": [{
                    "name": "envoy.access_loggers.file",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                        "path": "/dev/stdout",
                        "log_format": {"text_format_source": {"inline_string": access_log_format(a.enforce)}}
                    }
                }]
            }}}
    }));
    if !a.tcp_ports.is_empty() {
        for port in a.tcp_ports {
            let m = json!({"context": "SIDECAR_INBOUND", "listener": {"portNumber": port, "filterChain": {"filter": {"name": "envoy.filters.network.tcp_proxy"}}}});
            let mut values = vec![wasm_filter(true, "meshauthz_net", a, a.plugin_config)];
            if a.companions() {
                values.push(rbac_log_companion(true));
            }
            if a.separate() {
                values.push(wasm_filter(true, "meshauthz_net_enforce", a, &empty));
            }
            if a.native() {
                values.push(rbac_native_enforce(true));
            }
            if matches!(a.enforce, EnforceMode::Decide | EnforceMode::Connection) {
                values.push(http_port_guard());
            }
            for value in values {
                patches.push(json!({"applyTo": "NETWORK_FILTER", "match": m, "patch": {"operation": "INSERT_BEFORE", "value": value}}));
            }
        }
    }
    patches.extend(peer_sans_patches(a.tcp_ports));
    if let Some(remote) = a.remote {
        // The cluster the remote fetch names (Envoy refuses a data source without it).
        patches.push(
            json!({"applyTo": "CLUSTER", "match": {"context": "SIDECAR_OUTBOUND"},
                            "patch": {"operation": "ADD", "value": remote.cluster()}}),
        );
    }
    json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata(a, a.name.to_string()),
        "spec": {"workloadSelector": {"labels": labels(a)}, "configPatches": patches}
    })
}

/// The access-log line of the migration walkthrough: who called, what meshauthz decided, and
/// whether an AUDIT rule matched (`hint=true` marks a caller to fix before STRICT). The decision
/// is the request's (`wasm.meshauthz_decision`) or, with `"enforce": "connection"`, the
/// connection's (`wasm.meshauthz_conn_decision`).
pub fn access_log_format(mode: EnforceMode) -> String {
    use meshauthz_filter::names::{CONN_DECISION, HTTP_DECISION};
    let decision = if mode == EnforceMode::Connection {
        CONN_DECISION
    } else {
        HTTP_DECISION
    };
    format!(
        "[%START_TIME%] %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% peer=%DOWNSTREAM_PEER_URI_SAN% \
hint=%DYNAMIC_METADATA(envoy.common:access_log_hint)% decision=%FILTER_STATE(wasm.{decision}:PLAIN)% \
src=%DOWNSTREAM_REMOTE_ADDRESS% chain=%FILTER_CHAIN_NAME%\n"
    )
}
