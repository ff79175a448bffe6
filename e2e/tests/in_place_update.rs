//! Policy updates delivered in place, as Istio delivers a `WasmPlugin` (ECDS: the filters'
//! configurations change, the listener and its open connections stay;
//! `SidecarBuilder::ecds`). A verdict taken once per connection (TCP ports, and HTTP ports in the
//! connection shape, `"enforce": "connection"`) must not outlive the policies it was taken under:
//! a caller whose access is revoked loses it on the connections it already holds, at its next
//! request or data, not when it reconnects. (Istio replaces the listener and drains those
//! connections; meshauthz decides them again under the new policies.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::time::Duration;

use meshauthz_harness::client::{Exchange, TlsSession};
use meshauthz_harness::policy;
use meshauthz_harness::sidecar::Sidecar;

const WAIT: Duration = Duration::from_secs(5);
const BAR: &str = "cluster.local/ns/foo/sa/bar";
const BAZ: &str = "cluster.local/ns/foo/sa/baz";

fn allow(principal: &str) -> String {
    policy::allow_principals("allow-one", &[principal])
}

#[test]
fn a_revoked_caller_loses_its_open_http_connection_in_the_connection_shape() {
    let mut s = Sidecar::builder("in-place-conn")
        .template("server-http-conn.yaml")
        .ecds()
        .policies(&allow(BAR))
        .transform(|c| policy::with_enforce(c, "connection"))
        .start()
        .unwrap();
    let bar = s.client("foo", "bar").unwrap();
    let baz = s.client("foo", "baz").unwrap();
    let mut held = TlsSession::open(s.port, &s.pki, &bar).unwrap();
    assert_eq!(
        held.http_get("/one", WAIT).unwrap(),
        Exchange::Answered(200)
    );
    let mut other = TlsSession::open(s.port, &s.pki, &baz).unwrap();
    assert_eq!(
        other.http_get("/one", WAIT).unwrap(),
        Exchange::Answered(403)
    );

    s.update_policies(&allow(BAZ)).unwrap();
    assert_eq!(
        held.http_get("/two", WAIT).unwrap(),
        Exchange::Answered(403),
        "bar's connection kept the verdict of the revoked policy; log:\n{}",
        s.envoy.log()
    );
    assert_eq!(
        other.http_get("/two", WAIT).unwrap(),
        Exchange::Answered(200),
        "baz's open connection did not get the access granted to it"
    );
    let mut fresh = TlsSession::open(s.port, &s.pki, &bar).unwrap();
    assert_eq!(
        fresh.http_get("/three", WAIT).unwrap(),
        Exchange::Answered(403)
    );
    assert_eq!(s.app.hits(), 2, "a denied request reached the application");
}

#[test]
fn a_revoked_caller_loses_its_open_tcp_connection() {
    let mut s = Sidecar::builder("in-place-tcp")
        .tcp()
        .ecds()
        .policies(&allow(BAR))
        .start()
        .unwrap();
    let bar = s.client("foo", "bar").unwrap();
    let baz = s.client("foo", "baz").unwrap();
    let mut held = TlsSession::open(s.port, &s.pki, &bar).unwrap();
    assert_eq!(held.echo(b"one\n", WAIT).unwrap(), Exchange::Answered(0));

    s.update_policies(&allow(BAZ)).unwrap();
    assert_eq!(
        held.echo(b"two\n", WAIT).unwrap(),
        Exchange::Closed,
        "bar's TCP connection outlived the policy that allowed it; log:\n{}",
        s.envoy.log()
    );
    let mut now = TlsSession::open(s.port, &s.pki, &baz).unwrap();
    assert_eq!(now.echo(b"three\n", WAIT).unwrap(), Exchange::Answered(0));
}

#[test]
fn an_open_http_connection_is_judged_by_the_new_policies_identity_included() {
    // Before: no policy reads the caller's identity, so meshauthz_net records none for the
    // connection. After: an ALLOW for everyone but bar. bar's open connection must be judged
    // on bar's identity, not as a caller without one.
    let paths_only = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: paths, namespace: foo}
spec:
  rules:
  - to: [{operation: {paths: ["/one", "/two"]}}]
"#;
    let not_bar = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: not-bar, namespace: foo}
spec:
  rules:
  - from: [{source: {notPrincipals: [cluster.local/ns/foo/sa/bar]}}]
"#;
    let mut s = Sidecar::builder("in-place-http")
        .ecds()
        .policies(paths_only)
        .start()
        .unwrap();
    let bar = s.client("foo", "bar").unwrap();
    let mut held = TlsSession::open(s.port, &s.pki, &bar).unwrap();
    assert_eq!(
        held.http_get("/one", WAIT).unwrap(),
        Exchange::Answered(200)
    );
    s.update_policies(not_bar).unwrap();
    assert_eq!(
        held.http_get("/two", WAIT).unwrap(),
        Exchange::Answered(403),
        "bar passed notPrincipals [bar] on its open connection; log:\n{}",
        s.envoy.log()
    );
    let baz = s.client("foo", "baz").unwrap();
    let mut other = TlsSession::open(s.port, &s.pki, &baz).unwrap();
    assert_eq!(
        other.http_get("/three", WAIT).unwrap(),
        Exchange::Answered(200)
    );
}

#[test]
fn strict_applied_in_place_closes_open_plaintext_connections() {
    use std::io::{Read, Write};
    let mut s = Sidecar::builder("in-place-strict")
        .tcp()
        .ecds()
        .policies(&policy::peer_authentication("foo", "PERMISSIVE"))
        .start()
        .unwrap();
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    let mut echo = |payload: &[u8]| -> std::io::Result<Vec<u8>> {
        plain.write_all(payload)?;
        let mut buf = [0u8; 64];
        let n = plain.read(&mut buf)?;
        Ok(buf.get(..n).unwrap_or_default().to_vec())
    };
    // (At least 5 bytes: Envoy's TLS inspector waits for a TLS record header's worth.)
    assert_eq!(echo(b"first\n").unwrap(), b"first\n");
    s.update_policies(&policy::peer_authentication("foo", "STRICT"))
        .unwrap();
    match echo(b"second\n") {
        Ok(got) => assert!(
            got.is_empty(),
            "the plaintext connection was served after STRICT: {got:?}; log:\n{}",
            s.envoy.log()
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{e}"
        ),
    }
}
