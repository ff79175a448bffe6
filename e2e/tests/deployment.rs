//! Deployment failures fail closed: an invalid policy is refused and enforced as deny-all, never
//! as allow-all; a deployment missing a companion filter denies instead of allowing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::time::Duration;

use meshauthz_harness::assert::{assert_denied, assert_refused};
use meshauthz_harness::client::Transport;
use meshauthz_harness::sidecar::{remove_filter, Sidecar};

const WAIT: Duration = Duration::from_secs(5);

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
    let log = s
        .envoy
        .wait_log_contains("configuration refused", WAIT)
        .unwrap();
    assert!(
        log.contains("AuthorizationPolicy foo/bad-port")
            && log.contains("spec.rules[0].to[0].operation.ports[0]")
            && log.contains("bad port (http)"),
        "Envoy's log does not name the object, the field and the problem:\n{log}"
    );
}

const ALLOW_BAR: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-bar, namespace: foo}
spec:
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/foo/sa/bar"]}
"#;

/// Scenario 6b: valid, then an invalid update through Envoy's LDS (the template's listener served
/// from a file that the test rewrites; see `sidecar::to_dynamic_listeners`): the invalid update
/// is refused and not enforced as allow-all; a later valid update restores service.
#[test]
fn invalid_policy_update_is_refused_not_allow_all() {
    let mut s = Sidecar::builder("invalid-update")
        .dynamic_listener()
        .policies(ALLOW_BAR)
        .start()
        .unwrap();
    let bar = s.mtls("foo", "bar").unwrap();
    assert_eq!(s.get("/", bar.clone()).send().unwrap().status, 200);
    assert_denied(&s.get("/", s.mtls("other", "x").unwrap()).send().unwrap());
    let hits = s.app.hits();

    // The invalid DENY alone: dropping it would leave no policy, i.e. allow-all.
    s.update_policies(INVALID_DENY).unwrap();
    s.envoy
        .wait_log_contains("AuthorizationPolicy foo/bad-port", WAIT)
        .unwrap();
    for _ in 0..3 {
        let x = assert_refused(&s.get("/", s.mtls("other", "x").unwrap()).send().unwrap());
        let p = assert_refused(&s.get("/", Transport::Plaintext).send().unwrap());
        let r = s.get("/", bar.clone()).send().unwrap();
        // The previous valid configuration may stay in force for `foo/bar` (200) or
        // everything is refused; never allow-all.
        assert!(
            r.status == 200 || r.status == 403 || r.status == 0,
            "{r:#?}"
        );
        eprintln!(
            "after the invalid update: other/x -> {x}, plaintext -> {p}, foo/bar -> {} (exit {})",
            r.status, r.exit
        );
    }
    assert!(
        s.envoy
            .wait_stat_at_least("wasmcustom.meshauthz.config_refused", 1, WAIT)
            .unwrap()
            >= 1
    );
    let served_bar = s.app.hits() - hits;

    // A valid update restores service.
    s.update_policies(ALLOW_BAR).unwrap();
    let r = s.get("/", bar).send().unwrap();
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(s.app.hits(), hits + served_bar + 1);
    assert_denied(&s.get("/", s.mtls("other", "x").unwrap()).send().unwrap());
}

/// An AUDIT policy: every GET is audited.
const AUDIT_GETS: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-gets, namespace: foo}
spec:
  action: AUDIT
  rules:
  - to:
    - operation: {methods: ["GET"]}
"#;

/// [`AUDIT_GETS`] beside [`ALLOW_BAR`].
fn audited_allow() -> String {
    format!("{AUDIT_GETS}---{ALLOW_BAR}")
}

/// Scenario 9: a deployment missing a companion filter fails closed.
///
/// Transformation (documented, minimal): from the rendered `server-http.yaml`, remove the one
/// HTTP filter list item `- name: envoy.filters.http.rbac` (the RBAC `action: LOG` companion
/// that turns the module's audit flag into `envoy.common.access_log_hint`), or the one
/// `envoy.filters.http.wasm` item whose root id is `meshauthz_http_enforce`. Nothing else changes.
#[test]
fn missing_companion_filter_fails_closed() {
    // Control: the complete template serves the allowed caller.
    let full = Sidecar::builder("companion-control")
        .policies(&audited_allow())
        .start()
        .unwrap();
    let r = full
        .get("/", full.mtls("foo", "bar").unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status, 200, "control: {r:#?}");

    // Without the RBAC LOG companion an audited request cannot be recorded: denied.
    let no_log = Sidecar::builder("companion-no-rbac-log")
        .policies(&audited_allow())
        .transform(|c| remove_filter(c, "envoy.filters.http.rbac", "action: LOG", 1))
        .start()
        .unwrap();
    assert!(!no_log
        .envoy
        .config_text()
        .contains("envoy.filters.http.rbac"));
    assert_denied(
        &no_log
            .get("/", no_log.mtls("foo", "bar").unwrap())
            .send()
            .unwrap(),
    );
    assert_denied(
        &no_log
            .get("/", no_log.mtls("other", "x").unwrap())
            .send()
            .unwrap(),
    );
    assert_eq!(no_log.app.hits(), 0);
    assert!(
        no_log
            .envoy
            .wait_stat_at_least("wasmcustom.meshauthz.fail_closed", 1, WAIT)
            .unwrap()
            >= 1
    );
    no_log
        .envoy
        .wait_log_contains("RBAC LOG companion filter is missing", WAIT)
        .unwrap();

    // Without the enforce stage, the decide stage denies by itself; and since AUDIT policies apply
    // and nothing after the decide stage can check that the RBAC LOG companion wrote the audit
    // hint, an allowed caller is refused too (`deny audit-companion-missing`): a missing piece
    // fails closed rather than losing the audit trail.
    let no_enforce = Sidecar::builder("companion-no-enforce")
        .policies(&audited_allow())
        .transform(|c| {
            remove_filter(
                c,
                "envoy.filters.http.wasm",
                "root_id: meshauthz_http_enforce",
                1,
            )
        })
        .start()
        .unwrap();
    assert_denied(
        &no_enforce
            .get("/", no_enforce.mtls("other", "x").unwrap())
            .send()
            .unwrap(),
    );
    assert_denied(
        &no_enforce
            .get("/", no_enforce.mtls("foo", "bar").unwrap())
            .send()
            .unwrap(),
    );
    assert_eq!(no_enforce.app.hits(), 0);
}
