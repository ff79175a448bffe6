//! Paths through a real Envoy, on a listener that merges slashes (the shipped template:
//! `normalize_path` + `merge_slashes`, Istio's `MERGE_SLASHES`) and on one that does not (the same
//! template without `merge_slashes: true`: Istio's default `BASE`, so every WasmPlugin install).
//!
//! The module decides on the path the application receives, as Istio's RBAC does: ALLOW rules
//! match it and nothing else. DENY rules also match the path the engine normalizes again (merged
//! slashes, dot segments, unreserved `%XX`), which only ever denies more. What neither Istio nor
//! meshauthz treats as `/admin` (other case, `;x`, double encoding, a trailing dot) is served.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use meshauthz_harness::assert::{assert_denied, assert_ok};
use meshauthz_harness::client::Transport;
use meshauthz_harness::sidecar::Sidecar;

/// The listener setting under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listener {
    /// The shipped template: `normalize_path: true`, `merge_slashes: true`.
    MergeSlashes,
    /// `normalize_path: true` only (Istio's default `BASE`).
    Base,
}

const DENY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-paths, namespace: foo}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/store/{**}/cart", "/admin", "/admin/*"]}
"#;

const ALLOW: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-cart, namespace: foo}
spec:
  action: ALLOW
  rules:
  - to:
    - operation: {paths: ["/store/{**}/cart"]}
"#;

fn sidecar(name: &str, policies: &str, listener: Listener) -> Sidecar {
    let b = Sidecar::builder(name).policies(policies);
    let b = match listener {
        Listener::MergeSlashes => b,
        // Documented transformation: delete the template's `merge_slashes: true` line.
        Listener::Base => b.transform(|c| {
            let out: Vec<&str> = c
                .lines()
                .filter(|l| l.trim() != "merge_slashes: true")
                .collect();
            assert_eq!(
                out.len() + 1,
                c.lines().count(),
                "the template's merge_slashes setting changed"
            );
            Ok(out.join("\n"))
        }),
    };
    b.start().unwrap()
}

/// Sends `path` over mTLS and plaintext; expects 200 and the application receiving `received`,
/// or (`received` = `None`) a 403 that never reached the application.
fn expect(s: &Sidecar, path: &str, received: Option<&str>) {
    let mtls = s.mtls("foo", "bar").unwrap();
    for t in [mtls, Transport::Plaintext] {
        let before = s.app.hits();
        let r = s.get(path, t).send().unwrap();
        match received {
            Some(p) => {
                assert_ok(&r);
                assert_eq!(
                    r.json().unwrap()["path"],
                    p,
                    "{path}: what the app received"
                );
            }
            None => {
                assert_denied(&r);
                assert_eq!(
                    s.app.hits(),
                    before,
                    "{path}: a denied request reached the app"
                );
            }
        }
    }
}

/// Issue 7 §4: a DENY on `/store/{**}/cart`. Without slash merging, `/store//cart` reaches the
/// application as written and the template matches it (`{**}` may be empty): denied, as native
/// RBAC denies it (the module used to merge first and let it through). With merging, the
/// application receives `/store/cart`, which the template does not match: served, as in Istio.
#[test]
fn deny_template_on_both_listeners() {
    for listener in [Listener::Base, Listener::MergeSlashes] {
        let s = sidecar(&format!("paths-deny-{listener:?}"), DENY, listener);
        match listener {
            Listener::Base => expect(&s, "/store//cart", None),
            Listener::MergeSlashes => expect(&s, "/store//cart", Some("/store/cart")),
        }
        expect(&s, "/store/a/cart", None);
        expect(&s, "/store/cart", Some("/store/cart"));
        // Extra normalization only tightens: the merged path is denied on either listener.
        expect(&s, "//admin", None);
        expect(&s, "/admin//users", None);
        expect(&s, "/x/%2e%2e/admin", None);
        expect(&s, "/%61dmin", None);
        // Other paths for Istio and for meshauthz: served, on either listener.
        for path in ["/ADMIN", "/admin;x", "/%2561dmin", "/admin."] {
            expect(&s, path, Some(path));
        }
    }
}

/// Issue 7 §4: an ALLOW on `/store/{**}/cart` matches the path the application receives, as in
/// Istio: `/store//cart` is allowed without slash merging (the module used to deny it) and denied
/// with it (the application would receive `/store/cart`).
#[test]
fn allow_template_on_both_listeners() {
    for listener in [Listener::Base, Listener::MergeSlashes] {
        let s = sidecar(&format!("paths-allow-{listener:?}"), ALLOW, listener);
        match listener {
            Listener::Base => expect(&s, "/store//cart", Some("/store//cart")),
            Listener::MergeSlashes => expect(&s, "/store//cart", None),
        }
        expect(&s, "/store/a/cart", Some("/store/a/cart"));
        expect(&s, "/store/cart", None);
        expect(&s, "/other", None);
    }
}
