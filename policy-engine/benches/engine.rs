//! Engine benchmarks (`make bench-engine`; results and machine in BENCHMARKS.md).
//!
//! * `check/allow_last/N`: one HTTP check against N applicable ALLOW policies, each for a distinct
//!   peer principal; the request comes from the principal of the last policy.
//! * `check/allow_none/N`: the same policies, a principal that none of them names (every policy
//!   has to be ruled out; the request is denied).
//! * `check/deny_heavy/N`: N DENY policies with distinct principals plus one ALLOW-all; the request
//!   comes from a principal no DENY names, so every DENY is ruled out before it is allowed.
//! * `check/condition/{native,cel}`: `when request.headers[x-tenant] values [acme]` against the CEL
//!   `request.headers["x-tenant"] == "acme"`.
//! * `compile/load_and_compile/1000`: `load_str` + `Engine::compile` of 1,000 ALLOW policies.
//!
//! Sample sizes and times are small so the whole run stays within about three minutes on 2 cores.
#![expect(
    clippy::panic,
    reason = "a benchmark that cannot set up has nothing to measure"
)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use policy_engine::{
    load_str, Attributes, Engine, HttpAttributes, LoadOptions, MeshConfig, Protocol, Workload,
};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

fn workload() -> Workload {
    Workload {
        namespace: "ns1".to_string(),
        labels: [("app".to_string(), "b".to_string())].into_iter().collect(),
    }
}

fn principal(i: usize) -> String {
    format!("spiffe://cluster.local/ns/ns1/sa/sa-{i:05}")
}

/// `n` policies of `action`, policy `i` naming the peer `principal(i)`; names sort in index order.
fn policies(action: &str, n: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        let _ = write!(
            text,
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: {action_lc}-{i:05}, namespace: ns1}}\n\
             spec:\n  action: {action}\n  rules:\n  - from:\n    - source:\n        \
             principals: [\"cluster.local/ns/ns1/sa/sa-{i:05}\"]\n    to:\n    - operation:\n        \
             methods: [\"GET\", \"POST\"]\n        paths: [\"/api/*\"]\n",
            action_lc = action.to_ascii_lowercase(),
        );
    }
    text
}

fn compile(text: &str) -> Engine {
    let (set, _) = load_str(text, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("the benchmark policies do not load: {e}"));
    let (engine, _) = Engine::compile(&set, &workload(), &MeshConfig::default())
        .unwrap_or_else(|e| panic!("the benchmark policies do not compile: {e}"));
    engine
}

fn attrs<'a>(principal: &'a str, headers: &'a [(&'a str, &'a str)], ip: IpAddr) -> Attributes<'a> {
    Attributes {
        principal: Some(principal),
        mtls: true,
        source_ip: Some(ip),
        remote_ip: Some(ip),
        destination_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1))),
        destination_port: Some(8080),
        sni: Some("outbound_.8080_._.b.ns1.svc.cluster.local"),
        dynamic_metadata: None,
        http: Some(HttpAttributes {
            host: Some("b.ns1.svc.cluster.local:8080"),
            method: Some("GET"),
            path: Some("/api/v1/items?page=2"),
            headers,
            jwt: None,
        }),
    }
}

fn checks(c: &mut Criterion) {
    let ip = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1));
    let headers: [(&str, &str); 2] = [("x-tenant", "acme"), ("user-agent", "bench")];
    let mut group = c.benchmark_group("check");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    for n in SIZES {
        let engine = compile(&policies("ALLOW", n));
        let last = principal(n - 1);
        let hit = attrs(&last, &headers, ip);
        assert!(
            engine.check(Protocol::Http, &hit).allowed(),
            "allow_last/{n}"
        );
        group.bench_with_input(BenchmarkId::new("allow_last", n), &hit, |b, a| {
            b.iter(|| engine.check(Protocol::Http, black_box(a)));
        });
        let stranger = "spiffe://cluster.local/ns/ns1/sa/stranger".to_string();
        let miss = attrs(&stranger, &headers, ip);
        assert!(
            !engine.check(Protocol::Http, &miss).allowed(),
            "allow_none/{n}"
        );
        group.bench_with_input(BenchmarkId::new("allow_none", n), &miss, |b, a| {
            b.iter(|| engine.check(Protocol::Http, black_box(a)));
        });
    }

    for n in SIZES {
        let mut text = policies("DENY", n);
        text.push_str(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: allow-all, namespace: ns1}\nspec:\n  rules:\n  - {}\n",
        );
        let engine = compile(&text);
        let stranger = "spiffe://cluster.local/ns/ns1/sa/stranger".to_string();
        let a = attrs(&stranger, &headers, ip);
        assert!(engine.check(Protocol::Http, &a).allowed(), "deny_heavy/{n}");
        group.bench_with_input(BenchmarkId::new("deny_heavy", n), &a, |b, a| {
            b.iter(|| engine.check(Protocol::Http, black_box(a)));
        });
    }

    let condition = |when: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: tenant, namespace: ns1}}\nspec:\n  rules:\n  - when:\n{when}"
        )
    };
    let native = compile(&condition(
        "    - key: request.headers[x-tenant]\n      values: [\"acme\"]\n",
    ));
    let cel = compile(&condition(
        "    - key: meshauthz.io/cel\n      values: ['request.headers[\"x-tenant\"] == \"acme\"']\n",
    ));
    let p = principal(0);
    let a = attrs(&p, &headers, ip);
    for (name, engine) in [("native", &native), ("cel", &cel)] {
        assert!(
            engine.check(Protocol::Http, &a).allowed(),
            "condition/{name}"
        );
        group.bench_with_input(BenchmarkId::new("condition", name), &a, |b, a| {
            b.iter(|| engine.check(Protocol::Http, black_box(a)));
        });
    }
    group.finish();
}

fn compile_time(c: &mut Criterion) {
    let text = policies("ALLOW", 1_000);
    let mut group = c.benchmark_group("compile");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    group.bench_with_input(
        BenchmarkId::new("load_and_compile", 1_000),
        &text,
        |b, text| {
            b.iter(|| compile(black_box(text)));
        },
    );
    group.finish();
}

criterion_group!(benches, checks, compile_time);
criterion_main!(benches);
