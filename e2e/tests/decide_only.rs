//! The one-stage chain (issue 12): `envoy-config/envoy/server-http-decide.yaml` runs only
//! `meshauthz_net` and `meshauthz_http` with `"enforce": "decide"`; the decide stage answers a
//! denial itself with Istio's `403 RBAC: access denied`. With AUDIT policies that configuration is
//! refused and every request is denied (fail closed): an audit trail is never lost silently.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::time::Duration;

use meshauthz_harness::assert::{assert_denied, assert_ok, assert_refused};
use meshauthz_harness::client::Transport;
use meshauthz_harness::policy;
use meshauthz_harness::sidecar::Sidecar;
use meshauthz_harness::{Error, Result};

const TEMPLATE: &str = "server-http-decide.yaml";

fn allow_bar() -> String {
    policy::allow_principals("allow-bar", &["cluster.local/ns/foo/sa/bar"])
}

const AUDIT_API: &str = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-api, namespace: foo}
spec:
  selector: {matchLabels: {app: echo}}
  action: AUDIT
  rules:
  - to:
    - operation: {paths: ["/api/*"]}
"#;

/// Adds `"enforce": "decide"` to both plugin configurations of the rendered template (they sit
/// JSON-escaped inside `value: "..."`).
fn decide_mode(config: &str) -> Result<String> {
    let key = r#"\"httpPorts\":"#;
    if config.matches(key).count() != 2 {
        return Err(Error(format!(
            "expected the plugin configuration twice (meshauthz_net, meshauthz_http) in {TEMPLATE}"
        )));
    }
    Ok(config.replace(key, r#"\"enforce\":\"decide\",\"httpPorts\":"#))
}

#[test]
fn the_decide_stage_alone_allows_and_denies_like_istio() {
    let s = Sidecar::builder("decide-only")
        .template(TEMPLATE)
        .policies(&allow_bar())
        .transform(decide_mode)
        .start()
        .unwrap();
    assert!(!s
        .envoy
        .config_text()
        .contains("root_id: meshauthz_http_enforce"));
    assert_ok(
        &s.get("/hello", s.mtls("foo", "bar").unwrap())
            .send()
            .unwrap(),
    );
    assert_ok(
        &s.get("/hello", s.mtls("foo", "bar").unwrap())
            .http1()
            .send()
            .unwrap(),
    );
    for t in [s.mtls("other", "x").unwrap(), Transport::Plaintext] {
        assert_denied(&s.get("/hello", t.clone()).send().unwrap());
        assert_denied(&s.get("/hello", t).http1().send().unwrap());
    }
    assert_eq!(s.app.hits(), 2, "a denied request reached the application");
    assert!(
        !s.envoy.log().contains("configuration refused"),
        "{}",
        s.envoy.log()
    );
}

#[test]
fn audit_policies_without_their_companions_fail_closed() {
    let s = Sidecar::builder("decide-only-audit")
        .template(TEMPLATE)
        .policies(&format!("{}{AUDIT_API}", allow_bar()))
        .transform(decide_mode)
        .start()
        .unwrap();
    // bar would be allowed (and audited on /api/*): without the RBAC LOG companion no audit
    // trail can be written, so the configuration is refused and everything is denied: meshauthz_net
    // (same configuration) closes the connection, or meshauthz_http answers 403.
    for path in ["/api/x", "/hello"] {
        assert_refused(&s.get(path, s.mtls("foo", "bar").unwrap()).send().unwrap());
    }
    assert_eq!(s.app.hits(), 0);
    s.envoy
        .wait_log_contains(
            "AUDIT policies apply to this workload (foo/audit-api)",
            Duration::from_secs(5),
        )
        .unwrap();
}
