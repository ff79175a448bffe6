//! Deployment failures fail closed: an invalid policy is refused and enforced as deny-all, never
//! as allow-all; a deployment missing a companion filter denies instead of allowing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use meshauthz_e2e::client::{Response, Transport};
use meshauthz_e2e::sidecar::Sidecar;

const WAIT: Duration = Duration::from_secs(5);

#[track_caller]
fn assert_denied(r: &Response) {
    assert_eq!(r.status, 403, "expected 403, got {r:#?}");
    assert_eq!(r.body, "RBAC: access denied", "{r:#?}");
}

/// Refused without a valid configuration: either a 403, or (what the module does at L4, where it
/// cannot even tell STRICT from PERMISSIVE) the connection closed before any response: curl
/// exit 35 (TLS handshake cut), 52 (empty reply) or 56 (reset). Never a response from the app.
#[track_caller]
fn assert_refused(r: &Response) -> &'static str {
    if r.status == 403 {
        assert_eq!(r.body, "RBAC: access denied", "{r:#?}");
        return "403";
    }
    assert_eq!(
        r.status, 0,
        "expected 403 or a closed connection, got {r:#?}"
    );
    assert!(
        [35, 52, 56].contains(&r.exit),
        "expected 403 or a closed connection, got {r:#?}"
    );
    "connection closed"
}

/// An invalid DENY policy: if it were dropped, nothing would be enforced and every request
/// would get 200.
const INVALID_DENY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-port, namespace: foo}
spec:
  action: DENY
  rules:
  - to:
    - operation: {ports: ["http"]}
"#;

/// Scenario 6a: invalid from the start: every request refused (403 or closed connection), `config_refused` counted, and Envoy's
/// log names the object and the field.
#[test]
fn invalid_policy_from_start_denies_everything() {
    let s = Sidecar::builder("invalid-start")
        .policies(INVALID_DENY)
        .start()
        .unwrap();
    for _ in 0..3 {
        let m = assert_refused(&s.get("/", s.mtls("foo", "bar").unwrap()).send().unwrap());
        let p = assert_refused(&s.get("/", Transport::Plaintext).send().unwrap());
        eprintln!("refused config: mTLS -> {m}, plaintext -> {p}");
    }
    assert_eq!(
        s.app.hits(),
        0,
        "a request reached the app under a refused config"
    );
    let refused = s
        .envoy
        .wait_stat_at_least("wasmcustom.meshauthz.config_refused", 1, WAIT)
        .unwrap();
    assert!(refused >= 1, "config_refused = {refused}");
    let log = s.envoy.log();
    assert!(
        log.contains("foo/bad-port") && log.contains("spec.rules[0].to[0].operation.ports[0]"),
        "Envoy's log does not name the object and field:\n{log}"
    );
}
