//! Attacks on the module in a real Envoy 1.40 with real certificates (issue 7): whatever a caller
//! or a small misconfiguration does, it never gets more than Istio would give it. Each test
//! asserts a deny (403) or a refused connection wherever Istio denies, next to a positive control
//! that shows the same setup serving the caller Istio serves.
//!
//! - forged identity headers from plaintext: `X-Forwarded-Client-Cert`, `X-Forwarded-For`
//!   against `ipBlocks`;
//! - a mesh-CA certificate with two URI SANs (both orders) where a DENY names one of them, HTTP
//!   and TCP; a certificate from a foreign CA;
//! - a misdeclared port, both ways (a TCP port in `httpPorts`, an HTTP port missing from it);
//! - an mTLS client on a DISABLE port, HTTP and TCP, workload-level and port-level;
//! - path forms on both listener settings: `e2e/tests/paths.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::time::Duration;

use meshauthz_harness::assert::{assert_denied, assert_ok};
use meshauthz_harness::client::{self, Response, TcpOutcome, Transport};
use meshauthz_harness::envoy::free_port;
use meshauthz_harness::policy;
use meshauthz_harness::sidecar::{remove_filter, Sidecar};

const WAIT: Duration = Duration::from_secs(5);

const ADMIN: &str = "spiffe://cluster.local/ns/foo/sa/admin";
const BLOCKED: &str = "spiffe://cluster.local/ns/default/sa/blocked";

/// `GET /` over mTLS with a mesh certificate `name` whose URI SANs are `uris`, in that order.
fn get_with_sans(s: &Sidecar, name: &str, uris: &[&str]) -> Response {
    let cert = s.pki.client_with_uris(name, uris).unwrap();
    s.get("/", Transport::mtls(&s.pki, &cert)).send().unwrap()
}

/// A DENY on the principal `default/blocked`, every port.
const DENY_BLOCKED: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-blocked, namespace: foo}
spec:
  action: DENY
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/blocked"]}
"#;

/// An ALLOW policy with no rules: denies everything (Istio's "allow-nothing").
const ALLOW_NOTHING: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: foo}
spec: {action: ALLOW}
"#;

/// A TCP exchange that did not reach the application: reset, or closed without the echo. (The
/// echo app's connection count is no witness: `tcp_proxy` connects upstream when the client
/// connects, before the first byte the module decides on; no byte is forwarded.)
#[track_caller]
fn assert_tcp_refused(outcome: &TcpOutcome, what: &str) {
    assert!(
        matches!(outcome, TcpOutcome::Reset | TcpOutcome::Closed(_)),
        "{what}: expected a reset or closed connection, got {outcome:?}"
    );
    if let TcpOutcome::Closed(got) = outcome {
        assert!(
            !got.contains("ping"),
            "{what}: the payload came back: {got:?}"
        );
    }
}

/// The connection failed before any response (reset, closed, handshake cut: curl reports it with
/// various codes, 16, 18, 35, 52, 56): what a client of Istio sees where no TLS filter chain
/// exists, or where the peer's certificate is not trusted.
#[track_caller]
fn assert_tls_refused(r: &client::Response) {
    assert_eq!(r.status, 0, "expected no response, got {r:#?}");
    assert_ne!(r.exit, 0, "expected a failed connection, got {r:#?}");
}

/// Denied (403) or refused at the connection (no response): never served.
#[track_caller]
fn assert_not_served(r: &client::Response) {
    if r.status == 403 {
        assert_denied(r);
    } else {
        assert_tls_refused(r);
    }
}

// ---- forged identity headers -----------------------------------------------------------------

/// A plaintext caller claims an identity in `X-Forwarded-Client-Cert` and an address in
/// `X-Forwarded-For`: neither grants anything. Istio takes identity from the TLS connection only
/// and `ipBlocks` from the direct peer (127.0.0.1 here).
#[test]
fn forged_identity_headers_from_plaintext_grant_nothing() {
    let s = Sidecar::builder("attack-forged-headers")
        .policies(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-admin-or-ten-net, namespace: foo}
spec:
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/foo/sa/admin"]}
  - from:
    - source: {ipBlocks: ["10.0.0.0/8"]}
"#,
        )
        .start()
        .unwrap();
    let xfcc =
        format!("By=spiffe://cluster.local/ns/foo/sa/echo;Hash=00;URI={ADMIN};DNS=admin.foo.svc");
    let forged = [
        ("x-forwarded-client-cert", xfcc.as_str()),
        ("x-forwarded-for", "10.1.2.3"),
        ("x-forwarded-for", "10.1.2.3, 10.4.5.6"),
        ("x-real-ip", "10.1.2.3"),
    ];
    for (name, value) in forged {
        let r = s
            .get("/", Transport::Plaintext)
            .header(name, value)
            .send()
            .unwrap();
        assert_denied(&r);
    }
    assert_eq!(s.app.hits(), 0, "a forged header reached the application");
    // Positive control: the real identity is allowed.
    assert_ok(&s.get("/", s.mtls("foo", "admin").unwrap()).send().unwrap());
}

// ---- certificates ---------------------------------------------------------------------------

/// Issue 7 §2, HTTP: a mesh-CA certificate with SANs `[admin, blocked]` (either order) where a
/// DENY names `blocked`. Envoy RBAC (Istio) tries every SAN and denies; the module sees every SAN
/// through the `set_filter_state` companion and refuses a certificate it cannot reduce to one
/// identity. Before: 200 (only the first URI SAN was read).
///
/// The reverse case (an ALLOW naming the second SAN: Istio allows, the module denies) is the
/// documented safe direction.
#[test]
fn two_san_certificate_is_denied_on_http() {
    let s = Sidecar::builder("attack-two-sans-http")
        .policies(DENY_BLOCKED)
        .start()
        .unwrap();
    for (name, uris) in [
        ("admin-blocked", [ADMIN, BLOCKED]),
        ("blocked-admin", [BLOCKED, ADMIN]),
    ] {
        assert_denied(&get_with_sans(&s, name, &uris));
    }
    assert_eq!(s.app.hits(), 0);
    let unseen = s
        .envoy
        .wait_log_contains("more than one SAN", WAIT)
        .unwrap();
    assert!(!unseen.is_empty());
    // Positive controls: one SAN is decided by the policy.
    assert_ok(&s.get("/", s.mtls("foo", "admin").unwrap()).send().unwrap());
    assert_denied(
        &s.get("/", s.mtls("default", "blocked").unwrap())
            .send()
            .unwrap(),
    );

    // The reverse case: an ALLOW on the second SAN. Istio allows; the module refuses the
    // certificate (the safe direction, documented in filter/README.md).
    let allow = Sidecar::builder("attack-two-sans-allow")
        .policies(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-second, namespace: foo}
spec:
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/blocked"]}
"#,
        )
        .start()
        .unwrap();
    assert_denied(&get_with_sans(&allow, "admin-blocked", &[ADMIN, BLOCKED]));
}

/// The rendered HTTP template without `meshauthz_net`. The VM configuration is anchored
/// (`&meshauthz_vm`) in that filter, so the HTTP filters' aliases get it inline.
fn without_meshauthz_net(config: &str) -> meshauthz_harness::Result<String> {
    let lines: Vec<&str> = config.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == "vm_config: &meshauthz_vm")
        .expect("the template anchors the VM configuration");
    let body: Vec<&str> = lines[at + 1..at + 4].iter().map(|l| l.trim()).collect();
    let inline = format!("vm_config: {{{}}}", body.join(", "));
    let out = remove_filter(
        config,
        "envoy.filters.network.wasm",
        "root_id: meshauthz_net",
        1,
    )?;
    Ok(out.replace("vm_config: *meshauthz_vm", &inline))
}

/// Issue 7 §2 without `meshauthz_net` (a `WasmPlugin` install on HTTP ports only): the HTTP
/// stage reads the SAN list from connection filter state itself, with the same result. And
/// without the `set_filter_state` companion, a certificate is refused wherever a policy reads the
/// principal: the module cannot know how many SANs it has.
#[test]
fn two_san_certificate_without_the_network_stage_and_without_the_companion() {
    let no_net = Sidecar::builder("attack-two-sans-no-net")
        .policies(DENY_BLOCKED)
        .transform(without_meshauthz_net)
        .start()
        .unwrap();
    assert_denied(&get_with_sans(&no_net, "admin-blocked", &[ADMIN, BLOCKED]));
    assert_ok(
        &no_net
            .get("/", no_net.mtls("foo", "admin").unwrap())
            .send()
            .unwrap(),
    );

    let no_companion = Sidecar::builder("attack-no-san-companion")
        .policies(DENY_BLOCKED)
        .transform(|c| {
            remove_filter(
                c,
                "envoy.filters.network.set_filter_state",
                "meshauthz.peer_sans",
                1,
            )
        })
        .start()
        .unwrap();
    assert_denied(
        &no_companion
            .get("/", no_companion.mtls("foo", "admin").unwrap())
            .send()
            .unwrap(),
    );
    no_companion
        .envoy
        .wait_log_contains(
            "SAN list (connection filter state meshauthz.peer_sans) is missing",
            WAIT,
        )
        .unwrap();
    // Plaintext carries no certificate: the policies decide as before.
    assert_ok(&no_companion.get("/", Transport::Plaintext).send().unwrap());
}

/// Issue 7 §2, TCP: the same certificates on a TCP port are closed before any byte reaches the
/// application. Before: echoed.
#[test]
fn two_san_certificate_is_closed_on_tcp() {
    let s = Sidecar::builder("attack-two-sans-tcp")
        .tcp()
        .policies(DENY_BLOCKED)
        .start()
        .unwrap();
    for (name, uris) in [
        ("admin-blocked", [ADMIN, BLOCKED]),
        ("blocked-admin", [BLOCKED, ADMIN]),
    ] {
        let cert = s.pki.client_with_uris(name, &uris).unwrap();
        let (o, e) = client::tls_tcp_echo(s.port, &s.pki, &cert, b"ping-two\n", WAIT).unwrap();
        assert_tcp_refused(&o, &format!("{name}: {e}"));
    }
    let admin = s.pki.client("foo", "admin").unwrap();
    let (o, e) = client::tls_tcp_echo(s.port, &s.pki, &admin, b"ping-admin\n", WAIT).unwrap();
    assert_eq!(o, TcpOutcome::Echoed, "{e}");
}

/// A certificate from a CA the mesh does not trust, naming an allowed identity: the TLS
/// handshake fails (HTTP) or the connection never reaches the application (TCP).
#[test]
fn foreign_ca_certificate_is_refused() {
    let allow_admin = &policy::allow_principals("allow-admin", &["cluster.local/ns/foo/sa/admin"]);
    let s = Sidecar::builder("attack-foreign-ca")
        .policies(allow_admin)
        .start()
        .unwrap();
    let foreign = s.pki.untrusted_client("foo", "admin").unwrap();
    let r = s
        .get("/", Transport::mtls(&s.pki, &foreign))
        .send()
        .unwrap();
    assert_tls_refused(&r);
    assert_eq!(s.app.hits(), 0);

    let t = Sidecar::builder("attack-foreign-ca-tcp")
        .tcp()
        .policies(allow_admin)
        .start()
        .unwrap();
    let foreign = t.pki.untrusted_client("foo", "admin").unwrap();
    let (o, e) = client::tls_tcp_echo(t.port, &t.pki, &foreign, b"ping-foreign\n", WAIT).unwrap();
    assert_tcp_refused(&o, &e);
}

// ---- misdeclared ports ------------------------------------------------------------------------

/// Issue 7 §3: a TCP port listed in `httpPorts` by mistake, under a deny-everything policy. The
/// network stage leaves HTTP ports to the HTTP stage, which a TCP chain does not have; the network
/// enforce stage refuses that verdict. Before: open to plaintext and mTLS clients alike.
#[test]
fn tcp_port_declared_http_stays_closed() {
    let port = free_port().unwrap();
    let mut config = policy::plugin_config_yaml(ALLOW_NOTHING).unwrap();
    config["httpPorts"] = serde_json::json!([port]);
    let s = Sidecar::builder("attack-tcp-declared-http")
        .tcp()
        .inbound_port(port)
        .plugin_config(config)
        .start()
        .unwrap();
    let o = client::tcp_echo(s.port, b"ping-plain\n", WAIT).unwrap();
    assert_tcp_refused(&o, "plaintext");
    let admin = s.pki.client("foo", "admin").unwrap();
    let (o, e) = client::tls_tcp_echo(s.port, &s.pki, &admin, b"ping-mtls\n", WAIT).unwrap();
    assert_tcp_refused(&o, &e);
    assert!(
        s.envoy
            .wait_stat_at_least("wasmcustom.meshauthz.protocol_mismatch", 2, WAIT)
            .unwrap()
            >= 2
    );
    s.envoy
        .wait_log_contains(
            "listed in httpPorts, but its traffic runs on a TCP chain",
            WAIT,
        )
        .unwrap();
}

/// The same misdeclared TCP port with the chains that have no Wasm enforce stage: the one-stage
/// TCP template (`"enforce": "decide"`) and the native enforce stage (`"native"`). Nothing after
/// the network stage authorizes the connection there, so a Wasm stage cannot be what refuses
/// the `allow http-port` verdict: the templates' native network RBAC filter does.
#[test]
fn tcp_port_declared_http_stays_closed_without_a_wasm_enforce_stage() {
    for (template, mode) in [
        ("server-tcp-decide.yaml", "decide"),
        ("server-tcp-native.yaml", "native"),
    ] {
        let port = free_port().unwrap();
        let mut config = policy::plugin_config_yaml(ALLOW_NOTHING).unwrap();
        config["httpPorts"] = serde_json::json!([port]);
        config["enforce"] = mode.into();
        let s = Sidecar::builder(&format!("attack-tcp-declared-http-{mode}"))
            .template(template)
            .tcp_app()
            .inbound_port(port)
            .plugin_config(config)
            .start()
            .unwrap();
        let o = client::tcp_echo(s.port, b"ping-plain\n", WAIT).unwrap();
        assert_tcp_refused(&o, &format!("{mode}: plaintext"));
        let admin = s.pki.client("foo", "admin").unwrap();
        let (o, e) = client::tls_tcp_echo(s.port, &s.pki, &admin, b"ping-mtls\n", WAIT).unwrap();
        assert_tcp_refused(&o, &format!("{mode}: mTLS {e}"));
    }
}

/// Issue 7 §3, the other direction: an HTTP port missing from `httpPorts`. The network stage
/// decides the connection with Istio's TCP semantics, which drop ALLOW rules with HTTP-only
/// fields; the stricter reading holds (refused), never the wider one. Positive control: the same
/// policy with the port declared allows the GET.
#[test]
fn http_port_missing_from_http_ports_is_not_opened() {
    let allow_get = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: foo}
spec:
  action: ALLOW
  rules:
  - to:
    - operation: {methods: ["GET"]}
"#;
    let undeclared = Sidecar::builder("attack-http-undeclared")
        .plugin_config(policy::plugin_config_yaml(allow_get).unwrap())
        .start()
        .unwrap();
    let r = undeclared
        .get("/", undeclared.mtls("foo", "admin").unwrap())
        .send()
        .unwrap();
    assert_not_served(&r);
    assert_not_served(&undeclared.get("/", Transport::Plaintext).send().unwrap());
    assert_eq!(undeclared.app.hits(), 0);

    let declared = Sidecar::builder("attack-http-declared")
        .policies(allow_get)
        .start()
        .unwrap();
    assert_ok(
        &declared
            .get("/", declared.mtls("foo", "admin").unwrap())
            .send()
            .unwrap(),
    );
}

// ---- DISABLE ---------------------------------------------------------------------------------

fn disable_workload() -> String {
    policy::peer_authentication("foo", "DISABLE")
}

fn disable_port(port: u16) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: echo-port, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: echo}}}}
  mtls: {{mode: PERMISSIVE}}
  portLevelMtls:
    {port}: {{mode: DISABLE}}
"#
    )
}

/// Issue 7 §5, HTTP: Istio has only plaintext filter chains on a DISABLE port, so an mTLS client
/// fails there; plaintext is served. Workload-level and port-level. Before: the TLS client was
/// served (without identity).
#[test]
fn mtls_client_on_a_disable_http_port_is_refused() {
    let workload = Sidecar::builder("attack-disable-http")
        .policies(&disable_workload())
        .start()
        .unwrap();
    let port_level = Sidecar::builder("attack-disable-http-port")
        .policies_for_port(disable_port)
        .start()
        .unwrap();
    for s in [&workload, &port_level] {
        assert_tls_refused(&s.get("/", s.mtls("foo", "admin").unwrap()).send().unwrap());
        assert_eq!(s.app.hits(), 0);
        assert_ok(&s.get("/", Transport::Plaintext).send().unwrap());
        s.envoy
            .wait_stat_at_least("wasmcustom.meshauthz.disable_tls_rejected", 1, WAIT)
            .unwrap();
    }
}

/// Issue 7 §5, TCP: the same on TCP ports.
#[test]
fn mtls_client_on_a_disable_tcp_port_is_refused() {
    let workload = Sidecar::builder("attack-disable-tcp")
        .tcp()
        .policies(&disable_workload())
        .start()
        .unwrap();
    let port_level = Sidecar::builder("attack-disable-tcp-port")
        .tcp()
        .policies_for_port(disable_port)
        .start()
        .unwrap();
    for s in [&workload, &port_level] {
        let admin = s.pki.client("foo", "admin").unwrap();
        let (o, e) = client::tls_tcp_echo(s.port, &s.pki, &admin, b"ping-tls\n", WAIT).unwrap();
        assert_tcp_refused(&o, &e);
        let o = client::tcp_echo(s.port, b"ping-plain\n", WAIT).unwrap();
        assert_eq!(o, TcpOutcome::Echoed);
    }
}

// ---- path forms (issue 7 §4) -------------------------------------------------------------------
//
// The path forms (`/store//cart`, `/ADMIN`, `;x`, `%2561dmin`, `/admin.`) on listeners with and
// without slash merging are attacked in `e2e/tests/paths.rs`.
