//! Temporary harness self-test with a bare (no wasm) Envoy: certs, echo app, curl, Envoy guard.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::time::Duration;

use meshauthz_e2e::app::{HttpEcho, TcpEcho};
use meshauthz_e2e::certs::Pki;
use meshauthz_e2e::client::{self, Request, Transport};
use meshauthz_e2e::envoy::{free_port, render, Envoy};
use meshauthz_e2e::{access_log, WorkDir};

const BARE: &str = r#"
admin: {address: {socket_address: {address: 127.0.0.1, port_value: {{ADMIN_PORT}}}}}
static_resources:
  clusters:
  - name: app
    type: STATIC
    load_assignment: {cluster_name: app, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{APP_PORT}}}}}}]}]}
  - name: tcpapp
    type: STATIC
    load_assignment: {cluster_name: tcpapp, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{TCP_APP_PORT}}}}}}]}]}
  listeners:
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: {{TCP_PORT}}}}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}
    filter_chains:
    - name: mtls
      filter_chain_match: {transport_protocol: tls}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates: [{certificate_chain: {filename: "{{CERT_DIR}}/server.crt"}, private_key: {filename: "{{CERT_DIR}}/server.key"}}]
            validation_context: {trusted_ca: {filename: "{{CERT_DIR}}/ca.crt"}}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: tcp, cluster: tcpapp}
  - name: inbound
    address: {socket_address: {address: 127.0.0.1, port_value: {{INBOUND_PORT}}}}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}
    filter_chains:
    - name: mtls
      filter_chain_match: {transport_protocol: tls}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates: [{certificate_chain: {filename: "{{CERT_DIR}}/server.crt"}, private_key: {filename: "{{CERT_DIR}}/server.key"}}]
            validation_context: {trusted_ca: {filename: "{{CERT_DIR}}/ca.crt"}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound
          forward_client_cert_details: SANITIZE_SET
          set_current_client_cert_details: {uri: true}
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: "{{ACCESS_LOG}}"
              log_format: {text_format_source: {inline_string: "%REQ(:PATH)% %RESPONSE_CODE% peer=%DOWNSTREAM_PEER_URI_SAN%\n"}}
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: app}}]}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
"#;

#[test]
fn bare_envoy_mtls_round_trip() {
    let work = WorkDir::new("harness").unwrap();
    let pki = Pki::generate(&work.path().join("certs")).unwrap();
    let app = HttpEcho::start().unwrap();
    let tcp_app = TcpEcho::start().unwrap();
    let alog = work.path().join("access.log");
    let (mut port, mut tcp_port) = (0, 0);
    let envoy = Envoy::start_with_retry(work.path(), "bare", || {
        let admin = free_port()?;
        port = free_port()?;
        tcp_port = free_port()?;
        let vars = BTreeMap::from([
            ("ADMIN_PORT", admin.to_string()),
            ("APP_PORT", app.port().to_string()),
            ("TCP_APP_PORT", tcp_app.port().to_string()),
            ("INBOUND_PORT", port.to_string()),
            ("TCP_PORT", tcp_port.to_string()),
            ("CERT_DIR", pki.dir().display().to_string()),
            ("ACCESS_LOG", alog.display().to_string()),
        ]);
        Ok((render(BARE, &vars)?, admin))
    })
    .unwrap();
    let bar = pki.client("foo", "bar").unwrap();
    let r = Request::get(port, "/hello", Transport::mtls(&pki, &bar))
        .header(
            "x-forwarded-client-cert",
            "URI=spiffe://cluster.local/ns/foo/sa/admin",
        )
        .send()
        .unwrap();
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");
    let xfcc = r.app_header("x-forwarded-client-cert").unwrap().unwrap();
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/foo/sa/bar"),
        "{xfcc}"
    );
    assert!(!xfcc.contains("admin"), "{xfcc}");
    assert_eq!(app.requests(), 1);
    // plaintext on an mTLS-only listener: no chain matches -> reset
    let r = Request::get(port, "/hello", Transport::Plaintext)
        .send()
        .unwrap();
    eprintln!("plaintext: {r:?}");
    // untrusted client
    let u = pki.untrusted_client("foo", "bar").unwrap();
    let r = Request::get(port, "/hello", Transport::mtls(&pki, &u))
        .send()
        .unwrap();
    eprintln!("untrusted: {r:?}");
    assert_ne!(r.status, 200);
    let line = access_log::wait_for_line(&alog, Duration::from_secs(5), |l| {
        l.starts_with("/hello 200")
    })
    .unwrap();
    assert!(
        line.contains("peer=spiffe://cluster.local/ns/foo/sa/bar"),
        "{line}"
    );
    // TCP via s_client
    let (o, err) =
        client::tls_tcp_echo(tcp_port, &pki, &bar, b"ping-123\n", Duration::from_secs(5)).unwrap();
    assert_eq!(o, client::TcpOutcome::Echoed, "{err}");
    let o = client::tcp_echo(tcp_port, b"ping-123\n", Duration::from_secs(3)).unwrap();
    eprintln!("plaintext tcp: {o:?}");
    assert!(
        envoy
            .stat("http.inbound.downstream_rq_2xx")
            .unwrap()
            .unwrap()
            >= 1
    );
    assert!(envoy
        .stat_or_zero("listener.127.0.0.1_".to_string().as_str())
        .is_ok());
}
