//! `meshauthz strict-readiness` against a real Envoy with the module: a plaintext caller on a
//! PERMISSIVE port makes the port "not ready" (and is named from the access log); only mTLS
//! callers make it "ready". Needs the CLI binary (`cargo build -p meshauthz-cli`; `make e2e`
//! builds it), found as the sandbox finds it (`$MESHAUTHZ_CLI`, else `target/debug/meshauthz`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::time::Duration;

use meshauthz_harness::access_log;
use meshauthz_harness::assert::assert_ok;
use meshauthz_harness::client::Transport;
use meshauthz_harness::sidecar::{plaintext_stat, Sidecar};

const WAIT: Duration = Duration::from_secs(5);

/// PERMISSIVE, and an AUDIT policy naming the listener port, so the port has its own counters.
fn policies(port: u16) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: foo}}
spec:
  mtls: {{mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: audit-outside-mesh, namespace: foo}}
spec:
  action: AUDIT
  rules:
  - from: [{{source: {{notNamespaces: [istioinaction]}}}}]
    to: [{{operation: {{ports: ["{port}"]}}}}]
"#
    )
}

#[test]
fn plaintext_callers_make_a_port_not_ready_and_mtls_ones_do_not() {
    let s = Sidecar::builder("readiness")
        .policies_for_port(policies)
        .start()
        .unwrap();
    let port = s.port;
    // Only mTLS so far: ready.
    assert_ok(
        &s.get("/hello", s.mtls("istioinaction", "sleep").unwrap())
            .send()
            .unwrap(),
    );
    s.envoy
        .wait_stat_at_least("wasmcustom.meshauthz.rbac.allowed", 1, WAIT)
        .unwrap();
    let (code, out) = s.strict_readiness().unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("port {port}: READY")), "{out}");

    // A legacy plaintext caller: not ready, named by the access log.
    assert_ok(&s.get("/legacy", Transport::Plaintext).send().unwrap());
    s.envoy
        .wait_stat_at_least(&plaintext_stat(port, "accepted"), 1, WAIT)
        .unwrap();
    // The access log is written when the request ends; wait (bounded) for its line.
    access_log::wait_for_line(&s.access_log, WAIT, |l| l.contains("/legacy")).unwrap();
    let (code, out) = s.strict_readiness().unwrap();
    eprintln!("{out}");
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains(&format!(
            "port {port}: NOT READY (plaintext accepted 1, rejected 0)"
        )),
        "{out}"
    );
    // The templates log the source address (`src`): the caller is named by its IP, with what
    // it asked.
    assert!(
        out.contains("callers (access log): 127.0.0.1 (1: GET /legacy)"),
        "{out}"
    );
    assert!(
        out.contains("plaintext caller: 127.0.0.1 (1: GET /legacy)"),
        "{out}"
    );
    assert!(out.contains("1 audited"), "{out}");
}
