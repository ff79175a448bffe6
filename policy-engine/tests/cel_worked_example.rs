//! The worked example of `CEL.md`, through the loader and the engine: what the documentation
//! promises for each request is what the engine decides.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::collections::BTreeMap;

use policy_engine::{
    load_str, Attributes, Cause, Engine, HttpAttributes, LoadOptions, MeshConfig, Protocol,
    Workload,
};

const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: tenant-isolation
  namespace: shop
spec:
  selector:
    matchLabels:
      app: orders
  action: DENY
  rules:
  - when:
    - key: meshauthz.io/cel
      notValues:
      - 'request.headers["x-tenant"] == source.namespace'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: admin-port
  namespace: shop
spec:
  selector:
    matchLabels:
      app: orders
  action: ALLOW
  rules:
  - to:
    - operation:
        ports: ["8443"]
    when:
    - key: meshauthz.io/cel
      values:
      - 'source.principal.endsWith("/sa/admin") && ip_in_cidr(source.address, "10.0.0.0/8")'
"#;

const ADMIN: &str = "spiffe://cluster.local/ns/tenant-a/sa/admin";

fn engine(policies: &str) -> Engine {
    let (set, _) = load_str(policies, &LoadOptions::default()).unwrap_or_else(|d| panic!("{d}"));
    let workload = Workload {
        namespace: "shop".into(),
        labels: BTreeMap::from([("app".to_string(), "orders".to_string())]),
    };
    let (engine, _) =
        Engine::compile(&set, &workload, &MeshConfig::default()).unwrap_or_else(|d| panic!("{d}"));
    engine
}

fn request<'a>(principal: Option<&'a str>, headers: &'a [(&'a str, &'a str)]) -> Attributes<'a> {
    Attributes {
        principal,
        mtls: principal.is_some(),
        source_ip: "10.1.2.3".parse().ok(),
        remote_ip: "10.1.2.3".parse().ok(),
        destination_port: Some(8443),
        http: Some(HttpAttributes {
            method: Some("GET"),
            path: Some("/orders"),
            headers,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn denied_by(engine: &Engine, cause: Cause) -> Option<String> {
    match cause {
        Cause::DenyRule(id) => Some(engine.policy(id).unwrap().qualified_name()),
        _ => None,
    }
}

#[test]
fn requirements_name_only_what_the_expressions_read() {
    let e = engine(POLICIES);
    let req = e.requirements();
    assert_eq!(req.headers, vec!["x-tenant"]);
    assert!(!req.all_headers && !req.jwt && !req.method);
    assert!(req.principal && req.source_ip && req.destination_port);
}

#[test]
fn own_tenant_is_allowed() {
    let e = engine(POLICIES);
    let d = e.check(
        Protocol::Http,
        &request(Some(ADMIN), &[("x-tenant", "tenant-a")]),
    );
    assert!(d.allowed(), "{d:?}");
    assert!(matches!(d.cause, Cause::AllowRule(_)), "{d:?}");
    assert_eq!(d.cel_errors, 0);
}

#[test]
fn other_tenant_is_denied() {
    let e = engine(POLICIES);
    let d = e.check(
        Protocol::Http,
        &request(Some(ADMIN), &[("x-tenant", "tenant-b")]),
    );
    assert!(!d.allowed());
    assert_eq!(
        denied_by(&e, d.cause).as_deref(),
        Some("shop/tenant-isolation")
    );
    assert_eq!(d.cel_errors, 0);
}

#[test]
fn missing_header_fails_closed_and_is_counted() {
    let e = engine(POLICIES);
    let d = e.check(Protocol::Http, &request(Some(ADMIN), &[]));
    assert!(!d.allowed());
    assert_eq!(
        denied_by(&e, d.cause).as_deref(),
        Some("shop/tenant-isolation")
    );
    assert_eq!(d.cel_errors, 1);
}

#[test]
fn plaintext_fails_closed_and_is_counted() {
    let e = engine(POLICIES);
    let d = e.check(Protocol::Http, &request(None, &[("x-tenant", "tenant-a")]));
    assert!(!d.allowed());
    assert_eq!(
        denied_by(&e, d.cause).as_deref(),
        Some("shop/tenant-isolation")
    );
    assert_eq!(d.cel_errors, 1);
}

#[test]
fn an_erroring_allow_condition_does_not_allow() {
    // Without the DENY policy: plaintext has no principal, so the ALLOW expression fails.
    let allow_only = POLICIES.split("---").nth(1).unwrap();
    let e = engine(allow_only);
    let d = e.check(Protocol::Http, &request(None, &[]));
    assert!(!d.allowed());
    assert_eq!(d.cause, Cause::NoAllowRuleMatched);
    assert_eq!(d.cel_errors, 1);
    let d = e.check(Protocol::Http, &request(Some(ADMIN), &[]));
    assert!(d.allowed());
}

#[test]
fn bad_expression_is_refused_at_load_with_its_field() {
    let bad = POLICIES.replace("request.headers[", "request.hedaers[");
    let err = load_str(&bad, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("shop/tenant-isolation"), "{err}");
    assert!(err.contains("spec.rules[0].when[0].notValues[0]"), "{err}");
    assert!(err.contains("unknown attribute `request.hedaers`"), "{err}");
}

#[test]
fn on_tcp_an_http_only_deny_condition_is_ignored_so_the_deny_applies() {
    let e = engine(POLICIES);
    let conn = Attributes {
        http: None,
        ..request(Some(ADMIN), &[])
    };
    let d = e.check(Protocol::Tcp, &conn);
    assert!(!d.allowed());
    assert_eq!(
        denied_by(&e, d.cause).as_deref(),
        Some("shop/tenant-isolation")
    );
    assert_eq!(d.cel_errors, 0);
}

#[test]
fn on_tcp_a_connection_level_expression_still_decides() {
    let allow_only = POLICIES.split("---").nth(1).unwrap();
    let e = engine(allow_only);
    let tcp = |principal| Attributes {
        http: None,
        ..request(principal, &[])
    };
    assert!(e.check(Protocol::Tcp, &tcp(Some(ADMIN))).allowed());
    let web = "spiffe://cluster.local/ns/tenant-a/sa/web";
    assert!(!e.check(Protocol::Tcp, &tcp(Some(web))).allowed());
}
