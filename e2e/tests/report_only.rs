//! Report-only STRICT end to end (`meshauthz.io/strict-report-only`), against a real Envoy with
//! the module, real certificates and curl: a plaintext caller on a report-only STRICT port gets
//! its answer (authorized as on PERMISSIVE: a DENY rule still denies), the module counts it in
//! `meshauthz.plaintext.<port>.report_only` and logs the caller's address once per connection,
//! `strict-readiness` says "not ready" naming the caller from the access log; a new configuration
//! without the annotation resets the same caller. Needs the CLI binary (as
//! `strict_readiness.rs`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::time::{Duration, Instant};

use meshauthz_harness::access_log;
use meshauthz_harness::assert::{assert_denied, assert_ok, assert_reset, assert_stat};
use meshauthz_harness::client::{self, TcpOutcome, Transport};
use meshauthz_harness::sidecar::{plaintext_stat, Sidecar};

const WAIT: Duration = Duration::from_secs(5);

/// STRICT for the namespace, report-only on `annotation` (`None`: no annotation, enforced), and
/// a DENY rule on `/admin`.
fn policies(annotation: Option<&str>) -> String {
    let annotations = match annotation {
        Some(a) => format!("annotations: {{meshauthz.io/strict-report-only: \"{a}\"}}, "),
        None => String::new(),
    };
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{{annotations}name: default, namespace: foo}}
spec:
  mtls: {{mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-admin, namespace: foo}}
spec:
  action: DENY
  rules:
  - to: [{{operation: {{paths: ["/admin"]}}}}]
"#
    )
}

/// The module's report-only log lines (Envoy logs wasm at warning level in the e2e suite).
fn report_only_lines(s: &Sidecar) -> Vec<String> {
    s.envoy
        .log()
        .lines()
        .filter(|l| l.contains("report-only STRICT: plaintext connection from"))
        .map(str::to_string)
        .collect()
}

#[test]
fn report_only_strict_admits_counts_logs_then_enforces_when_switched_off() {
    let mut s = Sidecar::builder("report-only")
        .policies_for_port(|port| policies(Some(&port.to_string())))
        .dynamic_listener()
        .start()
        .unwrap();
    let port = s.port;

    // The in-mesh caller, and the legacy plaintext caller: served (no reset), authorized as on
    // PERMISSIVE: the DENY rule still answers 403.
    assert_ok(
        &s.get("/hello", s.mtls("istioinaction", "sleep").unwrap())
            .send()
            .unwrap(),
    );
    assert_ok(&s.get("/hello", Transport::Plaintext).send().unwrap());
    assert_denied(&s.get("/admin", Transport::Plaintext).send().unwrap());
    assert_eq!(
        s.app.hits(),
        2,
        "the two allowed requests reached the application"
    );

    // Counted per connection (curl opens one per run), on the port's own counter.
    assert_stat(&s.envoy, &plaintext_stat(port, "report_only"), 2, WAIT);
    assert_eq!(
        s.envoy
            .stat_or_zero(&plaintext_stat(port, "rejected"))
            .unwrap(),
        0
    );
    assert_eq!(
        s.envoy
            .stat_or_zero(&plaintext_stat(port, "accepted"))
            .unwrap(),
        0
    );

    // Logged once per connection, naming the caller's address, the one the access log has.
    let deadline = Instant::now() + WAIT;
    while report_only_lines(&s).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let logged = report_only_lines(&s);
    assert_eq!(logged.len(), 2, "{}", s.envoy.log());
    access_log::wait_for_lines(&s.access_log, 3, WAIT, |l| {
        serde_json::from_str::<serde_json::Value>(l).is_ok()
    })
    .unwrap();
    let access = access_log::json_lines(&s.access_log);
    let plaintext: Vec<&serde_json::Value> = access
        .iter()
        .filter(|l| l["chain"] == "plaintext")
        .collect();
    assert_eq!(plaintext.len(), 2, "{access:?}");
    for entry in &plaintext {
        let src = entry["src"].as_str().unwrap();
        assert!(src.starts_with("127.0.0.1:"), "{entry}");
        let needle = format!("from {src} to port {port} admitted");
        assert!(
            logged.iter().any(|l| l.contains(&needle)),
            "no log line names {src}: {logged:?}"
        );
    }

    // strict-readiness: not ready, the report-only connections as evidence, the caller named.
    let (code, out) = s.strict_readiness().unwrap();
    eprintln!("{out}");
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains(&format!(
            "port {port}: NOT READY (plaintext accepted 0, rejected 0, report-only 2): 2 plaintext connection(s) would have been reset since "
        )),
        "{out}"
    );
    assert!(
        out.contains("callers (access log): 127.0.0.1 (2: GET /hello, GET /admin)"),
        "{out}"
    );

    // The operator switches the annotation off: a new configuration, STRICT enforced. The same
    // caller is reset before any byte reaches the application; mTLS still works.
    s.update_policies(&policies(None)).unwrap();
    assert_reset(&s.get("/hello", Transport::Plaintext).send().unwrap());
    assert_ok(
        &s.get("/hello", s.mtls("istioinaction", "sleep").unwrap())
            .send()
            .unwrap(),
    );
    assert_eq!(s.app.hits(), 3, "the reset request reached the application");
    assert_stat(&s.envoy, &plaintext_stat(port, "rejected"), 1, WAIT);
    assert_eq!(
        s.envoy
            .stat_or_zero(&plaintext_stat(port, "report_only"))
            .unwrap(),
        2
    );
    assert_eq!(report_only_lines(&s).len(), 2, "no new report-only line");
}

#[test]
fn report_only_strict_on_a_tcp_port() {
    let s = Sidecar::builder("report-only-tcp")
        .tcp()
        // PeerAuthentication only: on TCP the DENY on `paths` would deny every connection.
        .policies(
            r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo, annotations: {meshauthz.io/strict-report-only: "true"}}
spec:
  mtls: {mode: STRICT}
"#,
        )
        .start()
        .unwrap();
    let port = s.port;
    assert_eq!(
        client::tcp_echo(port, b"ping\n", WAIT).unwrap(),
        TcpOutcome::Echoed
    );
    assert_stat(&s.envoy, &plaintext_stat(port, "report_only"), 1, WAIT);
    assert_eq!(
        s.envoy
            .stat_or_zero(&plaintext_stat(port, "rejected"))
            .unwrap(),
        0
    );
    assert_eq!(s.app.hits(), 1);
}
