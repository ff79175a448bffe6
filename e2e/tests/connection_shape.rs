//! The connection-level shape (issue 12): `envoy-config/envoy/server-http-conn.yaml` runs
//! `meshauthz_net` with `"enforce": "connection"`, which decides each connection on an HTTP port
//! once, with Istio's HTTP semantics, and Envoy's RBAC filter in DENY mode on that verdict: no
//! Wasm call per request. The module accepts the shape only for policies that read no request
//! attribute and without AUDIT; refused, it keeps no configuration and closes every connection.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::time::Duration;

use meshauthz_harness::access_log;
use meshauthz_harness::assert::{assert_denied, assert_ok, assert_refused};
use meshauthz_harness::client::Transport;
use meshauthz_harness::policy;
use meshauthz_harness::sidecar::Sidecar;
use meshauthz_harness::Result;

const TEMPLATE: &str = "server-http-conn.yaml";
const WAIT: Duration = Duration::from_secs(5);
/// `%RESPONSE_CODE_DETAILS%` when Envoy's RBAC filter denied on the connection's verdict.
const RBAC_DENIED: &str = "rbac_access_denied_matched_policy[meshauthz-enforce]";

fn connection_mode(config: &str) -> Result<String> {
    policy::with_enforce(config, "connection")
}

fn entry(s: &Sidecar, path: &str) -> serde_json::Value {
    access_log::wait_for_request(&s.access_log, "GET", path, WAIT).unwrap()
}

#[test]
fn the_connection_verdict_allows_and_denies_like_istio() {
    let s = Sidecar::builder("conn-shape")
        .template(TEMPLATE)
        .policies(&policy::allow_principals(
            "allow-bar",
            &["cluster.local/ns/foo/sa/bar"],
        ))
        .transform(connection_mode)
        .start()
        .unwrap();
    let text = s.envoy.config_text();
    assert!(!text.contains("envoy.filters.http.wasm"), "{text}");
    let bar = || s.mtls("foo", "bar").unwrap();
    assert_ok(&s.get("/hello", bar()).send().unwrap());
    assert_ok(&s.get("/again", bar()).http1().send().unwrap());
    assert_denied(
        &s.get("/other", s.mtls("other", "x").unwrap())
            .send()
            .unwrap(),
    );
    assert_denied(
        &s.get("/plain", Transport::Plaintext)
            .http1()
            .send()
            .unwrap(),
    );
    assert_eq!(s.app.hits(), 2, "a denied request reached the application");

    let e = entry(&s, "/hello");
    assert_eq!(e["code"], 200, "{e}");
    assert_eq!(
        e["decision"], "allow ns[foo]-policy[allow-bar]-rule[0]",
        "the access log names the rule that allowed the connection: {e}"
    );
    for path in ["/other", "/plain"] {
        let e = entry(&s, path);
        assert_eq!(e["code"], 403, "{e}");
        assert_eq!(e["details"], RBAC_DENIED, "{e}");
        assert!(e["decision"].as_str().unwrap().starts_with("deny"), "{e}");
    }
    assert!(
        !s.envoy.log().contains("configuration refused"),
        "{}",
        s.envoy.log()
    );
}

#[test]
fn policies_that_read_the_request_refuse_the_connection_shape_and_fail_closed() {
    // An ALLOW on a path cannot be decided before the request: the module refuses the
    // configuration, has none, and closes every connection; nothing reaches the application.
    let path_policy = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-hello, namespace: foo}
spec:
  selector: {matchLabels: {app: echo}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/foo/sa/bar]}}]
    to: [{operation: {paths: [/hello]}}]
"#;
    let s = Sidecar::builder("conn-shape-refused")
        .template(TEMPLATE)
        .policies(path_policy)
        .transform(connection_mode)
        .start()
        .unwrap();
    let r = s
        .get("/hello", s.mtls("foo", "bar").unwrap())
        .send()
        .unwrap();
    assert_eq!(assert_refused(&r), "connection closed", "{r:#?}");
    assert_eq!(s.app.hits(), 0, "a request reached the application");
    let log = s.envoy.log();
    assert!(
        log.contains("enforce: \"connection\""),
        "the refusal names the mode: {log}"
    );
    assert!(log.contains("paths / request.path"), "{log}");
}
