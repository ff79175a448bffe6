//! The cost bound (issue 8): hostile expressions are refused when the policies load, attributes
//! over their limits are errors, and every expression the compiler accepts evaluates within its
//! estimate on adversarial inputs (a step counter, not a clock).

use std::cell::Cell;

use cel_interpreter::extractors::Arguments;
use cel_parser::ast::{CallExpr, EntryExpr, Expr, IdedExpr};
use serde_json::json;

use super::cost::{creates, value_shallow};
use super::*;
use crate::attributes::HttpAttributes;

fn compile_err(src: &str) -> String {
    match CelExpression::compile(src) {
        Ok(e) => panic!("`{src}` should not compile (cost {})", e.cost()),
        Err(e) => e,
    }
}

/// `[0, 1, ..., n-1]`
fn list(n: usize) -> String {
    let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    format!("[{}]", items.join(","))
}

/// `[0, 0, ..., 0]` (n zeros): `all` over it never stops early.
fn zeros(n: usize) -> String {
    format!("[{}]", vec!["0"; n].join(","))
}

/// `L.all(a, L.all(b, ... a + b + ... == 0))`, `levels` deep over `n`-element literal lists.
fn nested_all(levels: usize, n: usize) -> String {
    let vars: Vec<String> = (0..levels).map(|i| format!("v{i}")).collect();
    let mut body = format!("{} == 0", vars.join(" + "));
    for v in vars.iter().rev() {
        body = format!("{}.all({v}, {body})", zeros(n));
    }
    body
}

#[test]
fn nested_macros_over_literal_lists_are_refused_with_the_estimate() {
    // The issue's reproduction: 4 levels of 300 (about 2 hours per request before).
    let src = nested_all(4, 300);
    assert!(src.len() < MAX_SOURCE, "{} bytes", src.len());
    let err = compile_err(&src);
    assert!(err.contains("may cost up to"), "{err}");
    assert!(
        err.contains(&format!("budget of {EXPRESSION_BUDGET}")),
        "{err}"
    );
    // 3 levels of 200 (7 s per request before).
    let err = compile_err(&nested_all(3, 200));
    assert!(err.contains("may cost up to"), "{err}");
    // 2 levels of 200 is 40,000 iterations: also over.
    compile_err(&nested_all(2, 200));
}

const MAX_SOURCE: usize = 4096;

#[test]
fn small_nested_macros_are_accepted() {
    let e = CelExpression::compile(&nested_all(2, 20)).unwrap();
    assert!(e.cost() > 400, "at least the 400 iterations: {}", e.cost());
    assert!(e.cost() <= EXPRESSION_BUDGET);
    let e = CelExpression::compile(&nested_all(1, 1000)).unwrap();
    assert!(e.cost() > 1000);
    // Ordinary expressions are cheap.
    let e = CelExpression::compile("destination.port == 8443").unwrap();
    assert!(e.cost() < 10, "{}", e.cost());
}

#[test]
fn products_of_inputs_are_refused() {
    for src in [
        // map/filter chains: the accumulator is copied at each step (quadratic).
        &format!(
            "{}.map(x, {}.map(y, x + y)).size() > 0",
            list(150),
            list(150)
        ),
        &format!("{}.filter(x, x > 0).map(x, x * 2).size() > 0", list(1000)),
        // String repetition in a macro.
        &format!(
            "{}.exists(x, (request.path + request.path + request.path).size() == x)",
            list(100)
        ),
        // A macro over the headers, scanning each header value for each header name.
        "request.headers.all(k, request.headers.all(j, request.headers[j].contains(k)))",
        // A macro over a claim list in a macro over a claim list.
        "request.auth.claims.a.exists(x, request.auth.claims.b.exists(y, x == y))",
    ] {
        let err = compile_err(src);
        assert!(err.contains("over the budget"), "{src}: {err}");
    }
}

#[test]
fn computed_regex_is_refused() {
    let err = compile_err(r#"request.path.matches(request.headers["x-re"])"#);
    assert!(err.contains("must be a constant string"), "{err}");
    let err = compile_err(r#"matches(request.path, "^/" + request.headers["x-re"])"#);
    assert!(err.contains("must be a constant string"), "{err}");
    // A constant pattern still compiles, once.
    CelExpression::compile(r#"request.path.matches("^/api/v[0-9]+/")"#).unwrap();
}

#[test]
fn over_budget_is_reported_at_the_value_with_object_and_field() {
    let input = json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "hostile", "namespace": "shop"},
        "spec": {"rules": [{"when": [{"key": CEL_CONDITION_KEY,
                                        "values": [nested_all(3, 200)]}]}]}});
    let d = crate::load_value(&input, &crate::LoadOptions::default()).unwrap_err();
    let text = d.to_string();
    assert!(
        text.contains("AuthorizationPolicy shop/hostile: spec.rules[0].when[0].values[0]: "),
        "{text}"
    );
    assert!(text.contains("may cost up to"), "{text}");
}

/// An expression costing between half the expression budget and the budget.
fn half_budget_expression() -> (String, u64) {
    for n in (10..2000).step_by(10) {
        let src = format!("{}.all(a, {}.all(b, a != b || a == 0))", list(n), list(n));
        let cost = CelExpression::compile(&src)
            .map(|e| e.cost())
            .unwrap_or(u64::MAX);
        if cost > EXPRESSION_BUDGET / 2 && cost <= EXPRESSION_BUDGET {
            return (src, cost);
        }
    }
    panic!("no expression between half and the whole budget")
}

#[test]
fn rule_budget_sums_the_rules_expressions() {
    let (src, cost) = half_budget_expression();
    assert!(check_rule_budget([src.as_str()]).is_ok());
    let n = usize::try_from(RULE_BUDGET / cost + 1).unwrap();
    let many = vec![src.as_str(); n];
    let err = check_rule_budget(many.iter().copied()).unwrap_err();
    assert!(err.contains("rule budget"), "{err}");
    // Through the loader, at the rule's `when`.
    let input = json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "heavy", "namespace": "shop"},
        "spec": {"rules": [{"when": [{"key": CEL_CONDITION_KEY, "values": many}]}]}});
    let d = crate::load_value(&input, &crate::LoadOptions::default()).unwrap_err();
    let text = d.to_string();
    assert!(
        text.contains("AuthorizationPolicy shop/heavy: spec.rules[0].when: "),
        "{text}"
    );
    assert!(text.contains("rule budget"), "{text}");
}

fn conn() -> Attributes<'static> {
    Attributes {
        principal: Some("spiffe://cluster.local/ns/tenant-a/sa/admin"),
        mtls: true,
        source_ip: "10.1.2.3".parse().ok(),
        remote_ip: "10.1.2.3".parse().ok(),
        destination_ip: "10.9.9.9".parse().ok(),
        destination_port: Some(8443),
        sni: Some("api.example.com"),
        dynamic_metadata: None,
        http: None,
    }
}

#[test]
fn attributes_over_their_limits_are_errors() {
    let limit = usize::try_from(MAX_STRING_BYTES).unwrap();
    let at_limit = format!("/{}", "a".repeat(limit - 1));
    let over = format!("/{}", "a".repeat(limit));
    let e = CelExpression::compile(r#"request.path.startsWith("/a")"#).unwrap();
    let with_path = |p: &'static str| Attributes {
        http: Some(HttpAttributes {
            path: Some(p),
            ..Default::default()
        }),
        ..conn()
    };
    let at_limit: &'static str = Box::leak(at_limit.into_boxed_str());
    let over: &'static str = Box::leak(over.into_boxed_str());
    assert_eq!(e.evaluate(&with_path(at_limit)), Ok(true));
    let err = e.evaluate(&with_path(over)).unwrap_err();
    assert!(err.0.contains("over its limit"), "{err}");

    // Too many distinct headers, for an expression that reads them all.
    let names: Vec<String> = (0..=MAX_HEADERS).map(|i| format!("x-h{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let attrs = Attributes {
        http: Some(HttpAttributes {
            headers: &headers,
            ..Default::default()
        }),
        ..conn()
    };
    let all = CelExpression::compile(r#"request.headers.exists(k, k == "x-h0")"#).unwrap();
    assert!(all.evaluate(&attrs).unwrap_err().0.contains("entries"));
    // One header alone is not affected by the others.
    let one = CelExpression::compile(r#"request.headers["x-h0"] == "v""#).unwrap();
    assert_eq!(one.evaluate(&attrs), Ok(true));

    // A claim list over the limit.
    let n = usize::try_from(MAX_CLAIM_ITEMS).unwrap();
    let jwt = json!({"groups": vec!["g"; n + 1], "ok": vec!["g"; n]});
    let attrs = Attributes {
        http: Some(HttpAttributes {
            jwt: Some(&jwt),
            ..Default::default()
        }),
        ..conn()
    };
    let groups = CelExpression::compile(r#""g" in request.auth.claims.groups"#).unwrap();
    assert!(groups.evaluate(&attrs).is_err());
    let ok = CelExpression::compile(r#""g" in request.auth.claims.ok"#).unwrap();
    assert_eq!(ok.evaluate(&attrs), Ok(true));
}

#[test]
fn over_limit_error_never_widens_access() {
    // A DENY rule on the path: a path over the limit is an error, so the rule denies.
    let policy = json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-admin", "namespace": "shop"},
        "spec": {"action": "DENY", "rules": [{"when": [{"key": CEL_CONDITION_KEY,
            "values": [r#"request.path.startsWith("/admin")"#]}]}]}});
    let (set, _) = crate::load_value(&policy, &crate::LoadOptions::default()).unwrap();
    let workload = crate::Workload {
        namespace: "shop".to_string(),
        labels: std::collections::BTreeMap::new(),
    };
    let (engine, _) =
        crate::Engine::compile(&set, &workload, &crate::MeshConfig::default()).unwrap();
    let long: String = format!(
        "/{}",
        "b".repeat(usize::try_from(MAX_STRING_BYTES).unwrap())
    );
    for (path, allowed) in [("/public", true), ("/admin", false), (long.as_str(), false)] {
        let attrs = Attributes {
            http: Some(HttpAttributes {
                path: Some(path),
                method: Some("GET"),
                ..Default::default()
            }),
            ..conn()
        };
        let decision = engine.check(crate::Protocol::Http, &attrs);
        assert_eq!(
            decision.allowed(),
            allowed,
            "{}",
            &path[..path.len().min(20)]
        );
    }
}

// ---- the property: accepted expressions evaluate within their estimate ----

thread_local! {
    static STEPS: Cell<u64> = const { Cell::new(0) };
}

fn tick_read(Arguments(args): Arguments) -> cel_interpreter::ResolveResult {
    STEPS.with(|s| s.set(s.get() + 1));
    Ok(args.first().cloned().unwrap_or(Value::Null))
}

fn tick_create(Arguments(args): Arguments) -> cel_interpreter::ResolveResult {
    let v = args.first().cloned().unwrap_or(Value::Null);
    STEPS.with(|s| s.set(s.get() + 1 + value_shallow(&v)));
    Ok(v)
}

/// Wraps every node in `@tick_read` or `@tick_create`, which count what [`cost`] bounds: one
/// step per node, plus the size of each value a node creates.
fn instrument(e: &mut IdedExpr) {
    match &mut e.expr {
        Expr::Select(s) => instrument(&mut s.operand),
        Expr::List(l) => l.elements.iter_mut().for_each(instrument),
        Expr::Map(m) => {
            for entry in &mut m.entries {
                if let EntryExpr::MapEntry(entry) = &mut entry.expr {
                    instrument(&mut entry.key);
                    instrument(&mut entry.value);
                }
            }
        }
        Expr::Call(c) => {
            if let Some(t) = &mut c.target {
                instrument(t);
            }
            c.args.iter_mut().for_each(instrument);
        }
        Expr::Comprehension(c) => {
            instrument(&mut c.iter_range);
            instrument(&mut c.accu_init);
            instrument(&mut c.loop_cond);
            instrument(&mut c.loop_step);
            instrument(&mut c.result);
        }
        _ => {}
    }
    let tick = if creates(e) {
        "@tick_create"
    } else {
        "@tick_read"
    };
    let inner = std::mem::take(e);
    *e = IdedExpr {
        id: inner.id,
        expr: Expr::Call(CallExpr {
            func_name: tick.to_string(),
            target: None,
            // Three arguments: cel-interpreter evaluates the first argument of a one- or
            // two-argument call twice, which would count twice what the wrapper adds.
            args: vec![inner, null(), null()],
        }),
    };
}

fn null() -> IdedExpr {
    IdedExpr {
        id: 0,
        expr: Expr::Literal(cel_parser::reference::Val::Null),
    }
}

fn instrumented(src: &str) -> Result<CelExpression, String> {
    let mut e = CelExpression::compile(src)?;
    instrument(&mut e.expr);
    e.functions.add_function("@tick_read", tick_read);
    e.functions.add_function("@tick_create", tick_create);
    Ok(e)
}

/// Evaluates `e` and returns the steps it took.
fn steps(e: &CelExpression, attrs: &Attributes<'_>) -> (Result<bool, CelError>, u64) {
    STEPS.with(|s| s.set(0));
    let result = e.evaluate(attrs);
    (result, STEPS.with(Cell::get))
}

#[test]
fn instrumentation_counts_iterations() {
    let e = instrumented(&nested_all(2, 20)).unwrap();
    let (result, n) = steps(&e, &conn());
    assert_eq!(result, Ok(true));
    assert!(n > 400 && n <= e.cost(), "{n} steps, bound {}", e.cost());
    let e = instrumented(&format!("{}.all(x, x >= 0)", list(500))).unwrap();
    let (result, n) = steps(&e, &conn());
    assert_eq!(result, Ok(true));
    assert!(
        n > 500 * 5 && n <= e.cost(),
        "{n} steps, bound {}",
        e.cost()
    );
}

/// SplitMix64: a deterministic generator, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Random expressions over the attributes, literals, operators and macros, of roughly the given
/// type; many do not compile (which is fine: only the accepted ones are checked).
struct Gen {
    rng: Rng,
    vars: Vec<String>,
}

const STRINGS: &[&str] = &[
    "request.path",
    "request.host",
    "request.method",
    r#"request.headers["x-a"]"#,
    "request.headers.x_b",
    "source.principal",
    "source.namespace",
    "request.auth.claims.s",
    "request.auth.claims.groups[0]",
    "'abc'",
    "'/api/'",
];

const LISTS: &[&str] = &[
    "request.auth.claims.groups",
    "request.auth.claims.nested",
    "request.headers",
    "request.auth.claims",
    "['a', 'b', 'c']",
];

impl Gen {
    fn var(&mut self) -> String {
        if self.vars.is_empty() || self.rng.below(3) == 0 {
            return self.rng.pick(STRINGS).to_string();
        }
        self.vars[self.rng.below(self.vars.len())].clone()
    }

    fn string(&mut self, depth: usize) -> String {
        match self.rng.below(if depth == 0 { 2 } else { 6 }) {
            0 => self.var(),
            1 => format!("'{}'", "z".repeat(self.rng.below(300))),
            2 => format!("{} + {}", self.string(depth - 1), self.string(depth - 1)),
            3 => format!("string({})", self.int(depth - 1)),
            4 => format!(
                "({} ? {} : {})",
                self.boolean(depth - 1),
                self.var(),
                self.var()
            ),
            _ => format!("{}[0]", self.list(depth - 1)),
        }
    }

    fn int(&mut self, depth: usize) -> String {
        match self.rng.below(if depth == 0 { 2 } else { 5 }) {
            0 => self.rng.below(1000).to_string(),
            1 => "destination.port".to_string(),
            2 => format!("size({})", self.string(depth - 1)),
            3 => format!("size({})", self.list(depth - 1)),
            _ => format!("({} + {})", self.int(depth - 1), self.int(depth - 1)),
        }
    }

    fn list(&mut self, depth: usize) -> String {
        match self.rng.below(if depth == 0 { 2 } else { 6 }) {
            0 => self.rng.pick(LISTS).to_string(),
            1 => list(self.rng.below(400)),
            2 => {
                let range = self.list(depth - 1);
                let v = format!("m{}", self.vars.len());
                self.vars.push(v.clone());
                let body = self.string(depth - 1);
                self.vars.pop();
                format!("{range}.map({v}, {body})")
            }
            3 => {
                let range = self.list(depth - 1);
                let v = format!("f{}", self.vars.len());
                self.vars.push(v.clone());
                let body = self.boolean(depth - 1);
                self.vars.pop();
                format!("{range}.filter({v}, {body})")
            }
            4 => format!("{} + {}", self.list(depth - 1), self.list(depth - 1)),
            _ => format!("[{}, {}]", self.string(depth - 1), self.var()),
        }
    }

    fn boolean(&mut self, depth: usize) -> String {
        if depth == 0 {
            return self
                .rng
                .pick(&["true", "has(request.headers.x_a)"])
                .to_string();
        }
        let d = depth - 1;
        match self.rng.below(12) {
            0 => format!("{} == {}", self.string(d), self.string(d)),
            1 => format!("{}.startsWith({})", self.string(d), self.string(d)),
            2 => format!("{}.contains({})", self.string(d), self.string(d)),
            3 => format!("{}.matches('^/a+b*$')", self.string(d)),
            4 => format!("{} < {}", self.int(d), self.int(d)),
            5 => format!("{} in {}", self.string(d), self.list(d)),
            6 => format!("({} && {})", self.boolean(d), self.boolean(d)),
            7 => format!("!({} || {})", self.boolean(d), self.boolean(d)),
            8 => format!("{} == {}", self.list(d), self.list(d)),
            _ => {
                let range = self.list(d);
                let v = format!("x{}", self.vars.len());
                self.vars.push(v.clone());
                let body = self.boolean(d);
                self.vars.pop();
                let m = self.rng.pick(&["all", "exists", "exists_one"]);
                format!("{range}.{m}({v}, {body})")
            }
        }
    }
}

/// Inputs at the limits: every string as long as allowed, the most headers, claims as large as
/// allowed, with values that make `all` and `exists` run to the end.
struct Adversarial {
    path: String,
    host: String,
    principal: String,
    header_names: Vec<String>,
    header_values: Vec<String>,
    jwt: serde_json::Value,
}

impl Adversarial {
    fn new(fill: char) -> Self {
        let max = usize::try_from(MAX_STRING_BYTES).unwrap();
        let items = usize::try_from(MAX_CLAIM_ITEMS).unwrap();
        let name_len = usize::try_from(MAX_HEADER_NAME_BYTES).unwrap();
        let third = (max - 40) / 3;
        let f = |n: usize| fill.to_string().repeat(n);
        let mut header_names: Vec<String> = vec!["x-a".to_string(), "x-b".to_string()];
        for i in 2..usize::try_from(MAX_HEADERS).unwrap() {
            header_names.push(format!("x-{i}-{}", f(name_len - 10)));
        }
        // The generated expressions read `x-a` and `x-b` one by one and the others by name.
        let header_values = header_names
            .iter()
            .enumerate()
            .map(|(i, _)| if i < 2 { f(max) } else { f(1) })
            .collect();
        // Claims: about MAX_CLAIMS_WEIGHT in all, the lists as long as allowed.
        let short = f(20);
        let jwt = json!({
            "s": f(usize::try_from(MAX_CLAIM_STRING_BYTES).unwrap()),
            "groups": vec![short.clone(); items],
            "nested": vec![vec![1; 10]; items],
            "a": vec![short.clone(); items],
            "b": vec![short; items],
        });
        Adversarial {
            path: format!("/{}", f(max - 1)),
            host: f(max),
            principal: format!("spiffe://{}/ns/{}/sa/{}", f(third), f(third), f(third)),
            header_names,
            header_values,
            jwt,
        }
    }
}

#[test]
fn accepted_expressions_evaluate_within_their_estimate() {
    let inputs = [Adversarial::new('a'), Adversarial::new('/')];
    let mut rng_seed = 0x5eed_u64;
    let (mut accepted, mut refused_for_cost, mut with_macros) = (0, 0, 0);
    let mut worst_ratio = 0.0f64;
    // MESHAUTHZ_CEL_CASES=20000 for a longer run.
    let cases: u64 = std::env::var("MESHAUTHZ_CEL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    for _ in 0..cases {
        rng_seed = rng_seed.wrapping_add(1);
        let mut g = Gen {
            rng: Rng(rng_seed),
            vars: Vec::new(),
        };
        let depth = 1 + g.rng.below(4);
        let src = g.boolean(depth);
        let e = match instrumented(&src) {
            Ok(e) => e,
            Err(err) => {
                refused_for_cost += usize::from(err.contains("over the budget"));
                continue;
            }
        };
        accepted += 1;
        with_macros += usize::from(src.contains(".all(") || src.contains(".map("));
        for input in &inputs {
            for jwt_present in [true, false] {
                let headers: Vec<(&str, &str)> = input
                    .header_names
                    .iter()
                    .zip(&input.header_values)
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                let attrs = Attributes {
                    principal: Some(&input.principal),
                    sni: Some(&input.host),
                    http: Some(HttpAttributes {
                        host: Some(&input.host),
                        method: Some(&input.host),
                        path: Some(&input.path),
                        headers: &headers,
                        jwt: jwt_present.then_some(&input.jwt),
                    }),
                    ..conn()
                };
                let (result, n) = steps(&e, &attrs);
                assert!(
                    result.as_ref().map_or(true, |_| true) && n <= e.cost(),
                    "`{src}`: {n} steps, bound {} ({result:?})",
                    e.cost()
                );
                worst_ratio = worst_ratio.max(n as f64 / e.cost() as f64);
            }
        }
    }
    eprintln!(
        "{accepted} accepted ({with_macros} with macros), {refused_for_cost} refused for cost, \
         closest: {worst_ratio:.3} of the bound"
    );
    // The generator must exercise both sides of the budget.
    let share = |n: usize| n as f64 / cases as f64;
    assert!(share(accepted) > 0.3, "only {accepted} accepted");
    assert!(
        share(refused_for_cost) > 0.05,
        "only {refused_for_cost} refused for cost"
    );
    assert!(share(with_macros) > 0.02, "only {with_macros} with macros");
    // The bound is not vacuous: some evaluation comes within a factor 10 of it.
    assert!(
        worst_ratio > 0.1,
        "closest evaluation used {worst_ratio} of its bound"
    );
}
