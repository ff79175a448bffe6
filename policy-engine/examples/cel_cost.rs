//! What the CEL cost budget means in time: the costliest expressions of several kinds that the
//! compiler still accepts, evaluated on inputs at the limits, with their estimate and the time
//! per cost unit. `cargo run --release -p meshauthz-policy-engine --example cel_cost`.

use std::time::Instant;

use policy_engine::cel::{
    CelExpression, EXPRESSION_BUDGET, MAX_CLAIM_ITEMS, MAX_HEADERS, MAX_HEADER_NAME_BYTES,
    MAX_STRING_BYTES,
};
use policy_engine::{Attributes, HttpAttributes};

fn zeros(n: usize) -> String {
    format!("[{}]", vec!["0"; n].join(","))
}

fn nested(levels: usize, n: usize) -> String {
    let vars: Vec<String> = (0..levels).map(|i| format!("v{i}")).collect();
    let mut body = format!("{} == 0", vars.join(" + "));
    for v in vars.iter().rev() {
        body = format!("{}.all({v}, {body})", zeros(n));
    }
    body
}

/// The largest `n` for which `make(n)` compiles, and the expression.
fn largest(make: impl Fn(usize) -> String) -> Option<(usize, String)> {
    let (mut lo, mut hi) = (0usize, 4096usize);
    if CelExpression::compile(&make(1)).is_err() {
        return None;
    }
    lo = lo.max(1);
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if CelExpression::compile(&make(mid)).is_ok() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some((lo, make(lo)))
}

fn main() -> Result<(), String> {
    let max = usize::try_from(MAX_STRING_BYTES).map_err(|e| e.to_string())?;
    let name_len = usize::try_from(MAX_HEADER_NAME_BYTES).map_err(|e| e.to_string())?;
    let path = format!("/{}", "a".repeat(max - 1));
    let big = "a".repeat(max);
    let mut names = vec!["x-a".to_string()];
    for i in 1..usize::try_from(MAX_HEADERS).map_err(|e| e.to_string())? {
        names.push(format!("x-{i}-{}", "a".repeat(name_len - 10)));
    }
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), big.as_str())).collect();
    let items = usize::try_from(MAX_CLAIM_ITEMS).map_err(|e| e.to_string())?;
    let jwt = serde_json::json!({"groups": vec!["a".repeat(30); items]});
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
            host: Some(&big),
            method: Some("GET"),
            path: Some(&path),
            headers: &headers,
            jwt: Some(&jwt),
        }),
    };
    type Family = (&'static str, Box<dyn Fn(usize) -> String>);
    let families: Vec<Family> = vec![
        ("1 level", Box::new(|n| nested(1, n))),
        ("2 levels", Box::new(|n| nested(2, n))),
        ("3 levels", Box::new(|n| nested(3, n))),
        (
            "map (quadratic copy)",
            Box::new(|n| format!("{}.map(x, x + 1).size() > 0", zeros(n))),
        ),
        (
            "path scans in a macro",
            Box::new(|n| format!("{}.all(x, request.path.contains('zz'))", zeros(n))),
        ),
        (
            "regex on the path in a macro",
            Box::new(|n| {
                format!(
                    "{}.all(x, request.path.matches('^/(a|b)*c$') == false)",
                    zeros(n)
                )
            }),
        ),
        (
            "string concatenation in a macro",
            Box::new(|n| format!("{}.all(x, size(request.host + request.host) > 0)", zeros(n))),
        ),
        (
            "headers x claims",
            Box::new(|n| {
                format!(
                    "{}.all(x, request.headers.all(k, k != 'q') && request.auth.claims.groups.all(g, g != 'q'))",
                    zeros(n)
                )
            }),
        ),
    ];
    if std::env::args().any(|a| a == "--typical") {
        for src in [
            "destination.port == 8443",
            r#"request.headers["x-tenant"] == source.namespace"#,
            r#"has(source.principal) && source.principal.endsWith("/sa/admin")"#,
            r#"destination.port == 8443 && source.principal.endsWith("/sa/admin") && ip_in_cidr(source.address, "10.0.0.0/8")"#,
            r#"request.path.matches("^/api/v[0-9]+/")"#,
            r#""admins" in request.auth.claims.groups"#,
            r#"request.auth.claims.groups.exists(g, g.startsWith("team-"))"#,
            r#"request.headers.exists(k, k.startsWith("x-debug"))"#,
        ] {
            println!("{:>6}  {src}", CelExpression::compile(src)?.cost());
        }
        return Ok(());
    }
    if std::env::args().any(|a| a == "--unbounded") {
        // What the issue's reproduction costs without the bound: the bare interpreter.
        let src = nested(3, 200);
        let program = cel_interpreter::Program::compile(&src).map_err(|e| e.to_string())?;
        let start = Instant::now();
        let result = program.execute(&cel_interpreter::Context::default());
        println!(
            "bare cel-interpreter, 3 levels x 200: {:.1} s ({result:?}); refused by meshauthz: {}",
            start.elapsed().as_secs_f64(),
            CelExpression::compile(&src).err().unwrap_or_default()
        );
    }
    println!("budget {EXPRESSION_BUDGET} units; inputs at the limits");
    for (name, make) in families {
        let Some((n, src)) = largest(make) else {
            println!("{name}: refused even at n = 1");
            continue;
        };
        let expr = CelExpression::compile(&src)?;
        let runs = 20u32;
        let start = Instant::now();
        let mut last = Ok(false);
        for _ in 0..runs {
            last = expr.evaluate(&attrs);
        }
        let ns = start.elapsed().as_nanos() / u128::from(runs);
        let per_unit = ns as f64 / expr.cost() as f64;
        println!(
            "{name:<32} n = {n:<5} cost {:>6}  {:>9.1} µs  {per_unit:>6.1} ns/unit  ({last:?})",
            expr.cost(),
            ns as f64 / 1000.0,
        );
    }
    Ok(())
}
