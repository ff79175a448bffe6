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

/// Scenario 6a: invalid from the start: every request 403, `config_refused` counted, and Envoy's
/// log names the object and the field.
#[test]
fn invalid_policy_from_start_denies_everything() {
    let s = Sidecar::builder("invalid-start")
        .policies(INVALID_DENY)
        .start()
        .unwrap();
    assert_denied(&s.get("/", s.mtls("foo", "bar").unwrap()).send().unwrap());
    assert_denied(&s.get("/", Transport::Plaintext).send().unwrap());
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
