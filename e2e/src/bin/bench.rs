//! `make bench-envoy`: what the meshauthz filter chain costs in a real Envoy, against baselines
//! measured in the same run (see BENCHMARKS.md, "Envoy throughput").
//!
//! Every variant is one server Envoy (`--concurrency 1`) rendered from
//! `envoy-config/envoy/server-http.yaml` with one documented transformation ([`shape`]): the route
//! answers with a direct response 200 (no upstream, so only the filter chain is measured), the
//! access log is dropped, and the filter chains keep only the filters of the variant. All Envoys
//! start first; then `oha` (HTTP/1.1 keep-alive over mTLS with a client certificate, loopback
//! only, bounded by time) loads them one after the other, round after round (a b c a b c ...).
//! Per run: requests per second (oha), requests Envoy completed (`/stats`) and Envoy's CPU time
//! (`/proc/<pid>/stat` utime+stime of all its threads) before and after.
//!
//! Usage: `bench --oha PATH --cli PATH [--rounds 7] [--seconds 2] [--connections 4]
//! [--max-policies 10000] [--no-breakdown] [--only KEY,KEY] [--out FILE] [--baseline-module FILE]`;
//! the baseline (a) always runs. `--baseline-module` adds `c-10-base` / `d-10-base`: the full
//! chain with another build of the module (e.g. the previous commit's), for A/B in one run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshauthz_e2e::certs::{CertFiles, Pki};
use meshauthz_e2e::envoy::{free_port, render, template, Envoy};
use meshauthz_e2e::sidecar::{plugin_config_placeholder, HTTP_TEMPLATE};
use meshauthz_e2e::{module_path, Error, Result, WorkDir};
use serde_json::{json, Value};

/// The path every request asks for (matched by every policy's `to.operation`).
const REQUEST_PATH: &str = "/api/v1/items";

struct Opts {
    oha: PathBuf,
    cli: PathBuf,
    rounds: usize,
    seconds: u64,
    connections: u32,
    max_policies: usize,
    breakdown: bool,
    only: Vec<String>,
    out: Option<PathBuf>,
    baseline_module: Option<PathBuf>,
}

fn parse_opts() -> Result<Opts> {
    let mut o = Opts {
        oha: PathBuf::new(),
        cli: PathBuf::new(),
        rounds: 7,
        seconds: 2,
        connections: 4,
        max_policies: 10_000,
        breakdown: true,
        only: Vec::new(),
        out: None,
        baseline_module: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| Error(format!("{a} needs a value")))
        };
        match a.as_str() {
            "--oha" => o.oha = PathBuf::from(value()?),
            "--cli" => o.cli = PathBuf::from(value()?),
            "--rounds" => o.rounds = number(&a, &value()?)?,
            "--seconds" => o.seconds = number(&a, &value()?)?,
            "--connections" => o.connections = number(&a, &value()?)?,
            "--max-policies" => o.max_policies = number(&a, &value()?)?,
            "--no-breakdown" => o.breakdown = false,
            "--out" => o.out = Some(PathBuf::from(value()?)),
            "--only" => o.only = value()?.split(',').map(str::to_string).collect(),
            "--baseline-module" => o.baseline_module = Some(PathBuf::from(value()?)),
            other => return Err(Error(format!("unknown argument {other:?}"))),
        }
    }
    for (flag, path) in [("--oha", &o.oha), ("--cli", &o.cli)] {
        if !path.is_file() {
            return Err(Error(format!(
                "{flag}: {} is not a file (run `make bench-envoy`, which installs oha and builds the CLI)",
                path.display()
            )));
        }
    }
    if let Some(path) = o.baseline_module.as_ref().filter(|p| !p.is_file()) {
        return Err(Error(format!(
            "--baseline-module: {} is not a file",
            path.display()
        )));
    }
    if o.rounds == 0 || o.seconds == 0 || o.connections == 0 {
        return Err(Error(
            "--rounds, --seconds and --connections must be positive".into(),
        ));
    }
    Ok(o)
}

fn number<T: std::str::FromStr>(flag: &str, s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| Error(format!("{flag}: {s:?} is not a number")))
}

/// Which filters a variant's listener runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chain {
    /// HTTP connection manager with the router only.
    NoFilter,
    /// Envoy's RBAC filter with the N policies as istiod writes them, then the router.
    Rbac,
    /// The meshauthz stages kept from the template: the network filter, the HTTP decide stage,
    /// the RBAC LOG companion, the HTTP enforce stage.
    Meshauthz {
        net: bool,
        decide: bool,
        log: bool,
        enforce: bool,
    },
    /// `filters` copies of the no-op proxy-wasm filter (`bench/noop-filter`, one VM), each making
    /// `calls` host calls of kind `call` (see the module) per request: the floor of any proxy-wasm
    /// filter in this Envoy, and what a host call costs. With
    /// `stripped`, the module as `meshauthz-strip-exports` leaves it (as `make build` leaves
    /// meshauthz's), else with every callback the SDK exports.
    Noop {
        filters: usize,
        calls: u32,
        call: &'static str,
        stripped: bool,
    },
}

const FULL: Chain = Chain::Meshauthz {
    net: true,
    decide: true,
    log: true,
    enforce: true,
};

struct Variant {
    key: String,
    what: String,
    chain: Chain,
    policies: usize,
    audit: bool,
    /// Another build of the meshauthz module (`--baseline-module`); `None`: the current one.
    module: Option<PathBuf>,
}

fn variants(o: &Opts) -> Vec<Variant> {
    let v = |key: &str, what: &str, chain, policies, audit| Variant {
        key: key.to_string(),
        what: what.to_string(),
        chain,
        policies,
        audit,
        module: None,
    };
    let mut out = vec![
        v("a", "no authz filter", Chain::NoFilter, 0, false),
        v("b-10", "Envoy RBAC (istiod style)", Chain::Rbac, 10, false),
        v(
            "b-1000",
            "Envoy RBAC (istiod style)",
            Chain::Rbac,
            1000,
            false,
        ),
        v("c-10", "meshauthz, full chain", FULL, 10, false),
        v("c-1000", "meshauthz, full chain", FULL, 1000, false),
    ];
    out.push(v("c-10000", "meshauthz, full chain", FULL, 10_000, false));
    out.push(v(
        "d-10",
        "meshauthz, full chain, + AUDIT policy (migration)",
        FULL,
        10,
        true,
    ));
    if let Some(base) = &o.baseline_module {
        for (key, what, audit) in [
            ("c-10-base", "c-10 with --baseline-module", false),
            ("d-10-base", "d-10 with --baseline-module", true),
        ] {
            let mut b = v(key, what, FULL, 10, audit);
            b.module = Some(base.clone());
            out.push(b);
        }
    }
    if o.breakdown {
        let m = |net, decide, log, enforce| Chain::Meshauthz {
            net,
            decide,
            log,
            enforce,
        };
        for (key, what, chain) in [
            (
                "m-net",
                "meshauthz_net only (network filter)",
                m(true, false, false, false),
            ),
            (
                "m-decide",
                "meshauthz_http (decide) only",
                m(false, true, false, false),
            ),
            ("m-enforce", "decide + enforce", m(false, true, false, true)),
            (
                "m-log",
                "decide + RBAC LOG + enforce",
                m(false, true, true, true),
            ),
            (
                "m-rbaclog",
                "RBAC LOG companion only",
                m(false, false, true, false),
            ),
        ] {
            out.push(v(key, what, chain, 10, false));
        }
        out.push(v(
            "m-decide0",
            "meshauthz_http (decide) only, no policy",
            m(false, true, false, false),
            0,
            false,
        ));
        let noop = |filters, calls, call, stripped| Chain::Noop {
            filters,
            calls,
            call,
            stripped,
        };
        for (key, what, chain) in [
            (
                "w-noop-sdk",
                "1 no-op proxy-wasm filter, all SDK exports",
                noop(1, 0, "get", false),
            ),
            (
                "w-noop",
                "1 no-op proxy-wasm filter, stripped exports",
                noop(1, 0, "get", true),
            ),
            (
                "w-noop2",
                "2 no-op filters (one VM), stripped",
                noop(2, 0, "get", true),
            ),
            (
                "w-get8",
                "w-noop + 8 get_property(connection.mtls)",
                noop(1, 8, "get", true),
            ),
            (
                "w-header8",
                "w-noop + 8 get_http_request_header(:path)",
                noop(1, 8, "header", true),
            ),
            (
                "w-headers8",
                "w-noop + 8 get_http_request_headers (all)",
                noop(1, 8, "headers", true),
            ),
            (
                "w-set8",
                "w-noop + 8 set_property (filter state)",
                noop(1, 8, "set", true),
            ),
            (
                "w-count8",
                "w-noop + 8 increment_metric",
                noop(1, 8, "count", true),
            ),
        ] {
            out.push(v(key, what, chain, 0, false));
        }
    }
    out.retain(|v| v.policies <= o.max_policies);
    if !o.only.is_empty() {
        out.retain(|v| v.chain == Chain::NoFilter || o.only.contains(&v.key));
    }
    out
}

fn principal(i: usize) -> (String, String) {
    (format!("ns{i:05}"), format!("sa{i:05}"))
}

/// N ALLOW policies for workload `foo/app=echo`, policy i allowing
/// `cluster.local/ns/nsI/sa/saI` (and namespace nsI) to `GET|POST /api/*`; with `audit`, the
/// migration's AUDIT policy too (`notNamespaces: [istioinaction]` on `GET /*`, so it audits the
/// benchmark's requests).
fn istio_policies(n: usize, audit: bool) -> String {
    let mut y = String::new();
    for i in 0..n {
        let (ns, sa) = principal(i);
        let _ = write!(
            y,
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-{i:05}, namespace: foo}}\n\
             spec:\n  selector: {{matchLabels: {{app: echo}}}}\n  action: ALLOW\n  rules:\n\
             \x20 - from:\n    - source: {{principals: [\"cluster.local/ns/{ns}/sa/{sa}\"], namespaces: [\"{ns}\"]}}\n\
             \x20   to:\n    - operation: {{methods: [GET, POST], paths: [\"/api/*\"]}}\n"
        );
    }
    if audit {
        y.push_str(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: audit-outside-mesh, namespace: foo}\n\
             spec:\n  selector: {matchLabels: {app: echo}}\n  action: AUDIT\n  rules:\n\
             \x20 - from:\n    - source: {notNamespaces: [istioinaction]}\n\
             \x20   to:\n    - operation: {methods: [GET], paths: [\"/*\"]}\n",
        );
    }
    y
}

/// Envoy's RBAC filter for [`istio_policies`] as istiod writes it (see the goldens in
/// `pilot/pkg/security/authz/builder/testdata/http/`): one policy per rule, named
/// `ns[foo]-policy[<name>]-rule[0]`, principals `and_ids` of the exact SPIFFE principal and the
/// namespace regex, permissions `and_rules` of the methods and the path prefix. Envoy keeps the
/// policies in name order: the zero-padded names make the benchmark's principal the last one.
fn rbac_filter(n: usize) -> Value {
    let mut policies = serde_json::Map::new();
    for i in 0..n {
        let (ns, sa) = principal(i);
        policies.insert(
            format!("ns[foo]-policy[allow-{i:05}]-rule[0]"),
            json!({
                "permissions": [{"and_rules": {"rules": [
                    {"or_rules": {"rules": [
                        {"header": {"name": ":method", "string_match": {"exact": "GET"}}},
                        {"header": {"name": ":method", "string_match": {"exact": "POST"}}},
                    ]}},
                    {"or_rules": {"rules": [
                        {"url_path": {"path": {"prefix": "/api/"}}},
                    ]}},
                ]}}],
                "principals": [{"and_ids": {"ids": [
                    {"or_ids": {"ids": [
                        {"authenticated": {"principal_name": {"exact": format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")}}},
                    ]}},
                    {"or_ids": {"ids": [
                        {"authenticated": {"principal_name": {"safe_regex": {"regex": format!(".*/ns/{ns}/.*")}}}},
                    ]}},
                ]}}],
            }),
        );
    }
    json!({
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": policies},
        },
    })
}

/// The no-op filter (see [`Chain::Noop`]).
fn noop_filter(module: &Path, work: &str) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "noop",
                "root_id": "noop",
                "vm_config": {
                    "vm_id": "noop",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": module.display().to_string()}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": work,
                },
            },
        },
    })
}

fn at<'a>(v: &'a mut Value, pointer: &str) -> Result<&'a mut Value> {
    v.pointer_mut(pointer)
        .ok_or_else(|| Error(format!("the server template has no {pointer}")))
}

fn list<'a>(v: &'a mut Value, pointer: &str) -> Result<&'a mut Vec<Value>> {
    at(v, pointer)?
        .as_array_mut()
        .ok_or_else(|| Error(format!("{pointer} in the server template is not a list")))
}

fn root_id(f: &Value) -> Option<&str> {
    f.pointer("/typed_config/config/root_id")?.as_str()
}

fn name(f: &Value) -> &str {
    f.get("name").and_then(Value::as_str).unwrap_or("")
}

/// The bench transformation of the rendered server template: direct response 200 instead of
/// the route to the app, no access log, and per filter chain only the filters of `chain`.
fn shape(config: &str, chain: Chain, policies: usize, noop_module: &Path) -> Result<String> {
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(config)?;
    let mut v: Value = serde_json::to_value(yaml)?;
    let rbac = (chain == Chain::Rbac).then(|| rbac_filter(policies));
    for fc in list(&mut v, "/static_resources/listeners/0/filter_chains")? {
        let filters = list(fc, "/filters")?;
        let keep_net = matches!(chain, Chain::Meshauthz { net: true, .. });
        filters.retain(|f| keep_net || name(f) != "envoy.filters.network.wasm");
        let hcm = filters
            .iter_mut()
            .find(|f| name(f) == "envoy.filters.network.http_connection_manager")
            .ok_or_else(|| Error("the server template has no HTTP connection manager".into()))?;
        let tc = at(hcm, "/typed_config")?;
        if let Some(o) = tc.as_object_mut() {
            o.remove("access_log");
        }
        *at(tc, "/route_config/virtual_hosts/0/routes")? = json!([{
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
        }]);
        let http = list(tc, "/http_filters")?;
        http.retain(|f| match chain {
            Chain::NoFilter | Chain::Rbac | Chain::Noop { .. } => {
                name(f) == "envoy.filters.http.router"
            }
            Chain::Meshauthz {
                decide,
                log,
                enforce,
                ..
            } => match (name(f), root_id(f)) {
                ("envoy.filters.http.rbac", _) => log,
                (_, Some("meshauthz_http")) => decide,
                (_, Some("meshauthz_http_enforce")) => enforce,
                _ => true,
            },
        });
        if let Some(r) = &rbac {
            http.insert(0, r.clone());
        }
        if let Chain::Noop {
            filters,
            calls,
            call,
            ..
        } = chain
        {
            for _ in 0..filters {
                http.insert(0, noop_filter(noop_module, &format!("{calls} {call}")));
            }
        }
    }
    Ok(serde_json::to_string_pretty(&v)?)
}

/// The plugin configuration from the Istio YAML, through the CLI (`meshauthz plugin-config`).
fn cli_plugin_config(cli: &Path, file: &Path, http_port: u16) -> Result<Value> {
    let out = Command::new(cli)
        .args(["plugin-config", "--namespace", "foo", "--label", "app=echo"])
        .args(["--http-port", &http_port.to_string()])
        .arg(file)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(Error(format!(
            "meshauthz plugin-config {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

struct Server {
    variant: Variant,
    envoy: Envoy,
    port: u16,
    client: CertFiles,
    outsider: CertFiles,
    samples: Vec<Sample>,
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    rps: f64,
    cpu_us_per_request: f64,
}

fn start(v: Variant, dir: &Path, pki: &Pki, o: &Opts) -> Result<Server> {
    let tmpl = template(HTTP_TEMPLATE)?;
    let built = module_path()?;
    let noop = built.with_file_name(match v.chain {
        Chain::Noop { stripped: true, .. } => "bench_noop_stripped.wasm",
        _ => "bench_noop.wasm",
    });
    let module = v.module.clone().unwrap_or(built);
    let policy_file = dir.join(format!("{}-policies.yaml", v.key));
    std::fs::write(&policy_file, istio_policies(v.policies, v.audit))?;
    let mut port = 0;
    let envoy = Envoy::start_with_retry(dir, &v.key, || {
        let admin = free_port()?;
        port = free_port()?;
        let plugin = match v.chain {
            Chain::Meshauthz { .. } => cli_plugin_config(&o.cli, &policy_file, port)?,
            _ => json!({}),
        };
        let vars = BTreeMap::from([
            ("ADMIN_PORT", admin.to_string()),
            ("INBOUND_PORT", port.to_string()),
            // No upstream is ever contacted (direct response); the template's cluster needs a port.
            ("APP_PORT", free_port()?.to_string()),
            ("CERT_DIR", pki.dir().display().to_string()),
            ("MODULE", module.display().to_string()),
            ("PLUGIN_CONFIG_JSON", plugin_config_placeholder(&plugin)?),
            ("ACCESS_LOG", "/dev/null".to_string()),
        ]);
        let config = render(&tmpl, &vars)?;
        Ok((shape(&config, v.chain, v.policies, &noop)?, admin))
    })?;
    let (ns, sa) = principal(v.policies.saturating_sub(1));
    Ok(Server {
        client: pki.client(&ns, &sa)?,
        outsider: pki.client("outsider", "nobody")?,
        envoy,
        port,
        variant: v,
        samples: Vec::new(),
    })
}

/// What one oha run reported.
struct Load {
    rps: f64,
    statuses: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

/// One bounded oha run against `port` with `client`'s certificate: `-z seconds` (and `-n` when
/// `requests` is given), killed if it overruns by 20 s.
fn oha(o: &Opts, pki: &Pki, port: u16, client: &CertFiles, load: OhaLoad) -> Result<Load> {
    let mut cmd = Command::new(&o.oha);
    cmd.args([
        "--no-tui",
        "--output-format",
        "json",
        "--http-version",
        "1.1",
    ])
    .arg("--cacert")
    .arg(&pki.ca_cert)
    .arg("--cert")
    .arg(&client.cert)
    .arg("--key")
    .arg(&client.key);
    let limit = match load {
        OhaLoad::Requests(n) => {
            cmd.args(["-n", &n.to_string(), "-c", "1"]);
            Duration::from_secs(20)
        }
        OhaLoad::Seconds(s) => {
            cmd.args(["-z", &format!("{s}s"), "-c", &o.connections.to_string()]);
            Duration::from_secs(s + 20)
        }
    };
    cmd.arg(format!("https://127.0.0.1:{port}{REQUEST_PATH}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error(format!("oha overran {limit:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(Error(format!(
            "oha failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let counts = |key: &str| -> BTreeMap<String, u64> {
        v.get(key)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Load {
        rps: v
            .pointer("/summary/requestsPerSec")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        statuses: counts("statusCodeDistribution"),
        errors: counts("errorDistribution"),
    })
}

#[derive(Clone, Copy)]
enum OhaLoad {
    Requests(u64),
    Seconds(u64),
}

/// utime + stime of every thread of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| Error(format!("unexpected /proc/{pid}/stat: {stat}")))?;
    // Fields 14 and 15 (utime, stime); after the comm field, field 3 (state) is the first.
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| Error(format!("unexpected /proc/{pid}/stat: {stat}")))
    };
    Ok(tick(11)? + tick(12)?)
}

fn clock_ticks_per_second() -> Result<u64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    number(
        "getconf CLK_TCK",
        String::from_utf8_lossy(&out.stdout).trim(),
    )
}

const COMPLETED: &str = "http.inbound_http.downstream_rq_completed";
const OK_2XX: &str = "http.inbound_http.downstream_rq_2xx";

/// Checks a server answers the benchmark's client 200 and a principal no policy names 403
/// (so the policies really are evaluated), then warms it up.
fn check_and_warm(o: &Opts, pki: &Pki, s: &Server) -> Result<()> {
    let ok = oha(o, pki, s.port, &s.client, OhaLoad::Requests(20))?;
    if ok.statuses.keys().ne(["200"].iter()) || !ok.errors.is_empty() {
        return Err(Error(format!(
            "{}: the benchmark request got {:?} (errors {:?}), want only 200; Envoy log:\n{}",
            s.variant.key,
            ok.statuses,
            ok.errors,
            s.envoy.log()
        )));
    }
    let authorizes = s.variant.policies > 0
        && matches!(
            s.variant.chain,
            Chain::Rbac | Chain::Meshauthz { decide: true, .. }
        );
    if authorizes {
        let out = oha(o, pki, s.port, &s.outsider, OhaLoad::Requests(2))?;
        if out.statuses.keys().ne(["403"].iter()) {
            return Err(Error(format!(
                "{}: a principal no policy names got {:?}, want 403",
                s.variant.key, out.statuses
            )));
        }
    }
    oha(o, pki, s.port, &s.client, OhaLoad::Seconds(1))?;
    Ok(())
}

fn measure(o: &Opts, pki: &Pki, s: &Server, tck: u64) -> Result<Sample> {
    let pid = s.envoy.pid();
    let (c0, ok0) = (
        s.envoy.stat_or_zero(COMPLETED)?,
        s.envoy.stat_or_zero(OK_2XX)?,
    );
    let t0 = cpu_ticks(pid)?;
    let load = oha(o, pki, s.port, &s.client, OhaLoad::Seconds(o.seconds))?;
    let t1 = cpu_ticks(pid)?;
    let (c1, ok1) = (
        s.envoy.stat_or_zero(COMPLETED)?,
        s.envoy.stat_or_zero(OK_2XX)?,
    );
    let requests = c1.saturating_sub(c0);
    if requests == 0 || ok1.saturating_sub(ok0) != requests {
        return Err(Error(format!(
            "{}: {requests} requests completed, {} with 2xx (oha: {:?}, errors {:?})",
            s.variant.key,
            ok1.saturating_sub(ok0),
            load.statuses,
            load.errors
        )));
    }
    let cpu_us = t1.saturating_sub(t0) as f64 * 1e6 / tck as f64;
    Ok(Sample {
        rps: load.rps,
        cpu_us_per_request: cpu_us / requests as f64,
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => xs.get(n / 2).copied().unwrap_or(f64::NAN),
        _ => {
            let a = xs.get(n / 2 - 1).copied().unwrap_or(f64::NAN);
            let b = xs.get(n / 2).copied().unwrap_or(f64::NAN);
            (a + b) / 2.0
        }
    }
}

fn report(o: &Opts, servers: &[Server]) -> Result<String> {
    let base = servers
        .iter()
        .find(|s| s.variant.chain == Chain::NoFilter)
        .ok_or_else(|| Error("no baseline variant".into()))?;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} rounds x {} s per variant, {} keep-alive connections, medians over rounds; ratio and added CPU are per round against (a) of the same round.\n",
        o.rounds, o.seconds, o.connections
    );
    let _ = writeln!(
        t,
        "| variant | chain | policies | req/s | ratio to (a) | ratio min-max | server CPU µs/req | added µs/req |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|");
    for s in servers {
        let pairs: Vec<(Sample, Sample)> = s
            .samples
            .iter()
            .zip(&base.samples)
            .map(|(a, b)| (*a, *b))
            .collect();
        let ratios: Vec<f64> = pairs.iter().map(|(v, b)| v.rps / b.rps).collect();
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let added: Vec<f64> = pairs
            .iter()
            .map(|(v, b)| v.cpu_us_per_request - b.cpu_us_per_request)
            .collect();
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.0} | {:.3} | {:.3}-{:.3} | {:.1} | {:+.1} |",
            s.variant.key,
            s.variant.what,
            s.variant.policies,
            median(s.samples.iter().map(|x| x.rps).collect()),
            median(ratios),
            lo,
            hi,
            median(s.samples.iter().map(|x| x.cpu_us_per_request).collect()),
            median(added),
        );
    }
    Ok(t)
}

fn run() -> Result<()> {
    let o = parse_opts()?;
    let tck = clock_ticks_per_second()?;
    let work = WorkDir::new("bench")?;
    let pki = Pki::generate(&work.path().join("certs"))?;
    let mut servers = Vec::new();
    for v in variants(&o) {
        let t = Instant::now();
        let s = start(v, work.path(), &pki, &o)?;
        check_and_warm(&o, &pki, &s)?;
        eprintln!(
            "bench: {} ready and checked in {:.1} s",
            s.variant.key,
            t.elapsed().as_secs_f64()
        );
        servers.push(s);
    }
    for round in 1..=o.rounds {
        for s in servers.iter_mut() {
            let sample = measure(&o, &pki, s, tck)?;
            eprintln!(
                "bench: round {round} {:>9}: {:>8.0} req/s, {:>7.1} µs CPU/req",
                s.variant.key, sample.rps, sample.cpu_us_per_request
            );
            s.samples.push(sample);
        }
    }
    let table = report(&o, &servers)?;
    println!("{table}");
    if let Some(path) = &o.out {
        std::fs::write(path, &table)?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;

    fn rendered() -> String {
        let vars = BTreeMap::from([
            ("ADMIN_PORT", "1".to_string()),
            ("INBOUND_PORT", "2".to_string()),
            ("APP_PORT", "3".to_string()),
            ("CERT_DIR", "/certs".to_string()),
            ("MODULE", "/m.wasm".to_string()),
            ("PLUGIN_CONFIG_JSON", "{}".to_string()),
            ("ACCESS_LOG", "/dev/null".to_string()),
        ]);
        render(&template(HTTP_TEMPLATE).unwrap(), &vars).unwrap()
    }

    /// (network filter names, HTTP filter names-or-root-ids) of every filter chain.
    fn chains(config: &str) -> Vec<(Vec<String>, Vec<String>)> {
        let v: Value = serde_json::from_str(config).unwrap();
        let fcs = v["static_resources"]["listeners"][0]["filter_chains"]
            .as_array()
            .unwrap();
        fcs.iter()
            .map(|fc| {
                let filters = fc["filters"].as_array().unwrap();
                let net = filters.iter().map(|f| name(f).to_string()).collect();
                let hcm = &filters.last().unwrap()["typed_config"];
                assert!(hcm.get("access_log").is_none());
                assert_eq!(
                    hcm["route_config"]["virtual_hosts"][0]["routes"][0]["direct_response"]
                        ["status"],
                    200
                );
                let http = hcm["http_filters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| root_id(f).unwrap_or(name(f)).to_string())
                    .collect();
                (net, http)
            })
            .collect()
    }

    #[test]
    fn every_chain_keeps_exactly_the_variants_filters() {
        let hcm = "envoy.filters.network.http_connection_manager";
        let cases: [(Chain, Vec<&str>, Vec<&str>); 4] = [
            (
                Chain::NoFilter,
                vec![hcm],
                vec!["envoy.filters.http.router"],
            ),
            (
                Chain::Rbac,
                vec![hcm],
                vec!["envoy.filters.http.rbac", "envoy.filters.http.router"],
            ),
            (
                FULL,
                vec!["envoy.filters.network.wasm", hcm],
                vec![
                    "meshauthz_http",
                    "envoy.filters.http.rbac",
                    "meshauthz_http_enforce",
                    "envoy.filters.http.router",
                ],
            ),
            (
                Chain::Meshauthz {
                    net: false,
                    decide: true,
                    log: false,
                    enforce: true,
                },
                vec![hcm],
                vec![
                    "meshauthz_http",
                    "meshauthz_http_enforce",
                    "envoy.filters.http.router",
                ],
            ),
        ];
        for (chain, net, http) in cases {
            let got = chains(&shape(&rendered(), chain, 3, Path::new("/noop.wasm")).unwrap());
            assert_eq!(
                got.len(),
                2,
                "{chain:?}: both filter chains (mtls, plaintext)"
            );
            for (n, h) in got {
                assert_eq!(n, net, "{chain:?}");
                assert_eq!(h, http, "{chain:?}");
            }
        }
    }

    #[test]
    fn rbac_policies_sort_with_the_benchmark_principal_last() {
        let f = rbac_filter(12);
        let policies = f["typed_config"]["rules"]["policies"].as_object().unwrap();
        let mut names: Vec<&String> = policies.keys().collect();
        names.sort();
        let last = names.last().unwrap();
        assert_eq!(last.as_str(), "ns[foo]-policy[allow-00011]-rule[0]");
        let text = policies[last.as_str()].to_string();
        assert!(
            text.contains("spiffe://cluster.local/ns/ns00011/sa/sa00011"),
            "{text}"
        );
        assert!(text.contains(".*/ns/ns00011/.*"), "{text}");
    }

    #[test]
    fn istio_policies_parse_and_name_each_principal() {
        let docs = meshauthz_e2e::policy::from_yaml(&istio_policies(3, true)).unwrap();
        assert_eq!(docs.len(), 4);
        assert_eq!(
            docs[2]["spec"]["rules"][0]["from"][0]["source"]["principals"][0],
            "cluster.local/ns/ns00002/sa/sa00002"
        );
        assert_eq!(docs[3]["spec"]["action"], "AUDIT");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }
}
