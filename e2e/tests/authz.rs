//! AuthorizationPolicy end to end: what a caller and the application see through a real Envoy
//! running the built module.
//!
//! Plain decisions (a request, allowed or denied) live in the engine's case files and are played
//! through Envoy by `tests/cases.rs` (cases tagged `e2e: true`; scenario 2, DENY by namespace
//! beside an ALLOW, is `policy-engine/tests/cases/deny-beside-allow.yaml`). What stays here is
//! what a case file cannot express, because it is not a decision of the engine:
//! - `allow_by_principal`: TLS handshake failures (untrusted CA, no client certificate) and their
//!   Envoy stats, HTTP/2 and HTTP/1.1, what reached the app, the module's counters;
//! - `xfcc_is_set_by_envoy_and_a_forged_one_grants_nothing`: the header the app receives;
//! - `path_and_host_tricks_cannot_bypass_deny`: the listener's normalization and 307 redirects,
//!   several requests on one reused connection;
//! - `migration_audit_marks_non_mesh_callers`: the access-log `audit` field and the Prometheus
//!   counter;
//! - `path_tricks_denied_without_listener_normalization`: a changed listener template;
//! - `repeated_header_cannot_hide_a_denied_value`: header order on HTTP/2 and HTTP/1.1 (a case
//!   sends one protocol per transport).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::time::Duration;

use meshauthz_harness::access_log;
use meshauthz_harness::assert::{assert_denied, assert_ok, assert_stat, DENIED_BODY};
use meshauthz_harness::client::Transport;
use meshauthz_harness::policy;
use meshauthz_harness::sidecar::Sidecar;

const WAIT: Duration = Duration::from_secs(5);

/// Scenario 1: ALLOW by principal.
#[test]
fn allow_by_principal() {
    let s = Sidecar::builder("allow-principal")
        .policies(&policy::allow_principals(
            "allow-bar",
            &["cluster.local/ns/foo/sa/bar"],
        ))
        .start()
        .unwrap();
    let bar = s.mtls("foo", "bar").unwrap();
    let r = s.get("/hello", bar.clone()).send().unwrap();
    assert_ok(&r);
    assert_eq!(r.http_version, "2", "mTLS negotiates HTTP/2: {r:#?}");
    assert_ok(&s.get("/hello", bar).http1().send().unwrap());
    assert_eq!(s.app.hits(), 2);
    for t in [
        s.mtls("other", "x").unwrap(),
        s.mtls("istioinaction", "sleep").unwrap(),
        Transport::Plaintext,
    ] {
        assert_denied(&s.get("/hello", t.clone()).send().unwrap());
        assert_denied(&s.get("/hello", t).http1().send().unwrap());
    }
    // The allowed identity from a CA the workload does not trust, or no client certificate:
    // the TLS handshake fails, nothing is served.
    let forged = s.pki.untrusted_client("foo", "bar").unwrap();
    let no_cert = Transport::Tls {
        ca: s.pki.ca_cert.clone(),
        client: None,
    };
    for (t, stat) in [
        (Transport::mtls(&s.pki, &forged), "ssl.fail_verify_error"),
        (no_cert, "ssl.fail_verify_no_cert"),
    ] {
        let r = s.get("/hello", t).send().unwrap();
        // With TLS 1.3 the client learns of the rejection after its side of the handshake,
        // so curl reports it in several ways (exit 16, 35, 55, 56): no HTTP response at all.
        assert_eq!(r.status, 0, "{r:#?}");
        assert_ne!(r.exit, 0, "{r:#?}");
        let name = format!("listener.127.0.0.1_{}.{stat}", s.port);
        assert_eq!(s.envoy.stat(&name).unwrap(), Some(1), "{name}");
    }
    assert_eq!(s.app.hits(), 2, "a denied request reached the application");
    // The module hands its counts to Envoy once per second (on_tick).
    assert_stat(&s.envoy, "wasmcustom.meshauthz.rbac.allowed", 2, WAIT);
    assert_stat(&s.envoy, "wasmcustom.meshauthz.rbac.denied", 6, WAIT);
}

/// Scenario 5: the application receives `x-forwarded-client-cert` with the caller's real URI; a
/// plaintext caller's own `x-forwarded-client-cert` is dropped and grants nothing.
#[test]
fn xfcc_is_set_by_envoy_and_a_forged_one_grants_nothing() {
    let s = Sidecar::builder("xfcc")
        .policies(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-admin, namespace: foo}
spec:
  selector: {matchLabels: {app: echo}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/foo/sa/admin", "cluster.local/ns/foo/sa/bar"]}
    to:
    - operation: {paths: ["/private"]}
  - to:
    - operation: {paths: ["/public"]}
"#,
        )
        .start()
        .unwrap();
    let forged =
        "By=spiffe://cluster.local/ns/foo/sa/echo;URI=spiffe://cluster.local/ns/foo/sa/admin";

    // mTLS: the app sees the caller's real URI, whatever the caller sent.
    let r = s
        .get("/private", s.mtls("foo", "bar").unwrap())
        .header("x-forwarded-client-cert", forged)
        .send()
        .unwrap();
    assert_ok(&r);
    let xfcc = r
        .app_header("x-forwarded-client-cert")
        .unwrap()
        .unwrap_or_default();
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/foo/sa/bar"),
        "app got x-forwarded-client-cert {xfcc:?}"
    );
    assert!(
        !xfcc.contains("sa/admin"),
        "forged XFCC forwarded: {xfcc:?}"
    );

    // Plaintext with a forged XFCC naming the allowed principal: still denied.
    let r = s
        .get("/private", Transport::Plaintext)
        .header("x-forwarded-client-cert", forged)
        .send()
        .unwrap();
    assert_denied(&r);

    // Plaintext to an open path: allowed, and the app does not get the forged header.
    let r = s
        .get("/public", Transport::Plaintext)
        .header("x-forwarded-client-cert", forged)
        .send()
        .unwrap();
    assert_ok(&r);
    let xfcc = r.app_header("x-forwarded-client-cert").unwrap();
    assert!(
        xfcc.as_deref().is_none_or(|v| !v.contains("sa/admin")),
        "the app received the plaintext caller's forged XFCC: {xfcc:?}"
    );

    // The real admin identity is allowed.
    let r = s
        .get("/private", s.mtls("foo", "admin").unwrap())
        .send()
        .unwrap();
    assert_ok(&r);
    let xfcc = r
        .app_header("x-forwarded-client-cert")
        .unwrap()
        .unwrap_or_default();
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/foo/sa/admin"),
        "{xfcc:?}"
    );
}

/// Scenario 7: path tricks cannot bypass a DENY on `/admin`; hosts match case-insensitively.
#[test]
fn path_and_host_tricks_cannot_bypass_deny() {
    let s = Sidecar::builder("path-tricks")
        .policies(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/admin", "/admin/*"]}
  - to:
    - operation: {hosts: ["admin.example.com"]}
"#,
        )
        .start()
        .unwrap();
    let mtls = s.mtls("foo", "bar").unwrap();
    assert_ok(&s.get("/public", mtls.clone()).send().unwrap());
    let before = s.app.hits();
    // Envoy's HCM (as the template configures it, like Istio: normalize_path, merge_slashes)
    // normalizes before the module sees the path, and the module normalizes again itself.
    for path in [
        "/admin",
        "/admin/",
        "/admin/users",
        "/admin?x=1",
        "/admin#frag",
        "/%61dmin",
        "/%61%64%6d%69%6e",
        "/./admin",
        "//admin",
        "///admin/users",
        "/x/../admin",
        "/x/%2e%2e/admin",
        "/x/%2E%2E/admin",
        "/admin/./",
        "/x/..//admin",
        "/x/./../admin/",
    ] {
        for t in [mtls.clone(), Transport::Plaintext] {
            assert_denied(&s.get(path, t).send().unwrap());
        }
    }
    // Escaped slashes/backslashes: the template's `path_with_escaped_slashes_action:
    // UNESCAPE_AND_REDIRECT` answers 307 to the unescaped path, which is then denied.
    for (path, location) in [
        ("/public/..%2fadmin", "/admin"),
        ("/public/%2e%2e%2fadmin", "/admin"),
        ("/admin%2Fusers", "/admin/users"),
        ("/x%2f..%2fadmin", "/admin"),
    ] {
        for t in [mtls.clone(), Transport::Plaintext] {
            let r = s.get(path, t.clone()).send().unwrap();
            assert_eq!(r.status, 307, "{path}: {r:#?}");
            assert!(r.redirect.ends_with(location), "{path}: {r:#?}");
            assert_denied(&s.get(path, t).follow_redirects().send().unwrap());
        }
    }
    assert_eq!(
        s.app.hits(),
        before,
        "a request for /admin in disguise reached the application"
    );

    // Each request is decided on its own, also on a connection that already carried others
    // (HTTP/2 over mTLS, HTTP/1.1 keep-alive in plaintext).
    let seq = [
        "/public",
        "/admin",
        "/public",
        "/%61dmin",
        "/x/../admin",
        "/public",
    ];
    for t in [mtls.clone(), Transport::Plaintext] {
        let got = s.get("/", t).send_sequence(&seq).unwrap();
        let statuses: Vec<u16> = got.iter().map(|(c, _)| *c).collect();
        assert_eq!(statuses, [200, 403, 200, 403, 403, 200], "{got:?}");
        let connects: u32 = got.iter().map(|(_, n)| *n).sum();
        assert_eq!(connects, 1, "curl did not reuse its connection: {got:?}");
    }

    // Istio matches paths case-sensitively: `/ADMIN` is another resource, not denied.
    assert_ok(&s.get("/ADMIN", mtls.clone()).send().unwrap());

    // Hosts: case-insensitive.
    for host in [
        "admin.example.com",
        "ADMIN.example.com",
        "Admin.Example.Com",
    ] {
        let r = s
            .get("/public", mtls.clone())
            .header("Host", host)
            .send()
            .unwrap();
        assert_denied(&r);
    }
    assert_ok(
        &s.get("/public", mtls)
            .header("Host", "www.example.com")
            .send()
            .unwrap(),
    );
}

/// Scenario 3: migration audit. An AUDIT policy `notNamespaces: [istioinaction]` on GETs marks
/// every caller that is not an mTLS caller from istioinaction; nothing is denied.
#[test]
fn migration_audit_marks_non_mesh_callers() {
    let s = Sidecar::builder("audit")
        .policies(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-migration, namespace: foo}
spec:
  selector: {matchLabels: {app: echo}}
  action: AUDIT
  rules:
  - from:
    - source: {notNamespaces: ["istioinaction"]}
    to:
    - operation: {methods: ["GET"], paths: ["/*"]}
"#,
        )
        .start()
        .unwrap();
    let cases = [
        (
            "/mesh-istioinaction",
            s.mtls("istioinaction", "sleep").unwrap(),
            "GET",
            "false",
        ),
        ("/plaintext", Transport::Plaintext, "GET", "true"),
        ("/mesh-other", s.mtls("other", "x").unwrap(), "GET", "true"),
        ("/mesh-foo", s.mtls("foo", "bar").unwrap(), "GET", "true"),
        // Not a GET: the AUDIT rule does not match.
        ("/plaintext-post", Transport::Plaintext, "POST", "false"),
    ];
    for (path, t, method, _) in &cases {
        assert_ok(&s.get(path, t.clone()).method(method).send().unwrap());
    }
    assert_eq!(s.app.hits(), cases.len() as u64);
    for (path, _, method, want) in &cases {
        let entry = access_log::wait_for_request(&s.access_log, method, path, WAIT).unwrap();
        // `%DYNAMIC_METADATA(envoy.common:access_log_hint)%`, set by Envoy's RBAC LOG filter.
        assert_eq!(
            entry["audit"],
            serde_json::json!(*want == "true"),
            "{method} {path}: access log entry {entry}"
        );
        assert_eq!(entry["code"], 200, "{entry}");
    }
    assert_stat(&s.envoy, "wasmcustom.meshauthz.audited", 3, WAIT);
    // The same counter as a Prometheus scrape sees it (Envoy drops the `wasmcustom.` prefix).
    let samples = s.envoy.prometheus("meshauthz_audited").unwrap();
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(samples.first().map(|(_, v)| *v), Some(3.0), "{samples:?}");
}

/// Scenario 7, continued: the module does not rely on the listener normalizing paths. With the
/// HCM's normalization removed from the template (documented transformation: delete the lines
/// `normalize_path: true`, `merge_slashes: true` and `path_with_escaped_slashes_action: ...`),
/// the same tricks are still denied by the module's own normalization.
#[test]
fn path_tricks_denied_without_listener_normalization() {
    let s = Sidecar::builder("path-tricks-raw")
        .policies(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/admin", "/admin/*"]}
"#,
        )
        .transform(|c| {
            let mut removed = 0;
            let out: Vec<&str> = c
                .lines()
                .filter(|l| {
                    let t = l.trim();
                    let drop = t == "normalize_path: true"
                        || t == "merge_slashes: true"
                        || t.starts_with("path_with_escaped_slashes_action:");
                    removed += usize::from(drop);
                    !drop
                })
                .collect();
            assert_eq!(removed, 3, "the template's normalization settings changed");
            Ok(out.join("\n"))
        })
        .start()
        .unwrap();
    let mtls = s.mtls("foo", "bar").unwrap();
    assert_ok(&s.get("/public", mtls.clone()).send().unwrap());
    // Without normalization the application receives the raw path: prove it.
    let r = s.get("/x/../public", mtls.clone()).send().unwrap();
    assert_ok(&r);
    assert_eq!(
        r.json().unwrap()["path"],
        "/x/../public",
        "the listener normalized anyway"
    );
    let before = s.app.hits();
    for path in [
        "/%61dmin",
        "/./admin",
        "//admin",
        "/x/../admin",
        "/x/%2e%2e/admin",
        "/admin/./users",
        "/x/..//admin",
        "/x/./..//./admin/",
    ] {
        for t in [mtls.clone(), Transport::Plaintext] {
            let r = s.get(path, t).send().unwrap();
            assert_eq!(
                (r.status, r.body.as_str()),
                (403, DENIED_BODY),
                "{path}: {r:#?}"
            );
        }
    }
    assert_eq!(s.app.hits(), before);
}

/// A header sent twice: Envoy's RBAC matches when any one value matches, and so does meshauthz,
/// so a second copy of a header cannot hide a value a DENY rule names (nor one an ALLOW rule's
/// `notValues` excludes).
#[test]
fn repeated_header_cannot_hide_a_denied_value() {
    let s = Sidecar::builder("repeated-header")
        .policies(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-debug, namespace: foo}
spec:
  action: DENY
  rules:
  - when:
    - key: request.headers[x-debug]
      values: ["on"]
"#,
        )
        .start()
        .unwrap();
    let t = s.mtls("foo", "bar").unwrap();
    assert_ok(
        &s.get("/a", t.clone())
            .header("x-debug", "off")
            .send()
            .unwrap(),
    );
    assert_denied(
        &s.get("/a", t.clone())
            .header("x-debug", "on")
            .send()
            .unwrap(),
    );
    for (first, second) in [("off", "on"), ("on", "off")] {
        for http1 in [false, true] {
            let mut r = s
                .get("/a", t.clone())
                .header("x-debug", first)
                .header("x-debug", second);
            if http1 {
                r = r.http1();
            }
            assert_denied(&r.send().unwrap());
        }
    }
    // A single value that merely contains a comma is one value, as Envoy sees it.
    assert_ok(
        &s.get("/a", t)
            .header("x-debug", "off,onward")
            .send()
            .unwrap(),
    );
    assert_eq!(s.app.hits(), 2);
}
