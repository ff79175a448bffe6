//! PeerAuthentication end to end: STRICT resets plaintext like Istio (curl exit 56), PERMISSIVE
//! accepts both, port-level overrides and mesh/namespace precedence, and TCP ports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::time::Duration;

use meshauthz_harness::assert::{assert_ok, assert_reset, assert_stat};
use meshauthz_harness::client::{self, TcpOutcome, Transport};
use meshauthz_harness::envoy::free_port;
use meshauthz_harness::policy;
use meshauthz_harness::sidecar::{plaintext_stat, Sidecar};

const WAIT: Duration = Duration::from_secs(5);

/// The plaintext counters of `port` on `s`: waits (bounded) until the `counted` one ("accepted"
/// or "rejected") reaches `n`, asserts it is exactly `n`, and that the other one stayed 0.
#[track_caller]
fn assert_plaintext_counted(s: &Sidecar, port: &str, counted: &str, n: u64) {
    let other = if counted == "accepted" {
        "rejected"
    } else {
        "accepted"
    };
    assert_stat(&s.envoy, &plaintext_stat(port, counted), n, WAIT);
    let not = s.envoy.stat_or_zero(&plaintext_stat(port, other)).unwrap();
    assert_eq!(not, 0, "plaintext.{port}.{other}");
}

/// Scenario 4a: STRICT resets plaintext while mTLS works.
#[test]
fn strict_resets_plaintext_and_accepts_mtls() {
    let s = Sidecar::builder("strict")
        .policies(&policy::peer_authentication("foo", "STRICT"))
        .start()
        .unwrap();
    assert_ok(&s.get("/", s.mtls("foo", "bar").unwrap()).send().unwrap());
    assert_reset(&s.get("/", Transport::Plaintext).send().unwrap());
    assert_reset(&s.get("/", Transport::Plaintext).send().unwrap());
    assert_eq!(s.app.hits(), 1, "plaintext reached the application");
    // Every port the workload serves has counters of its own (no policy names this one).
    assert_plaintext_counted(&s, &s.port.to_string(), "rejected", 2);
}

/// Scenario 4b: PERMISSIVE accepts both.
#[test]
fn permissive_accepts_both() {
    let s = Sidecar::builder("permissive")
        .policies(&policy::peer_authentication("foo", "PERMISSIVE"))
        .start()
        .unwrap();
    assert_ok(&s.get("/", s.mtls("foo", "bar").unwrap()).send().unwrap());
    assert_ok(&s.get("/", Transport::Plaintext).send().unwrap());
    assert_eq!(s.app.hits(), 2);
    assert_plaintext_counted(&s, &s.port.to_string(), "accepted", 1);
}

/// Scenario 4c: `portLevelMtls` on one workload: the "8080" port PERMISSIVE, the "8000" port
/// STRICT. The workload's two ports are two Envoy listeners from the same template and the same
/// policies, each on its own allocated port (the policy names the real ports).
#[test]
fn port_level_mtls() {
    let (p_permissive, p_strict) = (free_port().unwrap(), free_port().unwrap());
    let policies = format!(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: echo-ports, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: echo}}}}
  mtls: {{mode: STRICT}}
  portLevelMtls:
    {p_permissive}: {{mode: PERMISSIVE}}
    {p_strict}: {{mode: STRICT}}
"#
    );
    let a = Sidecar::builder("port-level-permissive")
        .policies(&policies)
        .inbound_port(p_permissive)
        .start()
        .unwrap();
    let b = Sidecar::builder("port-level-strict")
        .policies(&policies)
        .inbound_port(p_strict)
        .start()
        .unwrap();
    for s in [&a, &b] {
        assert_ok(&s.get("/", s.mtls("foo", "bar").unwrap()).send().unwrap());
    }
    assert_ok(&a.get("/", Transport::Plaintext).send().unwrap());
    assert_reset(&b.get("/", Transport::Plaintext).send().unwrap());
    assert_plaintext_counted(&a, &p_permissive.to_string(), "accepted", 1);
    assert_plaintext_counted(&b, &p_strict.to_string(), "rejected", 1);
}

/// Scenario 4d: a mesh-wide STRICT policy (root namespace) is overridden by the namespace's PERMISSIVE one.
#[test]
fn namespace_permissive_overrides_mesh_strict() {
    let mesh_strict = policy::peer_authentication("istio-system", "STRICT");
    let mesh_only = Sidecar::builder("mesh-strict")
        .policies(&mesh_strict)
        .start()
        .unwrap();
    assert_reset(&mesh_only.get("/", Transport::Plaintext).send().unwrap());

    let both = Sidecar::builder("mesh-strict-ns-permissive")
        .policies(&format!(
            "{mesh_strict}---{}",
            policy::peer_authentication("foo", "PERMISSIVE")
        ))
        .start()
        .unwrap();
    assert_ok(&both.get("/", Transport::Plaintext).send().unwrap());
    assert_ok(
        &both
            .get("/", both.mtls("foo", "bar").unwrap())
            .send()
            .unwrap(),
    );
}

/// Scenario 8: a TCP port: L4 ALLOW by principal over mTLS; plaintext on a STRICT TCP port is reset.
#[test]
fn tcp_port_allow_by_principal_and_strict() {
    let s = Sidecar::builder("tcp")
        .tcp()
        .policies(&format!(
            "{}---{}",
            policy::peer_authentication("foo", "STRICT"),
            policy::allow_principals("allow-bar", &["cluster.local/ns/foo/sa/bar"])
        ))
        .start()
        .unwrap();
    let pki = &s.pki;
    let bar = pki.client("foo", "bar").unwrap();
    let (o, stderr) = client::tls_tcp_echo(s.port, pki, &bar, b"ping-bar\n", WAIT).unwrap();
    assert_eq!(
        o,
        TcpOutcome::Echoed,
        "allowed principal over mTLS: {stderr}"
    );
    let x = pki.client("other", "x").unwrap();
    let (o, stderr) = client::tls_tcp_echo(s.port, pki, &x, b"ping-x\n", WAIT).unwrap();
    assert!(
        matches!(o, TcpOutcome::Closed(ref got) if !got.contains("ping-x")),
        "denied principal over mTLS: {o:?} {stderr}"
    );
    let o = client::tcp_echo(s.port, b"ping-plain\n", WAIT).unwrap();
    assert_eq!(o, TcpOutcome::Reset, "plaintext on a STRICT TCP port");
}

/// Scenario 8, continued: the STRICT reset is counted, the access log records each connection's
/// decision, and on a PERMISSIVE TCP port a plaintext client is accepted by the transport but
/// denied by the L4 ALLOW (closed, its bytes never echoed).
#[test]
fn tcp_port_counters_log_and_permissive_plaintext() {
    let allow_bar = policy::allow_principals("allow-bar", &["cluster.local/ns/foo/sa/bar"]);
    let strict = Sidecar::builder("tcp-strict-log")
        .tcp()
        .policies(&format!(
            "{allow_bar}---{}",
            policy::peer_authentication("foo", "STRICT")
        ))
        .start()
        .unwrap();
    for _ in 0..2 {
        let o = client::tcp_echo(strict.port, b"ping-plain\n", WAIT).unwrap();
        assert_eq!(o, TcpOutcome::Reset);
    }
    assert_stat(
        &strict.envoy,
        &plaintext_stat(strict.port, "rejected"),
        2,
        WAIT,
    );
    let bar = strict.pki.client("foo", "bar").unwrap();
    let (o, e) = client::tls_tcp_echo(strict.port, &strict.pki, &bar, b"ping\n", WAIT).unwrap();
    assert_eq!(o, TcpOutcome::Echoed, "{e}");
    let x = strict.pki.client("other", "x").unwrap();
    let (o, e) = client::tls_tcp_echo(strict.port, &strict.pki, &x, b"ping\n", WAIT).unwrap();
    assert_ne!(o, TcpOutcome::Echoed, "{e}");
    // One access-log entry per connection that reached the TCP proxy, with the module's decision.
    let deadline = std::time::Instant::now() + WAIT;
    let entries = loop {
        let e = meshauthz_harness::access_log::json_lines(&strict.access_log);
        let mtls: Vec<_> = e.into_iter().filter(|v| v["chain"] == "mtls").collect();
        if mtls.len() >= 2 || std::time::Instant::now() > deadline {
            break mtls;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let decision_of = |peer: &str| {
        entries
            .iter()
            .find(|v| v["peer"] == peer)
            .map(|v| v["decision"].as_str().unwrap_or("").to_string())
    };
    let allowed = decision_of("spiffe://cluster.local/ns/foo/sa/bar").unwrap_or_default();
    assert!(allowed.starts_with("allow "), "{entries:#?}");
    let denied = decision_of("spiffe://cluster.local/ns/other/sa/x").unwrap_or_default();
    assert!(denied.starts_with("deny "), "{entries:#?}");

    let permissive = Sidecar::builder("tcp-permissive")
        .tcp()
        .policies(&allow_bar)
        .start()
        .unwrap();
    let o = client::tcp_echo(permissive.port, b"ping-plain\n", WAIT).unwrap();
    assert!(
        matches!(o, TcpOutcome::Closed(ref got) if !got.contains("ping-plain"))
            || o == TcpOutcome::Reset,
        "plaintext denied by the L4 ALLOW: {o:?}"
    );
    assert_plaintext_counted(&permissive, &permissive.port.to_string(), "accepted", 1);
    let bar = permissive.pki.client("foo", "bar").unwrap();
    let (o, e) =
        client::tls_tcp_echo(permissive.port, &permissive.pki, &bar, b"ping\n", WAIT).unwrap();
    assert_eq!(o, TcpOutcome::Echoed, "{e}");
}
