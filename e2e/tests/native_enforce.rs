//! The native enforce stage (issue 12): `envoy-config/envoy/server-http-native.yaml` and
//! `server-tcp-native.yaml` run `meshauthz_net`, `meshauthz_http` (HTTP), the RBAC LOG companion,
//! then Envoy's own RBAC filter in DENY mode on the decision in filter state, with
//! `"enforce": "native"`: one Wasm call per request even with AUDIT policies. The decide stage
//! answers a denial itself when no AUDIT policy applies; an audited denial is left to the native
//! filter, after the companion marked it. Missing pieces deny: no decision (the decide stage
//! absent), or an audited request the companion did not mark.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::time::Duration;

use meshauthz_harness::access_log;
use meshauthz_harness::assert::{assert_denied, assert_ok};
use meshauthz_harness::client::{self, TcpOutcome, Transport};
use meshauthz_harness::policy;
use meshauthz_harness::sidecar::{remove_filter, Sidecar};
use meshauthz_harness::Result;

const TEMPLATE: &str = "server-http-native.yaml";
const TCP_TEMPLATE: &str = "server-tcp-native.yaml";
const WAIT: Duration = Duration::from_secs(5);
/// `%RESPONSE_CODE_DETAILS%` when Envoy's RBAC filter denied (the native enforce stage).
const NATIVE_DENIED: &str = "rbac_access_denied_matched_policy[meshauthz-enforce]";

fn allow_bar() -> String {
    policy::allow_principals("allow-bar", &["cluster.local/ns/foo/sa/bar"])
}

fn audit_api() -> String {
    policy::audit_paths("audit-api", &["/api/*"])
}

fn native_mode(config: &str) -> Result<String> {
    policy::with_enforce(config, "native")
}

fn entry(s: &Sidecar, path: &str) -> serde_json::Value {
    access_log::wait_for_request(&s.access_log, "GET", path, WAIT).unwrap()
}

#[test]
fn native_enforce_allows_denies_and_audits_like_istio() {
    let s = Sidecar::builder("native-enforce")
        .template(TEMPLATE)
        .policies(&format!("{}{}", allow_bar(), audit_api()))
        .transform(native_mode)
        .start()
        .unwrap();
    let text = s.envoy.config_text();
    assert!(!text.contains("root_id: meshauthz_http_enforce"), "{text}");
    let bar = || s.mtls("foo", "bar").unwrap();
    let other = || s.mtls("other", "x").unwrap();
    assert_ok(&s.get("/hello", bar()).send().unwrap());
    assert_ok(&s.get("/api/bar", bar()).http1().send().unwrap());
    assert_denied(&s.get("/api/other", other()).send().unwrap());
    assert_denied(&s.get("/other", other()).http1().send().unwrap());
    assert_denied(&s.get("/api/plain", Transport::Plaintext).send().unwrap());
    assert_eq!(s.app.hits(), 2, "a denied request reached the application");

    // Audited requests carry Istio's access-log hint, allowed or denied; a denial where AUDIT
    // policies apply is answered by the native filter, after the companion ran.
    let e = entry(&s, "/api/bar");
    assert_eq!(
        (e["code"].clone(), e["audit"].clone()),
        (200.into(), true.into()),
        "{e}"
    );
    for path in ["/api/other", "/api/plain"] {
        let e = entry(&s, path);
        assert_eq!(e["code"], 403, "{e}");
        assert_eq!(e["audit"], true, "{e}");
        assert_eq!(e["details"], NATIVE_DENIED, "{e}");
        assert!(e["decision"].as_str().unwrap().starts_with("deny"), "{e}");
    }
    let e = entry(&s, "/other");
    assert_eq!(
        (e["code"].clone(), e["audit"].clone()),
        (403.into(), false.into()),
        "{e}"
    );
    assert!(
        !s.envoy.log().contains("configuration refused"),
        "{}",
        s.envoy.log()
    );
}

#[test]
fn without_audit_policies_the_decide_stage_answers_itself() {
    let s = Sidecar::builder("native-enforce-noaudit")
        .template(TEMPLATE)
        .policies(&allow_bar())
        .transform(native_mode)
        .start()
        .unwrap();
    assert_ok(
        &s.get("/hello", s.mtls("foo", "bar").unwrap())
            .send()
            .unwrap(),
    );
    assert_denied(
        &s.get("/denied", s.mtls("other", "x").unwrap())
            .send()
            .unwrap(),
    );
    let e = entry(&s, "/denied");
    assert_eq!(e["code"], 403, "{e}");
    assert_ne!(e["details"], NATIVE_DENIED, "the decide stage answers: {e}");
    assert_eq!(s.app.hits(), 1);
}

#[test]
fn missing_pieces_deny() {
    // No decide stage: no decision in filter state, the native filter denies everything.
    let s = Sidecar::builder("native-enforce-no-decide")
        .template(TEMPLATE)
        .policies(&allow_bar())
        .transform(|c| {
            let c = native_mode(c)?;
            remove_filter(&c, "envoy.filters.http.wasm", "name: meshauthz_http", 1)
        })
        .start()
        .unwrap();
    let r = s
        .get("/hello", s.mtls("foo", "bar").unwrap())
        .send()
        .unwrap();
    assert_denied(&r);
    assert_eq!(s.app.hits(), 0);
    assert_eq!(entry(&s, "/hello")["details"], NATIVE_DENIED);
    drop(s);

    // No RBAC LOG companion: an allowed request that AUDIT policies mark is denied (its audit
    // trail would be lost); one they do not mark passes.
    let s = Sidecar::builder("native-enforce-no-log")
        .template(TEMPLATE)
        .policies(&format!("{}{}", allow_bar(), audit_api()))
        .transform(|c| {
            let c = native_mode(c)?;
            remove_filter(&c, "envoy.filters.http.rbac", "action: LOG", 1)
        })
        .start()
        .unwrap();
    assert_denied(
        &s.get("/api/bar", s.mtls("foo", "bar").unwrap())
            .send()
            .unwrap(),
    );
    assert_ok(
        &s.get("/hello", s.mtls("foo", "bar").unwrap())
            .send()
            .unwrap(),
    );
    assert_eq!(s.app.hits(), 1);
    assert_eq!(entry(&s, "/api/bar")["details"], NATIVE_DENIED);
}

/// The plugin configuration for a TCP port with `"enforce": "native"`.
fn tcp_native_config(yaml: &str) -> serde_json::Value {
    let mut config = policy::plugin_config_for(yaml, &[]).unwrap();
    config["enforce"] = "native".into();
    config
}

#[test]
fn the_native_network_stage_allows_closes_and_audits() {
    let audit_all = "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: audit-all, namespace: foo}\nspec: {action: AUDIT, rules: [{}]}\n";
    let s = Sidecar::builder("native-enforce-tcp")
        .template(TCP_TEMPLATE)
        .tcp_app()
        .plugin_config(tcp_native_config(&format!("{}{audit_all}", allow_bar())))
        .start()
        .unwrap();
    let text = s.envoy.config_text();
    assert!(!text.contains("root_id: meshauthz_net_enforce"), "{text}");
    let bar = s.pki.client("foo", "bar").unwrap();
    let (o, e) = client::tls_tcp_echo(s.port, &s.pki, &bar, b"ping-bar\n", WAIT).unwrap();
    assert_eq!(o, TcpOutcome::Echoed, "allowed principal over mTLS: {e}");
    let x = s.pki.client("other", "x").unwrap();
    let (o, e) = client::tls_tcp_echo(s.port, &s.pki, &x, b"ping-x\n", WAIT).unwrap();
    assert!(
        matches!(o, TcpOutcome::Closed(ref got) if !got.contains("ping-x")),
        "denied principal over mTLS: {o:?} {e}"
    );
    // Both connections audited (Istio's access-log hint), the denied one closed by the native filter.
    let lines =
        access_log::wait_for_lines(&s.access_log, 2, WAIT, |l| l.contains("\"decision\"")).unwrap();
    let entries: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(entries.len(), 2, "{lines:?}");
    for e in &entries {
        assert_eq!(e["audit"], true, "{e}");
    }
    assert!(
        entries.iter().any(|e| e["decision"]
            .as_str()
            .is_some_and(|d| d.starts_with("deny"))),
        "{entries:?}"
    );
}
