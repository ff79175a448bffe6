//! The Envoy configuration for one golden: one listener per port (see [`super::ports`]), each
//! with `tls_inspector`, an mTLS chain (client certificate required, validated against the test
//! CA) and a plaintext chain; on HTTP an HCM whose filters are the golden's RBAC filters in order
//! and a router to a `direct_response` 200; on TCP the golden's network RBAC filters then a
//! `tcp_proxy` to a TCP echo. Access logs carry the audit hint and the dry-run shadow metadata.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::golden::Chain;
use super::probe::Listener;

/// The dry-run metadata keys Envoy writes (`<shadowRulesStatPrefix>shadow_...`).
pub const SHADOW_PREFIXES: [&str; 2] = ["istio_dry_run_allow_", "istio_dry_run_deny_"];

fn access_log_format(chain: Chain) -> Value {
    let ns = match chain {
        Chain::Http => "envoy.filters.http.rbac",
        Chain::Tcp => "envoy.filters.network.rbac",
    };
    let mut f = Map::new();
    let mut put = |k: &str, v: String| {
        f.insert(k.to_string(), Value::String(v));
    };
    put("port", "%DOWNSTREAM_LOCAL_PORT%".into());
    put("remote", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%".into());
    put("remote_port", "%DOWNSTREAM_DIRECT_REMOTE_PORT%".into());
    put("peer", "%DOWNSTREAM_PEER_URI_SAN%".into());
    put("sni", "%REQUESTED_SERVER_NAME%".into());
    put("chain", "%FILTER_CHAIN_NAME%".into());
    put(
        "hint",
        "%DYNAMIC_METADATA(envoy.common:access_log_hint)%".into(),
    );
    put("flags", "%RESPONSE_FLAGS%".into());
    for p in SHADOW_PREFIXES {
        put(
            &format!("{p}result"),
            format!("%DYNAMIC_METADATA({ns}:{p}shadow_engine_result)%"),
        );
        put(
            &format!("{p}policy"),
            format!("%DYNAMIC_METADATA({ns}:{p}shadow_effective_policy_id)%"),
        );
    }
    match chain {
        Chain::Http => {
            put("id", "%REQ(X-DIFF-ID)%".into());
            put("code", "%RESPONSE_CODE%".into());
            put("details", "%RESPONSE_CODE_DETAILS%".into());
            put("method", "%REQ(:METHOD)%".into());
            put("path", "%REQ(:PATH)%".into());
            put("authority", "%REQ(:AUTHORITY)%".into());
        }
        Chain::Tcp => {
            put("details", "%CONNECTION_TERMINATION_DETAILS%".into());
            put("upstream", "%UPSTREAM_HOST%".into());
        }
    }
    Value::Object(f)
}

fn file_log(path: &Path, chain: Chain) -> Value {
    json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path.to_string_lossy(),
            "log_format": {"json_format": access_log_format(chain)},
        }
    }])
}

fn network_filters(chain: Chain, filters: &[Value], log: &Path) -> Value {
    match chain {
        Chain::Http => {
            let mut http_filters: Vec<Value> = filters.to_vec();
            http_filters.push(json!({
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
            }));
            json!([{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "diff",
                    "codec_type": "AUTO",
                    // As the project's server templates: RFC 3986 normalization and merged slashes
                    // before any filter; the engine is handed the path this forwards
                    // (`compare::expect`).
                    "normalize_path": true,
                    "merge_slashes": true,
                    "access_log": file_log(log, Chain::Http),
                    "route_config": {
                        "name": "diff",
                        "virtual_hosts": [{
                            "name": "all",
                            "domains": ["*"],
                            "routes": [{
                                "match": {"prefix": "/"},
                                "direct_response": {"status": 200, "body": {"inline_string": "ok"}}
                            }]
                        }]
                    },
                    "http_filters": http_filters,
                }
            }])
        }
        Chain::Tcp => {
            let mut all: Vec<Value> = filters.to_vec();
            all.push(json!({
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "diff",
                    "cluster": "echo",
                }
            }));
            Value::Array(all)
        }
    }
}

/// The whole bootstrap (JSON, which Envoy reads as YAML).
pub fn config(
    chain: Chain,
    filters: &[Value],
    listeners: &[Listener],
    admin_port: u16,
    cert_dir: &Path,
    access_log: &Path,
    echo_port: Option<u16>,
) -> Value {
    let tls = |alpn: &[&str]| {
        json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": true,
                "common_tls_context": {
                    "alpn_protocols": alpn,
                    "tls_certificates": [{
                        "certificate_chain": {"filename": cert_dir.join("server.crt").to_string_lossy()},
                        "private_key": {"filename": cert_dir.join("server.key").to_string_lossy()},
                    }],
                    "validation_context": {
                        "trusted_ca": {"filename": cert_dir.join("ca.crt").to_string_lossy()}
                    }
                }
            }
        })
    };
    let alpn: &[&str] = match chain {
        Chain::Http => &["http/1.1"],
        Chain::Tcp => &[],
    };
    let ls: Vec<Value> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let filters = network_filters(chain, filters, access_log);
            let mut listener = json!({
                "name": format!("diff_{i}"),
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": l.port}},
                "listener_filters": [{
                    "name": "envoy.filters.listener.tls_inspector",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}
                }],
                "filter_chains": [
                    {
                        "name": "mtls",
                        "filter_chain_match": {"transport_protocol": "tls"},
                        "transport_socket": tls(alpn),
                        "filters": filters.clone(),
                    },
                    {
                        "name": "plaintext",
                        "filter_chain_match": {"transport_protocol": "raw_buffer"},
                        "filters": filters,
                    }
                ]
            });
            if let (Chain::Tcp, Some(obj)) = (chain, listener.as_object_mut()) {
                obj.insert("access_log".into(), file_log(access_log, Chain::Tcp));
            }
            listener
        })
        .collect();
    let mut clusters = Vec::new();
    if let Some(port) = echo_port {
        clusters.push(json!({
            "name": "echo",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": "echo",
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                    "socket_address": {"address": "127.0.0.1", "port_value": port}
                }}}]}]
            }
        }));
    }
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": ls, "clusters": clusters}
    })
}
