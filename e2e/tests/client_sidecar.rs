//! The in-mesh client sidecar (`envoy-config/envoy/client-sidecar.yaml`) in front of the server
//! sidecar: the application calls plaintext, the sidecar originates mTLS with its own SPIFFE
//! certificate, and it refuses a server that does not prove the expected identity.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use meshauthz_harness::assert::assert_ok;
use meshauthz_harness::certs::SERVER_SPIFFE;
use meshauthz_harness::client::{Request, Transport};
use meshauthz_harness::envoy::{free_port, Envoy};
use meshauthz_harness::sidecar::Sidecar;
use meshauthz_sandbox::mesh::{render_client, EnvoyPaths, Ports};

const AUDIT_OUTSIDE_ISTIOINACTION: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-outside-mesh, namespace: foo}
spec:
  selector: {matchLabels: {app: echo}}
  action: AUDIT
  rules:
  - from:
    - source: {notNamespaces: ["istioinaction"]}
"#;

fn client_sidecar(server: &Sidecar, upstream_id: &str) -> (Envoy, u16) {
    let pki = &server.pki;
    let cert = pki.client("istioinaction", "sleep").unwrap();
    let work = server.work.path().to_path_buf();
    let mut outbound = 0;
    let envoy = Envoy::start_with_retry(&work, "client", || {
        let ports = Ports {
            inbound: server.port,
            client: free_port()?,
            client_admin: free_port()?,
            ..Ports::default()
        };
        outbound = ports.client;
        let paths = EnvoyPaths {
            cert_dir: pki.dir().display().to_string(),
            module: String::new(),
            access_log: String::new(),
            client_cert: cert.cert.display().to_string(),
            client_key: cert.key.display().to_string(),
        };
        let config = render_client(&ports, &paths)?.replace(SERVER_SPIFFE, upstream_id);
        Ok((config, ports.client_admin))
    })
    .unwrap();
    (envoy, outbound)
}

#[test]
fn client_sidecar_originates_mtls_with_its_spiffe_identity() {
    let server = Sidecar::builder("client-sidecar")
        .policies(AUDIT_OUTSIDE_ISTIOINACTION)
        .start()
        .unwrap();
    let (_client, port) = client_sidecar(&server, SERVER_SPIFFE);
    let r = Request::get(port, "/hello", Transport::Plaintext)
        .send()
        .unwrap();
    assert_ok(&r);
    let xfcc = r.app_header("x-forwarded-client-cert").unwrap().unwrap();
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/istioinaction/sa/sleep"),
        "the application saw XFCC {xfcc:?}"
    );
    let entry = meshauthz_harness::access_log::wait_for_request(
        &server.access_log,
        "GET",
        "/hello",
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(entry["chain"], "mtls", "{entry}");
    assert_eq!(
        entry["peer"], "spiffe://cluster.local/ns/istioinaction/sa/sleep",
        "{entry}"
    );
    assert_eq!(
        entry["audit"], false,
        "an in-mesh caller was audited: {entry}"
    );
}

#[test]
fn client_sidecar_refuses_a_server_with_another_identity() {
    let server = Sidecar::builder("client-sidecar-wrong-server")
        .start()
        .unwrap();
    let (_client, port) = client_sidecar(&server, "spiffe://cluster.local/ns/foo/sa/impostor");
    let r = Request::get(port, "/hello", Transport::Plaintext)
        .send()
        .unwrap();
    assert_eq!(r.status, 503, "{r:#?}");
    assert_eq!(server.app.hits(), 0, "the request reached the application");
}
