//! Assertions on what a caller saw, shared by the e2e tests. Each one panics (it is an assertion)
//! with the whole [`Response`] in the message, and reports the caller's line (`#[track_caller]`).

use std::time::Duration;

use crate::client::{Response, CURL_EMPTY_REPLY, CURL_RECV_ERROR, CURL_SSL_CONNECT_ERROR};
use crate::envoy::Envoy;

/// The body Envoy's RBAC (and the module, like Istio) sends with a 403.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// The request reached the application: curl succeeded with a 200.
///
/// # Panics
/// When curl failed or the status is not 200.
#[track_caller]
pub fn assert_ok(r: &Response) {
    assert_eq!((r.exit, r.status), (0, 200), "expected 200, got {r:#?}");
}

/// The request was denied like Istio denies it: a 403 with [`DENIED_BODY`].
///
/// # Panics
/// When the status is not 403 or the body is not [`DENIED_BODY`].
#[track_caller]
pub fn assert_denied(r: &Response) {
    assert_eq!(r.status, 403, "expected 403, got {r:#?}");
    assert_eq!(r.body, DENIED_BODY, "403 body: {r:#?}");
}

/// The connection was reset like Istio's STRICT resets plaintext: curl exit 56, "Connection reset
/// by peer".
///
/// # Panics
/// When curl's exit code is not 56 or its stderr does not say "Connection reset by peer".
#[track_caller]
pub fn assert_reset(r: &Response) {
    assert_eq!(
        r.exit, CURL_RECV_ERROR,
        "expected curl exit 56 (connection reset), got {r:#?}"
    );
    assert!(
        r.stderr.contains("Connection reset by peer"),
        "expected 'Connection reset by peer', got {r:#?}"
    );
}

/// Refused without a valid configuration: either a 403, or (what the module does at L4, where it
/// cannot even tell STRICT from PERMISSIVE) the connection closed before any response: curl
/// exit 35 (TLS handshake cut), 52 (empty reply) or 56 (reset). Never a response from the app.
/// Returns which of the two it was ("403" or "connection closed").
///
/// # Panics
/// When the response is neither a 403 with [`DENIED_BODY`] nor a closed connection.
#[track_caller]
pub fn assert_refused(r: &Response) -> &'static str {
    if r.status == 403 {
        assert_eq!(r.body, DENIED_BODY, "{r:#?}");
        return "403";
    }
    assert_eq!(
        r.status, 0,
        "expected 403 or a closed connection, got {r:#?}"
    );
    assert!(
        [CURL_SSL_CONNECT_ERROR, CURL_EMPTY_REPLY, CURL_RECV_ERROR].contains(&r.exit),
        "expected 403 or a closed connection, got {r:#?}"
    );
    "connection closed"
}

/// Envoy's counter `name` reaches `n` within `timeout` (the module hands its counts to Envoy once
/// per second) and is exactly `n`.
///
/// # Panics
/// When the counter is not `n` after the wait, or Envoy's admin does not answer.
#[track_caller]
pub fn assert_stat(envoy: &Envoy, name: &str, n: u64, timeout: Duration) {
    let got = envoy.wait_stat_at_least(name, n, timeout);
    assert!(
        matches!(got, Ok(v) if v == n),
        "{name}: expected {n}, got {got:?}"
    );
}
