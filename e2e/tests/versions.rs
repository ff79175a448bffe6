//! What differs between the Envoy releases meshauthz supports (README, "Envoy versions"), checked
//! against the Envoy under test (`MESHAUTHZ_ENVOY`; `make test-matrix` runs this file, with the
//! whole e2e suite, once per release).
//!
//! - Every function the module imports is registered by this Envoy binary (proxy-wasm-cpp-host
//!   registers each under its literal name), and its ABI export is one the host negotiates.
//! - A header sent several times: Envoy 1.36/1.37's RBAC reads the comma-joined value, 1.38.2+
//!   any one value; the module takes the stricter reading for the rule's action on every release,
//!   so it is never wider than this Envoy's own RBAC.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use meshauthz_harness::assert::{assert_denied, assert_ok};
use meshauthz_harness::sidecar::Sidecar;
use meshauthz_tools::wasm::imports_exports;

/// The NUL-terminated printable strings of a binary (what `strings` shows).
fn c_strings(bin: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in bin.iter().enumerate() {
        if b == 0 {
            if i > start {
                out.push(&bin[start..i]);
            }
            start = i + 1;
        } else if !(0x20..0x7f).contains(&b) {
            start = i + 1;
        }
    }
    out
}

#[test]
fn module_imports_are_registered_by_this_envoy() {
    let envoy = meshauthz_harness::envoy_binary().unwrap();
    let version = meshauthz_harness::envoy::version().unwrap();
    let bin = std::fs::read(&envoy).unwrap();
    let wasm = std::fs::read(meshauthz_harness::module_path().unwrap()).unwrap();
    let (imports, exports) = imports_exports(&wasm).expect("a well-formed wasm module");
    // The function imports: (module, name).
    let imports: Vec<(String, String)> = imports
        .into_iter()
        .filter(|i| i.kind == 0)
        .map(|i| (i.module, i.name))
        .collect();
    let strings = c_strings(&bin);
    // A string literal may share its tail with a longer one (linker string merging).
    let registered = |name: &str| strings.iter().any(|s| s.ends_with(name.as_bytes()));
    // The check can fail: a name no host registers is not found.
    assert!(!registered("proxy_meshauthz_no_such_host_function"));
    let missing: Vec<String> = imports
        .iter()
        .filter(|(m, n)| !matches!(m.as_str(), "env" | "wasi_snapshot_preview1") || !registered(n))
        .map(|(m, n)| format!("{m}.{n}"))
        .collect();
    assert!(
        missing.is_empty(),
        "Envoy {version:?} does not register these imports of the module: {missing:?}"
    );
    // The ABI export: one of the versions proxy-wasm-cpp-host negotiates. (Its name is not a
    // plain string in the binary: the compiler builds it inline.) That this Envoy accepts it is
    // shown by the module loading here: `repeated_header_reads_the_stricter_way_on_this_envoy`
    // and the rest of the suite.
    let abi: Vec<&String> = exports
        .iter()
        .filter(|e| e.starts_with("proxy_abi_version_"))
        .collect();
    assert_eq!(abi.len(), 1, "one ABI version export: {abi:?}");
    assert!(
        [
            "proxy_abi_version_0_1_0",
            "proxy_abi_version_0_2_0",
            "proxy_abi_version_0_2_1"
        ]
        .contains(&abi[0].as_str()),
        "an ABI proxy-wasm-cpp-host does not know: {}",
        abi[0]
    );
    eprintln!(
        "Envoy {version:?}: all {} function imports registered; ABI {}",
        imports.len(),
        abi[0]
    );
}

/// Through the module on this Envoy: the stricter reading of a repeated header, whatever
/// this Envoy's RBAC does with it.
#[test]
fn repeated_header_reads_the_stricter_way_on_this_envoy() {
    let s = Sidecar::builder("repeated-strict")
        .policies(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-tenant, namespace: foo}
spec:
  rules:
  - to: [{operation: {paths: ["/allow"]}}]
    when:
    - key: request.headers[x-tenant]
      values: ["abc1"]
  - to: [{operation: {paths: ["/open"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-joined, namespace: foo}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/open"]}}]
    when:
    - key: request.headers[x-tenant]
      values: ["abc1,other"]
"#,
        )
        .start()
        .unwrap();
    let t = s.mtls("foo", "bar").unwrap();
    let send = |path: &str, values: &[&str]| {
        let mut r = s.get(path, t.clone());
        for v in values {
            r = r.header("x-tenant", v);
        }
        r.send().unwrap()
    };
    assert_ok(&send("/allow", &["abc1"]));
    // ALLOW: 1.38.2+ RBAC would allow (one value is abc1), 1.36/1.37 deny (abc1,other): denied.
    assert_denied(&send("/allow", &["abc1", "other"]));
    assert_denied(&send("/allow", &["other"]));
    assert_ok(&send("/open", &["abc1"]));
    // DENY on the joined value: 1.36/1.37 RBAC would deny, 1.38.2+ allow: denied.
    assert_denied(&send("/open", &["abc1", "other"]));
    assert_ok(&send("/open", &["other", "abc1"]));
}
