//! The module built without CEL conditions (`meshauthz-nocel.wasm`, policy-engine's `cel` feature
//! off): the same enforcement for Istio's own fields (the tagged decision cases replay on it in
//! `cases.rs`), and a policy with a `meshauthz.io/cel` condition refused when it loads, with its
//! object, field and the reason, so that it is never enforced without its condition.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use meshauthz_harness::assert::{assert_denied, assert_ok};
use meshauthz_harness::module_nocel_path;
use meshauthz_harness::policy;
use meshauthz_harness::sidecar::Sidecar;

#[test]
fn without_cel_istio_policies_are_enforced() {
    let s = Sidecar::builder("nocel-allow")
        .module(module_nocel_path().unwrap())
        .policies(&policy::allow_principals(
            "allow-bar",
            &["cluster.local/ns/foo/sa/bar"],
        ))
        .start()
        .unwrap();
    assert_ok(&s.get("/a", s.mtls("foo", "bar").unwrap()).send().unwrap());
    assert_denied(&s.get("/b", s.mtls("foo", "other").unwrap()).send().unwrap());
    assert_eq!(s.app.hits(), 1);
    assert!(
        !s.envoy.log().contains("configuration refused"),
        "{}",
        s.envoy.log()
    );
}

#[test]
fn without_cel_a_cel_condition_is_refused_and_nothing_is_allowed() {
    // An ALLOW that would let bar in only on /public: enforced without its condition it would
    // let bar in everywhere.
    let cel_allow = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: public-only, namespace: foo}
spec:
  rules:
  - from: [{source: {principals: [cluster.local/ns/foo/sa/bar]}}]
    when:
    - key: meshauthz.io/cel
      values: ["request.path == '/public'"]
"#;
    let config = policy::plugin_config_for(cel_allow, &[]).unwrap();
    let s = Sidecar::builder("nocel-refused")
        .module(module_nocel_path().unwrap())
        .policies_for_port(move |_| String::new())
        .plugin_config(config)
        .start()
        .unwrap();
    for path in ["/public", "/private"] {
        let r = s.get(path, s.mtls("foo", "bar").unwrap()).send().unwrap();
        assert_ne!(r.status, 200, "{path}: {r:#?}");
    }
    assert_eq!(s.app.hits(), 0, "a request reached the application");
    let log = s.envoy.log();
    assert!(log.contains("configuration refused"), "{log}");
    assert!(log.contains("foo/public-only"), "{log}");
    assert!(log.contains("spec.rules[0].when[0].values[0]"), "{log}");
    assert!(log.contains("built without CEL conditions"), "{log}");
}
