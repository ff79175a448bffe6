use std::net::IpAddr;

use serde_json::json;

use super::*;
use crate::attributes::HttpAttributes;

const ADMIN: &str = "spiffe://cluster.local/ns/tenant-a/sa/admin";

fn compile(src: &str) -> CelExpression {
    CelExpression::compile(src).unwrap_or_else(|e| panic!("`{src}` should compile: {e}"))
}

fn compile_err(src: &str) -> String {
    match CelExpression::compile(src) {
        Ok(e) => panic!("`{src}` should not compile, got {e:?}"),
        Err(e) => e,
    }
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

/// An mTLS connection from `principal` at 10.1.2.3 to port 8443.
fn mtls_conn(principal: &'static str) -> Attributes<'static> {
    Attributes {
        principal: Some(principal),
        mtls: true,
        source_ip: ip("10.1.2.3"),
        remote_ip: ip("192.0.2.7"),
        destination_ip: ip("10.9.9.9"),
        destination_port: Some(8443),
        sni: Some("api.example.com"),
        dynamic_metadata: None,
        http: None,
    }
}

fn plaintext_conn() -> Attributes<'static> {
    Attributes {
        principal: None,
        mtls: false,
        ..mtls_conn(ADMIN)
    }
}

fn with_http<'a>(conn: Attributes<'a>, http: HttpAttributes<'a>) -> Attributes<'a> {
    Attributes {
        http: Some(http),
        ..conn
    }
}

fn eval(src: &str, attrs: &Attributes<'_>) -> Result<bool, CelError> {
    compile(src).evaluate(attrs)
}

// ---- compile errors ----

#[test]
fn syntax_error_has_position() {
    assert_eq!(
        compile_err("destination.port == "),
        "syntax error at line 1, column 21: expected a value, found the end of the expression"
    );
    let err = compile_err("source.principal.endsWith('x'");
    assert!(err.contains("syntax error"), "{err}");
    // Well-formed but out of range: cel-parser's own message, with its position.
    assert_eq!(
        compile_err("destination.port == 9223372036854775808"),
        "syntax error at line 1, column 21: invalid int literal"
    );
}

/// Inputs on which cel-parser 0.10 itself panics (cel-rust issues #191, #194): a panic would trap
/// the Wasm VM, so they must come back as errors.
#[test]
fn malformed_input_is_an_error_not_a_panic() {
    for src in [
        "1 +",
        "(",
        ")",
        ".",
        "/",
        "a.",
        "a[",
        "[1,",
        "{'a'",
        "f(",
        "a ? b",
        "!",
        "-",
        "1 2",
        "'unterminated",
        "\"\\q\"",
        "a..b",
        "[,]",
        "{:}",
        "0x",
        "1e",
        "a || ",
        "&& a",
    ] {
        let err = compile_err(src);
        assert!(
            err.starts_with("syntax error at line 1, column "),
            "{src}: {err}"
        );
    }
    assert_eq!(
        compile_err("destination.port ==\n  && true"),
        "syntax error at line 2, column 3: expected a value, found `&&`"
    );
}

/// The tree with every id set to 0: the two parsers number nodes in different orders, and ids
/// play no part in evaluation.
fn without_ids(mut e: cel_parser::ast::IdedExpr) -> cel_parser::ast::IdedExpr {
    use cel_parser::ast::{EntryExpr, Expr};
    fn strip(e: &mut cel_parser::ast::IdedExpr) {
        e.id = 0;
        match &mut e.expr {
            Expr::Call(c) => {
                if let Some(t) = c.target.as_mut() {
                    strip(t);
                }
                c.args.iter_mut().for_each(strip);
            }
            Expr::Comprehension(c) => {
                for part in [
                    &mut c.iter_range,
                    &mut c.accu_init,
                    &mut c.loop_cond,
                    &mut c.loop_step,
                    &mut c.result,
                ] {
                    strip(part);
                }
            }
            Expr::List(l) => l.elements.iter_mut().for_each(strip),
            Expr::Map(m) => {
                for entry in &mut m.entries {
                    entry.id = 0;
                    if let EntryExpr::MapEntry(me) = &mut entry.expr {
                        strip(&mut me.key);
                        strip(&mut me.value);
                    }
                }
            }
            Expr::Select(s) => strip(&mut s.operand),
            _ => {}
        }
    }
    strip(&mut e);
    e
}

/// cel-parser's reading of `src`, `None` when it fails or panics.
fn cel_parser_tree(src: &str) -> Option<cel_parser::ast::IdedExpr> {
    let src = src.to_string();
    std::panic::catch_unwind(move || cel_parser::Parser::new().parse(&src).ok())
        .ok()
        .flatten()
        .map(without_ids)
}

/// meshauthz's parser builds the tree cel-parser builds (the shape the compiler, the cost
/// estimate and cel-interpreter expect), except where cel-parser departs from CEL (see
/// `parser_follows_cel_where_cel_parser_does_not`).
#[test]
fn the_parser_builds_the_tree_cel_parser_builds() {
    for src in [
        "a",
        "a.b.c",
        "a[0]['k'].f",
        "f(a, b)",
        "a.f(b).g()",
        "1 + 2 * 3 - 4 / 5 % 6",
        "(1 + 2) * 3",
        "a < b == c > d",
        "a <= b && c >= d || e != f",
        "a || b || c || d || e",
        "a && b && c && d && e && f && g",
        "a ? b : c ? d : e",
        "(a ? b : c) ? d : e",
        "x in [1, 2, 3,]",
        "{'a': 1, 'b': [true, false, null],}",
        "{}",
        "[]",
        "-1",
        "-1.5e3",
        "- 2",
        "1 - -1",
        "-a",
        "!a",
        "!-1",
        "0x1F + 0xffu + 42u + 0.5 + .25 + 1e-3 + 2E+2",
        "-9223372036854775808",
        "18446744073709551615u",
        r#"'single' + "double" + r'raw\n' + R"RAW" + b'\x41\101' + B"z""#,
        r#"'\a\b\f\n\r\t\v\\\'\?\`\x41\u00e9\U0001F431\101'"#,
        "\"\"\"triple\nquoted\"\"\" + '''its'''",
        "'ünïcødé ✓'",
        "has(a.b)",
        "has(a.b.c)",
        "[1, 2].all(x, x > 0)",
        "[1, 2].exists(x, x > 1)",
        "[1, 2].exists_one(x, x == 1)",
        "[1, 2].existsOne(x, x == 1)",
        "[1, 2].map(x, x * 2)",
        "[1, 2].map(x, x > 1, x * 2)",
        "[1, 2].filter(x, x > 1)",
        "{'a': 1}.all(k, k == 'a')",
        "[[1], [2]].all(l, l.exists(y, y > 0))",
        "a.exists(x)",
        "f.all(x, y, z)",
        "request.headers['x-tenant'] == source.namespace",
        "request.path.startsWith('/api/') && request.method in ['GET', 'HEAD']",
        "size(request.path) < 100 // a comment\n  && true",
        "ip_in_cidr(source.ip, '10.0.0.0/8')",
    ] {
        let ours = super::parse::parse(src).map(without_ids);
        let theirs = cel_parser_tree(src);
        assert_eq!(ours.as_ref().ok(), theirs.as_ref(), "{src}: {ours:?}");
    }
}

/// Where cel-parser 0.10 departs from CEL, meshauthz follows CEL (cel-go's reading); each case
/// failed with cel-parser.
#[test]
fn parser_follows_cel_where_cel_parser_does_not() {
    let a = plaintext_conn();
    for src in [
        // An even number of `!` or `-` cancels out (cel-parser applied one).
        "!!true",
        "!(!!false)",
        "!!!false",
        "--1 == 1",
        "- -1 == 1",
        "---1 == -1",
        "----1 == 1",
        // `\"` is `"` in either kind of quotes (cel-parser kept the backslash in single quotes).
        r#"'a\"b' == "a\"b""#,
        r#"size('\"') == 1"#,
        // A quote inside a triple-quoted string.
        r#""""a"b""" == 'a"b'"#,
        r#"'''it's''' == "it's""#,
        // Signed hexadecimal.
        "-0x10 == -16",
        // Bytes take the same escapes as strings (cel-parser refused `\n` in bytes).
        r#"b"\n" == b"\x0a""#,
        r#"b'\'' == b"'""#,
    ] {
        assert_eq!(eval(src, &a), Ok(true), "{src}");
    }
    for (src, want) in [
        ("-9223372036854775809 == 0", "invalid int literal"),
        ("1e400 == 1.0", "invalid double literal"),
        (r#"b"\u00e9" == b"""#, "invalid escape sequence"),
        (r#"'\ud800' == ''"#, "invalid unicode code point"),
        ("18446744073709551616u == 0u", "invalid uint literal"),
    ] {
        let err = compile_err(src);
        assert!(err.contains(want), "{src}: {err}");
    }
}

/// Random token soup: the parser never panics; whatever it accepts, cel-parser reads the same way
/// (where cel-parser follows CEL: no doubled `!` or `-`), and it accepts most of what cel-parser
/// accepts (refusing only the syntax meshauthz leaves out).
#[test]
fn random_input_parses_as_cel_parser_reads_it() {
    const PIECES: &[&str] = &[
        "a",
        "b.c",
        "1",
        "1u",
        "2.5",
        "'s'",
        "r'x'",
        "b'y'",
        "true",
        "null",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "?",
        ".",
        ".x",
        "+",
        "-",
        "*",
        "/",
        "%",
        "!",
        "==",
        "<",
        "&&",
        "||",
        " in ",
        "f(",
        "has(",
        ".exists(x,",
        ".map(x,",
        ".?",
        "[?",
        "\\",
        "\"",
        " ",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut accepted, mut compared, mut theirs_only) = (0, 0, 0);
    for _ in 0..20_000 {
        let len = 1 + (next() % 8) as usize;
        let src: String = (0..len)
            .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
            .collect();
        let Ok(ours) = std::panic::catch_unwind(|| super::parse::parse(&src)) else {
            panic!("the parser panicked on {src:?}");
        };
        let spaced: String = src.chars().filter(|c| !c.is_whitespace()).collect();
        let doubled = spaced.contains("!!") || spaced.contains("--");
        match ours {
            Ok(tree) => {
                accepted += 1;
                if !doubled {
                    compared += 1;
                    assert_eq!(
                        Some(without_ids(tree)),
                        cel_parser_tree(&src),
                        "cel-parser reads {src:?} differently"
                    );
                }
            }
            Err(_) => {
                if cel_parser_tree(&src).is_some() {
                    theirs_only += 1;
                }
            }
        }
    }
    assert!(
        accepted > 100,
        "only {accepted} random inputs were well-formed"
    );
    assert!(compared > 100, "only {compared} compared");
    // What only cel-parser accepts is the left-out syntax (`.x` leading dots, `.?`).
    assert!(
        theirs_only < accepted / 4,
        "{theirs_only} inputs accepted by cel-parser only, against {accepted} by both"
    );
}

/// `matches` reads RE2's syntax as regex-lite does (README, "Functions and operators"): the
/// Perl classes are ASCII, as in RE2, and a Unicode class is refused when the policy loads.
#[test]
fn regex_perl_classes_are_ascii_as_in_re2() {
    let digits = "source.namespace.matches('^\\\\d+$')";
    let word = "source.namespace.matches('^\\\\w+$')";
    assert_eq!(
        eval(digits, &mtls_conn("spiffe://cluster.local/ns/042/sa/x")),
        Ok(true)
    );
    // ARABIC-INDIC DIGIT THREE is a Unicode digit, not an RE2 `\d`.
    assert_eq!(
        eval(digits, &mtls_conn("spiffe://cluster.local/ns/\u{663}/sa/x")),
        Ok(false)
    );
    assert_eq!(
        eval(word, &mtls_conn("spiffe://cluster.local/ns/team_a1/sa/x")),
        Ok(true)
    );
    assert_eq!(
        eval(
            word,
            &mtls_conn("spiffe://cluster.local/ns/\u{e9}quipe/sa/x")
        ),
        Ok(false)
    );
    // `.` and a negated class still take any character.
    assert_eq!(
        eval(
            "source.namespace.matches('^[^/]quipe$')",
            &mtls_conn("spiffe://cluster.local/ns/\u{e9}quipe/sa/x")
        ),
        Ok(true)
    );
}

#[test]
fn regex_unicode_classes_are_refused_at_load() {
    for pattern in ["\\\\p{L}", "\\\\pN", "\\\\P{Greek}"] {
        let err = compile_err(&format!("source.namespace.matches('^{pattern}$')"));
        assert!(err.starts_with("invalid regular expression `^"), "{err}");
        assert!(err.contains("Unicode"), "{err}");
    }
}

#[test]
fn unknown_attribute_is_named_with_the_known_ones() {
    let err = compile_err(r#"request.hedaers["x-tenant"] == "a""#);
    assert!(
        err.starts_with("unknown attribute `request.hedaers`; known: source.address,"),
        "{err}"
    );
    assert!(err.contains("request.auth.claims"), "{err}");
    let err = compile_err("sourc.principal == 'x'");
    assert!(err.starts_with("unknown attribute `sourc`;"), "{err}");
    let err = compile_err("request.auth == 'x'");
    assert!(
        err.starts_with("unknown attribute `request.auth`;"),
        "{err}"
    );
    let err = compile_err("source.principal.name == 'x'");
    assert_eq!(
        err,
        "`source.principal` is a string: it has no field `name`"
    );
    let err = compile_err("[1].exists(x, y > 0)");
    assert!(err.starts_with("unknown attribute `y`;"), "{err}");
}

#[test]
fn non_bool_result_is_refused() {
    for (src, ty) in [
        (r#""abc""#, "string"),
        ("1 + 2", "int"),
        ("source.principal", "string"),
        ("destination.port", "int"),
        ("request.headers", "map"),
        ("null", "null"),
        ("[true]", "list"),
    ] {
        assert_eq!(
            compile_err(src),
            format!("expression must evaluate to a bool, but it evaluates to {ty}"),
            "{src}"
        );
    }
}

#[test]
fn type_errors_the_compiler_can_see() {
    assert_eq!(
        compile_err("source.principal && true"),
        "`&&` needs bool operands, got string"
    );
    assert_eq!(
        compile_err("!destination.port"),
        "`!` needs bool operands, got int"
    );
    assert_eq!(
        compile_err("destination.port + 'x' == 1"),
        "`+` is not defined for int and string"
    );
    assert!(compile_err("'abc'.all(c, true)").contains("cannot iterate over a string"));
}

#[test]
fn unknown_function_and_bad_constants_are_refused() {
    let err = compile_err("source.principal.endswith('/sa/admin')");
    assert!(
        err.starts_with("unknown function `endswith`; known: size,"),
        "{err}"
    );
    let err = compile_err("ip_in_cidr(source.address, '10.0.0.0/33')");
    assert!(err.contains("`10.0.0.0/33` is not a CIDR"), "{err}");
    let err = compile_err("request.path.matches('[a-')");
    assert!(err.starts_with("invalid regular expression `[a-`"), "{err}");
    let err = compile_err("ip_in_cidr(source.address)");
    assert!(err.contains("`ip_in_cidr` takes 2 argument(s)"), "{err}");
    assert!(
        compile_err("timestamp('2024-01-01T00:00:00Z') > timestamp('2023-01-01T00:00:00Z')")
            .starts_with("unknown function `timestamp`")
    );
}

#[test]
fn limits_and_unsupported_syntax() {
    assert_eq!(compile_err("  "), "empty expression");
    let nested = |n: usize| format!("{}true{}", "(".repeat(n), ")".repeat(n));
    assert!(compile_err(&nested(17)).contains("nests deeper than 16 levels"));
    let chain = |n: usize| format!("{} == 1", vec!["1"; n].join(" + "));
    assert!(compile_err(&chain(17)).contains("nests deeper than 16 levels"));
    // At the limit it compiles, on a test thread's default stack (cel-parser's ANTLR parser, which
    // meshauthz no longer calls, needed a 64 MiB one in a debug build).
    assert!(CelExpression::compile(&nested(15)).is_ok());
    assert!(CelExpression::compile(&chain(15)).is_ok());
    let long = vec!["destination.port == 1"; 300].join(" || ");
    assert!(compile_err(&long).contains("the limit is 4096"));
    assert_eq!(
        compile_err("google.protobuf.Value{} == 1"),
        "syntax error at line 1, column 22: expected an operator or the end of the expression, found `{`"
    );
    assert!(compile_err("source.?principal == 'a'").starts_with("syntax error"));
}

// ---- what is read ----

#[test]
fn requirements_list_only_what_is_read() {
    let mut req = Requirements::default();
    compile("destination.port == 8443 && source.principal.endsWith('/sa/admin')")
        .add_requirements(&mut req);
    assert_eq!(
        req,
        Requirements {
            destination_port: true,
            principal: true,
            ..Requirements::default()
        }
    );

    let mut req = Requirements::default();
    compile(r#"request.headers["X-Tenant"] == source.namespace && has(request.headers.x_debug) && "x-b3" in request.headers && ip_in_cidr(source.remote_address, "10.0.0.0/8") && connection.mtls && connection.requested_server_name == "a" && destination.address == "::1""#)
        .add_requirements(&mut req);
    assert_eq!(req.headers, vec!["x-tenant", "x_debug", "x-b3"]);
    assert!(!req.all_headers);
    assert!(req.principal && req.remote_ip && req.mtls && req.sni && req.destination_ip);
    assert!(!req.source_ip && !req.path && !req.jwt);

    let mut req = Requirements::default();
    compile("request.auth.claims.groups.exists(g, g == 'admins') && request.method == 'GET' && request.url_path.startsWith('/api') && request.host == 'a'")
        .add_requirements(&mut req);
    assert!(req.jwt && req.method && req.path && req.host);
    assert!(req.headers.is_empty() && !req.all_headers);
}

#[test]
fn non_constant_header_access_needs_all_headers() {
    for src in [
        "request.headers[source.namespace] == 'x'",
        "size(request.headers) > 3",
        "request.headers.exists(h, h.startsWith('x-'))",
        "source.namespace in request.headers",
    ] {
        let mut req = Requirements::default();
        compile(src).add_requirements(&mut req);
        assert!(req.all_headers, "{src}");
        assert!(req.headers.is_empty(), "{src}");
    }
}

#[test]
fn http_only_iff_request_attributes_are_read() {
    assert!(!compile("destination.port == 8443 && connection.mtls").is_http_only());
    assert!(!compile("has(source.principal)").is_http_only());
    assert!(compile("destination.port == 8443 || request.method == 'GET'").is_http_only());
    assert!(compile("has(request.auth.claims.sub)").is_http_only());
    assert!(compile("'x-a' in request.headers").is_http_only());
    // A macro variable named like an attribute root is not an attribute.
    let e = compile("[1, 2].exists(request, request == 2)");
    assert!(!e.is_http_only());
    assert_eq!(e.evaluate(&plaintext_conn()), Ok(true));
}

// ---- evaluation ----

/// A backquoted field name (CEL's escaped identifier) reads a header with a `-` in its name as
/// `request.headers["x-tenant"]` does, fetching that header alone; a leading dot is the root
/// namespace.
#[test]
fn backquoted_fields_and_a_leading_dot_name_attributes() {
    let headers = [("x-tenant", "acme")];
    let attrs = with_http(
        mtls_conn(ADMIN),
        HttpAttributes {
            headers: &headers,
            ..Default::default()
        },
    );
    for src in [
        "request.headers.`x-tenant` == 'acme'",
        "has(request.headers.`x-tenant`)",
        ".request.headers.`x-tenant` == 'acme'",
    ] {
        let expr = compile(src);
        assert_eq!(expr.evaluate(&attrs), Ok(true), "{src}");
        let mut req = Requirements::default();
        expr.add_requirements(&mut req);
        assert_eq!(req.headers, vec!["x-tenant"], "{src}");
        assert!(!req.all_headers, "{src}");
    }
    assert_eq!(eval("has(request.headers.`x-other`)", &attrs), Ok(false));
    // Not a method name, and not every character.
    assert!(compile_err("request.path.`startsWith`('/')").starts_with("syntax error"));
    assert!(compile_err("request.headers.`x:y`").contains("backquoted field name"));
}

#[test]
fn tenant_header_must_equal_caller_namespace() {
    let expr = compile(r#"request.headers["x-tenant"] == source.namespace"#);
    let headers = [("x-tenant", "tenant-a")];
    let ok = with_http(
        mtls_conn(ADMIN),
        HttpAttributes {
            headers: &headers,
            ..Default::default()
        },
    );
    assert_eq!(expr.evaluate(&ok), Ok(true));

    let other = [("x-tenant", "tenant-b")];
    let wrong = with_http(
        mtls_conn(ADMIN),
        HttpAttributes {
            headers: &other,
            ..Default::default()
        },
    );
    assert_eq!(expr.evaluate(&wrong), Ok(false));

    // No header: an error (CEL's "no such key"), not a silent false or null.
    let none = with_http(mtls_conn(ADMIN), HttpAttributes::default());
    let err = expr.evaluate(&none).unwrap_err();
    assert!(
        err.0
            .contains(r#"attribute `request.headers["x-tenant"]` is absent"#),
        "{err}"
    );

    // Plaintext: no principal, so no namespace.
    let plain = with_http(
        plaintext_conn(),
        HttpAttributes {
            headers: &headers,
            ..Default::default()
        },
    );
    let err = expr.evaluate(&plain).unwrap_err();
    assert!(
        err.0.contains("attribute `source.namespace` is absent"),
        "{err}"
    );
}

#[test]
fn header_names_are_case_insensitive() {
    let headers = [("x-tenant", "a")];
    let attrs = with_http(
        mtls_conn(ADMIN),
        HttpAttributes {
            headers: &headers,
            ..Default::default()
        },
    );
    assert_eq!(
        eval(r#"request.headers["X-Tenant"] == "a""#, &attrs),
        Ok(true)
    );
    assert_eq!(eval(r#""X-TENANT" in request.headers"#, &attrs), Ok(true));
    assert_eq!(eval(r#"has(request.headers.x_other)"#, &attrs), Ok(false));
    assert_eq!(
        eval(r#"request.headers.exists(h, h == "x-tenant")"#, &attrs),
        Ok(true)
    );
    assert_eq!(
        eval(
            r#"request.headers[source.namespace.startsWith("t") ? "x-tenant" : "y"] == "a""#,
            &attrs
        ),
        Ok(true)
    );
}

#[test]
fn admin_on_8443_from_a_cidr() {
    let expr = compile(
        r#"destination.port == 8443 && source.principal.endsWith("/sa/admin") && ip_in_cidr(source.address, "10.0.0.0/8")"#,
    );
    assert_eq!(expr.evaluate(&mtls_conn(ADMIN)), Ok(true));
    assert_eq!(
        expr.evaluate(&mtls_conn("spiffe://cluster.local/ns/tenant-a/sa/web")),
        Ok(false)
    );
    let other_port = Attributes {
        destination_port: Some(443),
        ..mtls_conn(ADMIN)
    };
    assert_eq!(expr.evaluate(&other_port), Ok(false));
    let outside = Attributes {
        source_ip: ip("172.16.0.1"),
        ..mtls_conn(ADMIN)
    };
    assert_eq!(expr.evaluate(&outside), Ok(false));
    // Plaintext on 8443: reading the principal fails.
    assert!(expr.evaluate(&plaintext_conn()).is_err());
    // Guarded with has(): false, no error.
    let guarded = compile(
        r#"destination.port == 8443 && has(source.principal) && source.principal.endsWith("/sa/admin")"#,
    );
    assert_eq!(guarded.evaluate(&plaintext_conn()), Ok(false));
    assert_eq!(guarded.evaluate(&mtls_conn(ADMIN)), Ok(true));
}

#[test]
fn ip_in_cidr_forms() {
    let conn = mtls_conn(ADMIN);
    assert_eq!(
        eval("ip_in_cidr(source.address, '10.1.2.3')", &conn),
        Ok(true)
    );
    assert_eq!(
        eval("ip_in_cidr(source.remote_address, '192.0.2.0/24')", &conn),
        Ok(true)
    );
    assert_eq!(
        eval("ip_in_cidr(source.address, 'fd00::/8')", &conn),
        Ok(false)
    );
    // The CIDR from an expression is parsed at run time.
    assert_eq!(
        eval("ip_in_cidr(source.address, '10.0.0.' + '0/8')", &conn),
        Ok(true)
    );
    assert!(eval("ip_in_cidr(source.address, 'nope' + '')", &conn).is_err());
    assert!(eval("ip_in_cidr(source.principal, '10.0.0.0/8')", &conn).is_err());
    let mapped = Attributes {
        source_ip: ip("::ffff:10.1.2.3"),
        ..mtls_conn(ADMIN)
    };
    assert_eq!(
        eval("ip_in_cidr(source.address, '10.0.0.0/8')", &mapped),
        Ok(true)
    );
}

#[test]
fn source_identity_parts() {
    let conn = mtls_conn(ADMIN);
    assert_eq!(
        eval(
            "source.trust_domain == 'cluster.local' && source.namespace == 'tenant-a' && source.service_account == 'admin' && source.principal == 'spiffe://cluster.local/ns/tenant-a/sa/admin'",
            &conn
        ),
        Ok(true)
    );
    // A principal that is not a SPIFFE workload identity has no namespace.
    let dns = mtls_conn("client.example.com");
    assert_eq!(
        eval("has(source.principal) && !has(source.namespace)", &dns),
        Ok(true)
    );
    assert!(eval("source.namespace == 'x'", &dns).is_err());
}

#[test]
fn plaintext_has_no_principal() {
    let plain = plaintext_conn();
    assert_eq!(eval("has(source.principal)", &plain), Ok(false));
    assert_eq!(eval("connection.mtls", &plain), Ok(false));
    assert_eq!(
        eval("!connection.mtls && destination.port == 8443", &plain),
        Ok(true)
    );
    let err = eval("source.principal == ''", &plain).unwrap_err();
    assert!(
        err.0.contains("attribute `source.principal` is absent"),
        "{err}"
    );
}

#[test]
fn connection_and_destination_attributes() {
    let conn = mtls_conn(ADMIN);
    assert_eq!(
        eval(
            "destination.address == '10.9.9.9' && connection.requested_server_name == 'api.example.com' && source.address == '10.1.2.3'",
            &conn
        ),
        Ok(true)
    );
    let no_sni = Attributes {
        sni: None,
        ..mtls_conn(ADMIN)
    };
    assert_eq!(
        eval("has(connection.requested_server_name)", &no_sni),
        Ok(false)
    );
}

#[test]
fn request_attributes() {
    let headers = [("user-agent", "curl/8"), ("x-tenant", "a")];
    let attrs = with_http(
        mtls_conn(ADMIN),
        HttpAttributes {
            host: Some("api.example.com:8443"),
            method: Some("POST"),
            path: Some("/api/%2e%2e/admin//users?x=1"),
            headers: &headers,
            jwt: None,
        },
    );
    assert_eq!(eval("request.method == 'POST'", &attrs), Ok(true));
    // The forwarded path without query: the engine evaluates DENY/AUDIT conditions on the
    // normalized path too (`crate::path`), not the expression.
    assert_eq!(
        eval("request.path == '/api/%2e%2e/admin//users'", &attrs),
        Ok(true)
    );
    assert_eq!(
        eval("request.url_path == '/api/%2e%2e/admin//users'", &attrs),
        Ok(true)
    );
    assert_eq!(eval("request.path.matches('^/api/')", &attrs), Ok(true));
    assert_eq!(
        eval("request.host == 'api.example.com:8443'", &attrs),
        Ok(true)
    );
    assert_eq!(eval("size(request.headers) == 2", &attrs), Ok(true));
    // No JWT: no claims.
    assert_eq!(eval("has(request.auth.claims)", &attrs), Ok(false));
    assert!(eval("request.auth.claims.sub == 'x'", &attrs).is_err());
    assert!(eval("request.auth.principal == 'x'", &attrs).is_err());
}

#[test]
fn request_attributes_on_tcp_are_errors() {
    let conn = mtls_conn(ADMIN);
    assert!(eval("request.method == 'GET'", &conn).is_err());
    assert!(eval("has(request.headers)", &conn).is_err());
    assert!(eval("has(request.headers.x_a)", &conn).is_err());
}

#[test]
fn jwt_claims() {
    let jwt = json!({
        "iss": "https://idp.example.com",
        "sub": "alice",
        "groups": ["dev", "admins"],
        "tier": 3,
        "admin": "false",
        "org": {"id": "acme", "plan": "gold"},
    });
    let attrs = with_http(
        mtls_conn(ADMIN),
        HttpAttributes {
            jwt: Some(&jwt),
            ..Default::default()
        },
    );
    assert_eq!(
        eval(
            "request.auth.principal == 'https://idp.example.com/alice'",
            &attrs
        ),
        Ok(true)
    );
    assert_eq!(
        eval("'admins' in request.auth.claims.groups", &attrs),
        Ok(true)
    );
    assert_eq!(
        eval(
            "request.auth.claims.groups.exists(g, g == 'admins')",
            &attrs
        ),
        Ok(true)
    );
    assert_eq!(
        eval("request.auth.claims.groups[0] == 'dev'", &attrs),
        Ok(true)
    );
    assert!(eval("request.auth.claims.groups[5] == 'dev'", &attrs).is_err());
    assert_eq!(eval("request.auth.claims.tier >= 3", &attrs), Ok(true));
    assert_eq!(
        eval(r#"request.auth.claims["org"]["plan"] == "gold""#, &attrs),
        Ok(true)
    );
    assert_eq!(
        eval("request.auth.claims.org.id == 'acme'", &attrs),
        Ok(true)
    );
    assert_eq!(eval("has(request.auth.claims.org.id)", &attrs), Ok(true));
    assert_eq!(eval("has(request.auth.claims.email)", &attrs), Ok(false));
    assert_eq!(eval("'email' in request.auth.claims", &attrs), Ok(false));
    // has() below a claim that is missing (or not an object) is an error, as in CEL.
    assert!(eval("has(request.auth.claims.missing.id)", &attrs).is_err());
    let err = eval("request.auth.claims.email == 'a'", &attrs).unwrap_err();
    assert!(
        err.0
            .contains(r#"attribute `request.auth.claims["email"]` is absent"#),
        "{err}"
    );
    // A string claim is not a bool: an error, not "truthy".
    let err = eval("request.auth.claims.admin", &attrs).unwrap_err();
    assert!(err.0.contains("not a bool"), "{err}");
    assert!(eval("request.auth.claims.admin || false", &attrs).is_err());
    assert!(eval("!request.auth.claims.admin", &attrs).is_err());
    // A macro over a claim that is not a list or map is an error, not a crash.
    assert!(eval("request.auth.claims.sub.exists(c, c == 'a')", &attrs).is_err());
    // A non-constant key reads the whole claim map.
    assert_eq!(
        eval(
            "request.auth.claims[source.service_account == 'admin' ? 'sub' : 'iss'] == 'alice'",
            &attrs
        ),
        Ok(true)
    );
}

#[test]
fn missing_map_key_and_bad_index_are_errors() {
    let conn = mtls_conn(ADMIN);
    assert!(eval("{'a': true}['b']", &conn).is_err());
    assert_eq!(eval("{'a': true}['a']", &conn), Ok(true));
    assert!(eval("[true][1]", &conn).is_err());
    assert!(eval("[true][-1]", &conn).is_err());
}

#[test]
fn standard_functions_and_macros() {
    let conn = mtls_conn(ADMIN);
    for src in [
        "source.principal.startsWith('spiffe://') && source.principal.contains('/ns/')",
        "size(source.service_account) == 5 && source.service_account.size() == 5",
        "[8443, 9443].exists(p, p == destination.port)",
        "[1, 2, 3].all(x, x > 0) && [1, 2, 3].exists_one(x, x == 2)",
        "[1, 2, 3].map(x, x * 2) == [2, 4, 6] && [1, 2, 3].filter(x, x > 1) == [2, 3]",
        "destination.port in [8443, 9443]",
        "string(destination.port) == '8443' && int('8443') == destination.port",
        "max(1, 5, 3) == 5 && min([4, 2]) == 2",
        "source.namespace.matches('^tenant-[a-z]$')",
        "destination.port > 8000 ? true : false",
    ] {
        assert_eq!(eval(src, &conn), Ok(true), "{src}");
    }
}

#[test]
fn runtime_errors_are_errors() {
    let conn = mtls_conn(ADMIN);
    assert!(eval("destination.port / 0 == 1", &conn).is_err());
    // A computed pattern is refused when the policy loads (issue 8: it is compiled at each
    // request, at a cost the caller chooses).
    assert!(compile_err("source.namespace.matches('(' + '')").contains("constant"));
    assert!(eval("int(source.namespace) == 1", &conn).is_err());
    let jwt = json!({"min": i64::MIN, "n": 5, "f": 1.5});
    let attrs = with_http(
        mtls_conn(ADMIN),
        HttpAttributes {
            jwt: Some(&jwt),
            ..Default::default()
        },
    );
    assert!(eval("-request.auth.claims.min < 0", &attrs).is_err());
    assert_eq!(eval("-request.auth.claims.n == -5", &attrs), Ok(true));
    assert_eq!(eval("-request.auth.claims.f == -1.5", &attrs), Ok(true));
    assert_eq!(eval("-destination.port == -8443", &attrs), Ok(true));
    assert!(eval("-request.auth.claims.g == 1", &attrs).is_err());
}

#[test]
fn compiled_expression_is_shareable_and_reusable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CelExpression>();
    let expr = compile("source.namespace == 'tenant-a'");
    assert_eq!(expr.source(), "source.namespace == 'tenant-a'");
    for _ in 0..3 {
        assert_eq!(expr.evaluate(&mtls_conn(ADMIN)), Ok(true));
        assert!(expr.evaluate(&plaintext_conn()).is_err());
    }
}

/// Random expressions over the vocabulary: whatever compiles must evaluate without panicking (a
/// panic traps the Wasm VM), to a bool or an error.
#[test]
fn compiled_expressions_never_panic() {
    const PIECES: &[&str] = &[
        "source.principal",
        "source.namespace",
        "destination.port",
        "connection.mtls",
        "request.headers",
        "request.headers['x-a']",
        "request.auth.claims",
        "request.auth.claims.g",
        "request.path",
        "has(source.principal)",
        "x",
        "1",
        "-1",
        "0u",
        "2.5",
        "'s'",
        "b'y'",
        "true",
        "null",
        "[1, 'a']",
        "{'k': 1}",
        "(",
        ")",
        "[",
        "]",
        ",",
        "+",
        "-",
        "*",
        "/",
        "%",
        "!",
        "==",
        "<",
        "&&",
        "||",
        " in ",
        " ? ",
        " : ",
        "size(",
        "int(",
        "string(",
        "max(",
        ".size()",
        ".exists(x, ",
        ".all(x, ",
        ".map(x, ",
        ".filter(x, ",
        ".exists_one(x, ",
        ".startsWith(",
        ".matches(",
        "ip_in_cidr(",
        "[0]",
        "['k']",
        ".k",
    ];
    let jwt = json!({"g": ["a", 1, {"k": true}], "n": 3, "s": "str", "o": {"k": [1]}});
    let headers = [("x-a", "1"), ("x-b", "two")];
    let attrs = with_http(
        mtls_conn(ADMIN),
        HttpAttributes {
            host: Some("h"),
            method: Some("GET"),
            path: Some("/p"),
            headers: &headers,
            jwt: Some(&jwt),
        },
    );
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut compiled, mut evaluated_ok) = (0, 0);
    for _ in 0..30_000 {
        let len = 1 + (next() % 7) as usize;
        let src: String = (0..len)
            .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
            .collect();
        let Ok(expr) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            CelExpression::compile(&src)
        })) else {
            panic!("compile panicked on {src:?}");
        };
        let Ok(expr) = expr else { continue };
        compiled += 1;
        for a in [&attrs, &plaintext_conn()] {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| expr.evaluate(a))) {
                Ok(Ok(_)) => evaluated_ok += 1,
                Ok(Err(_)) => {}
                Err(_) => panic!("evaluation panicked on {src:?}"),
            }
        }
    }
    assert!(
        compiled > 200 && evaluated_ok > 100,
        "{compiled} compiled, {evaluated_ok} evaluated"
    );
}

#[test]
fn ip_in_cidr_on_an_address_attribute_reads_only_that_address() {
    let expr = compile("ip_in_cidr(source.address, '10.0.0.0/8') && !destination.address.ip_in_cidr('10.9.0.0/16')");
    let mut req = Requirements::default();
    expr.add_requirements(&mut req);
    assert_eq!(
        req,
        Requirements {
            source_ip: true,
            destination_ip: true,
            ..Requirements::default()
        }
    );
    assert!(!expr.is_http_only());
    assert_eq!(expr.evaluate(&mtls_conn(ADMIN)), Ok(false));
    let elsewhere = Attributes {
        destination_ip: ip("10.8.0.1"),
        ..mtls_conn(ADMIN)
    };
    assert_eq!(expr.evaluate(&elsewhere), Ok(true));
    let no_source = Attributes {
        source_ip: None,
        ..mtls_conn(ADMIN)
    };
    let err = expr.evaluate(&no_source).unwrap_err();
    assert!(
        err.0.contains("attribute `source.address` is absent"),
        "{err}"
    );
    assert!(compile_err("ip_in_cidr(source.address, '300.0.0.0/8')").contains("is not a CIDR"));
}

#[test]
fn a_map_literal_with_a_repeated_constant_key_is_refused() {
    assert_eq!(
        compile_err("{'a': 1, 'b': 2, 'a': 3}['a'] == 3"),
        "map literal with a repeated key `\"a\"`"
    );
    assert!(compile_err("{true: 1, false: 2, true: 3}[true] == 3").contains("`true`"));
    // Different constants, and computed keys, are not compared at load.
    assert!(CelExpression::compile("{1: 'a', 1u: 'b', 'x': 'c'}[1] == 'a'").is_ok());
}
