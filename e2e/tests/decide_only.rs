//! The one-stage chain (issue 12): `envoy-config/envoy/server-http-decide.yaml` runs only
//! `meshauthz_net` and `meshauthz_http` with `"enforce": "decide"`; the decide stage answers a
//! denial itself with Istio's `403 RBAC: access denied`. `server-tcp-decide.yaml` runs only
//! `meshauthz_net`, which closes a denied connection itself. With AUDIT policies that
//! configuration is refused and every request or connection is denied (fail closed): an audit
//! trail is never lost silently.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::time::Duration;

use meshauthz_harness::assert::{assert_denied, assert_ok, assert_refused};
use meshauthz_harness::client::{self, TcpOutcome, Transport};
use meshauthz_harness::policy;
use meshauthz_harness::sidecar::Sidecar;
use meshauthz_harness::Result;

const TEMPLATE: &str = "server-http-decide.yaml";
const TCP_TEMPLATE: &str = "server-tcp-decide.yaml";
const WAIT: Duration = Duration::from_secs(5);

fn allow_bar() -> String {
    policy::allow_principals("allow-bar", &["cluster.local/ns/foo/sa/bar"])
}

fn audit_api() -> String {
    policy::audit_paths("audit-api", &["/api/*"])
}

fn decide_mode(config: &str) -> Result<String> {
    policy::with_enforce(config, "decide")
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
        .policies(&format!("{}{}", allow_bar(), audit_api()))
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

/// The plugin configuration `meshauthz plugin-config` writes for a TCP port when no AUDIT policy
/// applies: the writer's document with `"enforce": "decide"`.
fn tcp_decide_config(yaml: &str) -> serde_json::Value {
    let mut config = policy::plugin_config_for(yaml, &[]).unwrap();
    config["enforce"] = "decide".into();
    config
}

#[test]
fn the_network_stage_alone_allows_and_closes_like_istio() {
    let strict = "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: foo}\nspec: {mtls: {mode: STRICT}}\n";
    let s = Sidecar::builder("decide-only-tcp")
        .template(TCP_TEMPLATE)
        .tcp_app()
        .plugin_config(tcp_decide_config(&format!("{}{strict}", allow_bar())))
        .start()
        .unwrap();
    let text = s.envoy.config_text();
    assert!(!text.contains("root_id: meshauthz_net_enforce"));
    // No RBAC LOG companion; the one network RBAC filter is the misdeclared-port guard.
    assert!(!text.contains("action: LOG"));
    assert_eq!(text.matches("envoy.filters.network.rbac").count(), 1);
    assert!(text.contains("meshauthz-http-port-on-tcp-chain"));
    let bar = s.pki.client("foo", "bar").unwrap();
    let (o, e) = client::tls_tcp_echo(s.port, &s.pki, &bar, b"ping-bar\n", WAIT).unwrap();
    assert_eq!(o, TcpOutcome::Echoed, "allowed principal over mTLS: {e}");
    let x = s.pki.client("other", "x").unwrap();
    let (o, e) = client::tls_tcp_echo(s.port, &s.pki, &x, b"ping-x\n", WAIT).unwrap();
    assert!(
        matches!(o, TcpOutcome::Closed(ref got) if !got.contains("ping-x")),
        "denied principal over mTLS: {o:?} {e}"
    );
    let o = client::tcp_echo(s.port, b"ping-plain\n", WAIT).unwrap();
    assert_eq!(o, TcpOutcome::Reset, "plaintext on a STRICT TCP port");
    assert!(
        !s.envoy.log().contains("configuration refused"),
        "{}",
        s.envoy.log()
    );
}

#[test]
fn tcp_audit_policies_without_their_companions_fail_closed() {
    let audit_all = "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: audit-all, namespace: foo}\nspec: {action: AUDIT, rules: [{}]}\n";
    let s = Sidecar::builder("decide-only-tcp-audit")
        .template(TCP_TEMPLATE)
        .tcp_app()
        .plugin_config(tcp_decide_config(&format!("{}{audit_all}", allow_bar())))
        .start()
        .unwrap();
    // bar would be allowed (and audited): refused, the connection is closed unanswered.
    let bar = s.pki.client("foo", "bar").unwrap();
    let (o, e) = client::tls_tcp_echo(s.port, &s.pki, &bar, b"ping-bar\n", WAIT).unwrap();
    assert!(
        matches!(o, TcpOutcome::Closed(ref got) if !got.contains("ping-bar"))
            || o == TcpOutcome::Reset,
        "{o:?} {e}"
    );
    s.envoy
        .wait_log_contains(
            "AUDIT policies apply to this workload (foo/audit-all)",
            WAIT,
        )
        .unwrap();
}
