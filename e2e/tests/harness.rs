//! Self-tests of the harness pieces that do not need Envoy: certificates, the echo apps, the
//! template renderer. (Everything that needs Envoy is exercised through the real templates by the
//! scenario tests.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use meshauthz_harness::app::{HttpEcho, TcpEcho};
use meshauthz_harness::certs::Pki;
use meshauthz_harness::client::{self, Request, TcpOutcome, Transport};
use meshauthz_harness::envoy::render;
use meshauthz_harness::sidecar::plugin_config_placeholder;
use meshauthz_harness::{policy, WorkDir};

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `openssl x509` on the certificate file `cert`: its subjectAltName extension.
fn subject_alt_names(cert: &str) -> (bool, String) {
    openssl(&["x509", "-noout", "-ext", "subjectAltName", "-in", cert])
}

#[test]
fn certificates_chain_to_their_ca_and_carry_spiffe_uris() {
    let work = WorkDir::new("harness-certs").unwrap();
    let pki = Pki::generate(work.path()).unwrap();
    let ca = pki.ca_cert.to_str().unwrap();
    let bar = pki.client("foo", "bar").unwrap();
    let (ok, out) = openssl(&["verify", "-CAfile", ca, bar.cert.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = subject_alt_names(bar.cert.to_str().unwrap());
    assert!(
        ok && out.contains("URI:spiffe://cluster.local/ns/foo/sa/bar"),
        "{out}"
    );
    let (ok, out) = subject_alt_names(pki.server.cert.to_str().unwrap());
    assert!(ok, "{out}");
    for want in [
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "URI:spiffe://cluster.local/ns/foo/sa/echo",
    ] {
        assert!(out.contains(want), "server SANs lack {want}: {out}");
    }
    let evil = pki.untrusted_client("foo", "bar").unwrap();
    let (ok, out) = openssl(&["verify", "-CAfile", ca, evil.cert.to_str().unwrap()]);
    assert!(
        !ok,
        "the untrusted client verified against the mesh CA: {out}"
    );
}

#[test]
fn http_echo_returns_received_headers_and_keeps_alive() {
    let app = HttpEcho::start().unwrap();
    let r = Request::get(app.port(), "/x?y=1", Transport::Plaintext)
        .header("x-forwarded-client-cert", "URI=spiffe://a")
        .send()
        .unwrap();
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");
    let v = r.json().unwrap();
    assert_eq!(v["path"], "/x?y=1");
    assert_eq!(v["method"], "GET");
    assert_eq!(
        r.app_header("x-forwarded-client-cert").unwrap().as_deref(),
        Some("URI=spiffe://a")
    );
    // Two URLs in one curl run share one keep-alive connection.
    let url = format!("http://127.0.0.1:{}/k", app.port());
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{num_connects}\n",
        ])
        .args([&url, &url])
        .output()
        .unwrap();
    let connects: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        connects,
        ["1", "0"],
        "second request did not reuse the connection"
    );
    assert_eq!(app.requests(), 3);
}

#[test]
fn tcp_echo_echoes() {
    let app = TcpEcho::start().unwrap();
    let o = client::tcp_echo(app.port(), b"hello\n", Duration::from_secs(3)).unwrap();
    assert_eq!(o, TcpOutcome::Echoed);
    assert_eq!(app.connections(), 1);
}

#[test]
fn render_substitutes_every_placeholder_and_refuses_leftovers() {
    let vars = BTreeMap::from([("A", "1".to_string()), ("B", "x y".to_string())]);
    assert_eq!(
        render("a={{A}} b='{{B}}' a2={{A}}", &vars).unwrap(),
        "a=1 b='x y' a2=1"
    );
    assert!(render("a={{A}} c={{C}}", &BTreeMap::from([("A", "1".to_string())])).is_err());
    assert!(
        render("nothing", &vars).is_err(),
        "unused variable accepted"
    );
}

#[test]
fn plugin_config_is_embedded_as_json_string_contents() {
    let cfg = policy::plugin_config_yaml(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: foo}\nspec: {action: DENY, rules: [{to: [{operation: {paths: [\"/\\\"q\"]}}]}]}\n",
    )
    .unwrap();
    let embedded = plugin_config_placeholder(&cfg).unwrap();
    let back: String = serde_json::from_str(&format!("\"{embedded}\"")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&back).unwrap();
    assert_eq!(parsed, cfg);
    assert_eq!(
        parsed["policies"][0]["spec"]["rules"][0]["to"][0]["operation"]["paths"][0],
        "/\"q"
    );
    assert_eq!(parsed["workload"]["labels"]["app"], "echo");
}
