//! Rough cost of one CEL evaluation (compile once, evaluate many):
//! `cargo run --release -p meshauthz-policy-engine --example cel_timing`; for the Wasm figure,
//! build it with `--target wasm32-wasip1` and run the module under a WASI runtime (Node's
//! `node:wasi` uses V8, Envoy's default Wasm engine).

use std::hint::black_box;
use std::time::Instant;

use policy_engine::cel::CelExpression;
use policy_engine::{Attributes, HttpAttributes};

fn main() -> Result<(), String> {
    let jwt =
        serde_json::json!({"iss": "https://idp", "sub": "alice", "groups": ["dev", "admins"]});
    let headers = [("x-tenant", "tenant-a"), ("user-agent", "curl/8")];
    let attrs = Attributes {
        principal: Some("spiffe://cluster.local/ns/tenant-a/sa/admin"),
        mtls: true,
        source_ip: "10.1.2.3".parse().ok(),
        remote_ip: "10.1.2.3".parse().ok(),
        destination_ip: "10.9.9.9".parse().ok(),
        destination_port: Some(8443),
        sni: None,
        dynamic_metadata: None,
        http: Some(HttpAttributes {
            host: Some("api"),
            method: Some("GET"),
            path: Some("/api/v1/items?x=1"),
            headers: &headers,
            jwt: Some(&jwt),
        }),
    };
    for src in [
        "destination.port == 8443",
        "connection.mtls && destination.port == 8443",
        r#"request.headers["x-tenant"] == source.namespace"#,
        r#"destination.port == 8443 && source.principal.endsWith("/sa/admin")"#,
        r#"destination.port == 8443 && source.principal.endsWith("/sa/admin") && ip_in_cidr(source.address, "10.0.0.0/8")"#,
        r#"request.path.matches("^/api/v[0-9]+/")"#,
        r#""admins" in request.auth.claims.groups"#,
    ] {
        let expr = CelExpression::compile(src)?;
        let n = 200_000u32;
        for _ in 0..n / 4 {
            black_box(black_box(&expr).evaluate(black_box(&attrs)).is_ok());
        }
        let start = Instant::now();
        let mut t = 0u32;
        for _ in 0..n {
            t += u32::from(black_box(&expr).evaluate(black_box(&attrs)) == Ok(true));
        }
        let per = start.elapsed().as_nanos() / u128::from(n);
        println!("{per:>6} ns  {src}  (true {t}/{n})");
    }
    Ok(())
}
