//! `sandbox`: the command behind `make sandbox`, `make sandbox-stop` and `make sandbox DEMO=1`.
//!
//! ```text
//! sandbox up [PORT FLAGS]          start the loopback mesh (detached), stop a previous one first
//! sandbox demo [--hints]           play the mTLS migration story against the running sandbox
//! sandbox ci [PORT FLAGS]          up, demo, down (also on failure); exit 1 if a step misbehaved
//! sandbox mode permissive|strict   re-render the server sidecar for that step and restart it
//! sandbox down                     stop exactly the processes `up` recorded
//! sandbox hints                    print the commands to try by hand
//! sandbox echo --port N --dir D    the echo application (what `up` runs detached)
//! sandbox render-compose [--out D] [--strict]   inputs of envoy-config/sandbox/docker-compose.yaml
//! sandbox compose [COMPOSE FLAGS]   the compose sandbox on Docker or podman: build local images
//!                                  (podman), up, play the story, down (also on failure); exit 1 if
//!                                  a step misbehaved, 0 with one line saying why if no engine runs
//!
//! COMPOSE FLAGS: --project (meshauthz-sandbox) --compose-dir (envoy-config/sandbox; another folder
//!             gets a copy of the compose file) --work (target/sandbox-compose: images, containers.conf)
//!             --compose-admin-port (19901) --compose-client-admin-port (19902)
//!             --compose-tcp-admin-port (19903)
//!             --keep (leave it running after the story)
//! sandbox compose-down [--project P]   stop what `sandbox compose --keep` (or an interrupted run) left
//!
//! PORT FLAGS: --port (server inbound, 8080) --admin-port (9901) --app-port (8090)
//!             --client-port (8000) --client-admin-port (9902)
//! common:     --dir (.sandbox) --cli (target/debug/meshauthz)
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use meshauthz_harness::access_log;
use meshauthz_harness::app::HttpEcho;
use meshauthz_harness::client::CURL_RECV_ERROR;
use meshauthz_harness::{workspace_root, Error, Result};
use meshauthz_sandbox::mesh::{
    default_cli, default_dir, plugin_config_args, policy_files, render_compose, shown, Mode, Ports,
    Sandbox, CLIENT_NS, CLIENT_SA, SAMPLE_DENY_PORT, SUPERVISE,
};
use serde_json::Value;

#[path = "sandbox/compose_story.rs"]
mod compose_story;

struct Args {
    command: String,
    rest: Vec<String>,
    dir: PathBuf,
    cli: PathBuf,
    ports: Ports,
    out: PathBuf,
    strict: bool,
    hints: bool,
    echo_port: Option<u16>,
    compose: compose_story::Options,
}

fn port_arg(flag: &str, value: Option<&String>) -> Result<u16> {
    value
        .and_then(|v| v.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| Error(format!("{flag} needs a port number (1-65535)")))
}

fn parse_args() -> Result<Args> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    let command = it.next().cloned().ok_or_else(|| {
        Error(
            "usage: sandbox up|demo|ci|mode|down|hints|echo|render-compose|compose|compose-down (see the source header)"
                .into(),
        )
    })?;
    let mut a = Args {
        command,
        rest: Vec::new(),
        dir: default_dir(),
        cli: default_cli(),
        ports: Ports::default(),
        out: workspace_root().join("envoy-config/sandbox/generated"),
        strict: false,
        hints: false,
        echo_port: None,
        compose: compose_story::Options::default(),
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--port" => a.ports.inbound = port_arg(flag, it.next())?,
            "--admin-port" => a.ports.admin = port_arg(flag, it.next())?,
            "--app-port" => a.ports.app = port_arg(flag, it.next())?,
            "--client-port" => a.ports.client = port_arg(flag, it.next())?,
            "--client-admin-port" => a.ports.client_admin = port_arg(flag, it.next())?,
            "--dir" => {
                a.dir = PathBuf::from(
                    it.next()
                        .ok_or_else(|| Error("--dir needs a path".into()))?,
                )
            }
            "--cli" => {
                a.cli = PathBuf::from(
                    it.next()
                        .ok_or_else(|| Error("--cli needs a path".into()))?,
                )
            }
            "--out" => {
                a.out = PathBuf::from(
                    it.next()
                        .ok_or_else(|| Error("--out needs a path".into()))?,
                )
            }
            "--strict" => a.strict = true,
            "--keep" => a.compose.keep = true,
            "--project" => {
                a.compose.project = it
                    .next()
                    .filter(|p| {
                        !p.is_empty()
                            && p.chars()
                                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    })
                    .ok_or_else(|| Error("--project needs a name of [a-z0-9-]".into()))?
                    .clone()
            }
            "--compose-dir" => {
                a.compose.dir = PathBuf::from(
                    it.next()
                        .ok_or_else(|| Error("--compose-dir needs a path".into()))?,
                )
            }
            "--work" => {
                a.compose.work = PathBuf::from(
                    it.next()
                        .ok_or_else(|| Error("--work needs a path".into()))?,
                )
            }
            "--compose-admin-port" => a.compose.server_admin = port_arg(flag, it.next())?,
            "--compose-client-admin-port" => a.compose.client_admin = port_arg(flag, it.next())?,
            "--compose-tcp-admin-port" => a.compose.tcp_admin = port_arg(flag, it.next())?,
            "--hints" => a.hints = true,
            other if other.starts_with("--") => {
                return Err(Error(format!("unknown flag {other}")));
            }
            other => a.rest.push(other.to_string()),
        }
        if a.command == "echo" && flag == "--port" {
            a.echo_port = Some(a.ports.inbound);
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sandbox: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    if std::env::args().nth(1).as_deref() == Some(SUPERVISE) {
        return supervise();
    }
    let args = parse_args()?;
    let sb = Sandbox::new(&args.dir, &args.cli)?;
    match args.command.as_str() {
        "up" => {
            up(&sb, args.ports)?;
            Ok(ExitCode::SUCCESS)
        }
        "demo" => {
            let ok = demo(&sb)?;
            if args.hints {
                print_hints(&sb)?;
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        "ci" => {
            up(&sb, args.ports)?;
            let result = demo(&sb);
            let stopped = sb.down();
            report_down(&stopped);
            let ok = result?;
            stopped?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        "mode" => {
            let mode = match args.rest.first().map(String::as_str) {
                Some("strict") => Mode::Strict,
                Some("permissive") => Mode::Permissive,
                _ => return Err(Error("usage: sandbox mode permissive|strict".into())),
            };
            let state = sb.set_mode(mode)?;
            println!(
                "sandbox: server sidecar restarted in {} mode (pid {})",
                mode.name(),
                state
                    .processes
                    .iter()
                    .find(|p| p.name == "server")
                    .map(|p| p.pid)
                    .unwrap_or(0)
            );
            Ok(ExitCode::SUCCESS)
        }
        "down" => {
            report_down(&sb.down());
            Ok(ExitCode::SUCCESS)
        }
        "hints" => {
            print_hints(&sb)?;
            Ok(ExitCode::SUCCESS)
        }
        "echo" => echo(&args),
        "render-compose" => {
            let mode = if args.strict {
                Mode::Strict
            } else {
                Mode::Permissive
            };
            for p in render_compose(&args.out, &sb.cli, mode, &[])? {
                println!("wrote {}", shown(&p));
            }
            Ok(ExitCode::SUCCESS)
        }
        "compose" => compose_story::main(&args.compose, &sb.cli),
        "compose-down" => compose_story::down(&args.compose),
        other => Err(Error(format!(
            "unknown command {other:?}: up|demo|ci|mode|down|hints|echo|render-compose|compose|compose-down"
        ))),
    }
}

fn report_down(stopped: &Result<Vec<meshauthz_sandbox::mesh::Proc>>) {
    match stopped {
        Ok(v) if v.is_empty() => println!("sandbox: nothing to stop"),
        Ok(v) => {
            for p in v {
                println!("sandbox: stopped {} (pid {})", p.name, p.pid);
            }
        }
        Err(e) => eprintln!("sandbox: stopping: {e}"),
    }
}

fn up(sb: &Sandbox, ports: Ports) -> Result<()> {
    if ports.inbound != SAMPLE_DENY_PORT {
        println!(
            "sandbox: note: the sample DENY policy (20-deny-admin.yaml) names port {SAMPLE_DENY_PORT}; on port {} it does not apply and the DENY step fails",
            ports.inbound
        );
    }
    sb.up(ports)?;
    println!(
        "sandbox: running; state, logs and certificates in {}",
        shown(&sb.dir)
    );
    Ok(())
}

/// `supervise --pid-file F -- PROGRAM ARGS...`: run PROGRAM as a child (same output), write its
/// pid to F, wait for it and exit with its status. Envoy's parent must outlive `sandbox up`.
fn supervise() -> Result<ExitCode> {
    let argv: Vec<String> = std::env::args().skip(2).collect();
    let usage = || Error("usage: sandbox supervise --pid-file F -- PROGRAM ARGS...".into());
    let (Some("--pid-file"), Some(pid_file), Some("--")) = (
        argv.first().map(String::as_str),
        argv.get(1),
        argv.get(2).map(String::as_str),
    ) else {
        return Err(usage());
    };
    let program = argv.get(3).ok_or_else(usage)?;
    let mut child = Command::new(program)
        .args(argv.get(4..).unwrap_or_default())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| Error(format!("cannot start {program}: {e}")))?;
    std::fs::write(pid_file, child.id().to_string())?;
    let status = child.wait()?;
    println!("supervise: {program} exited ({status})");
    Ok(ExitCode::from(
        status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1),
    ))
}

/// The echo application: serve until the sandbox's state file is gone (or a signal).
fn echo(args: &Args) -> Result<ExitCode> {
    let port = args
        .echo_port
        .ok_or_else(|| Error("usage: sandbox echo --port N --dir D".into()))?;
    let app = HttpEcho::start_on(port)
        .map_err(|e| Error(format!("echo: cannot listen on 127.0.0.1:{port}: {e}")))?;
    println!("echo: listening on 127.0.0.1:{}", app.port());
    let state = args.dir.join("state.json");
    // Never outlive the sandbox that started it, even if its state was removed by hand.
    while state.is_file() {
        std::thread::sleep(Duration::from_secs(1));
    }
    println!("echo: {} is gone, exiting", state.display());
    Ok(ExitCode::SUCCESS)
}

// ---- the story ---------------------------------------------------------------------------------

struct Story {
    step: usize,
    passed: usize,
    failed: Vec<String>,
}

impl Story {
    fn step(&mut self, title: &str) {
        self.step += 1;
        println!("\n[{}] {title}", self.step);
    }

    fn run(&self, cmd: &str) {
        println!("    $ {cmd}");
    }

    fn saw(&self, what: &str) {
        for line in what.lines() {
            println!("      {line}");
        }
    }

    fn check(&mut self, ok: bool, claim: &str) -> bool {
        if ok {
            self.passed += 1;
            println!("    PASS  {claim}");
        } else {
            self.failed.push(format!("[{}] {claim}", self.step));
            println!("    FAIL  {claim}");
        }
        ok
    }
}

fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=@-,+".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

struct Curl {
    exit: i32,
    status: u16,
    body: String,
    stderr: String,
}

/// Run curl with exactly `args` (shown to the reader first), bounded by `-m 5`.
fn curl(story: &Story, args: &[&str]) -> Result<Curl> {
    let mut all = vec!["-sS", "-m", "5", "-w", r"\n%{http_code}"];
    all.extend_from_slice(args);
    story.run(&format!(
        "curl {}",
        all.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
    ));
    let out = Command::new("curl")
        .args(&all)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error(format!("cannot run curl: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Ok(Curl {
        exit: out.status.code().unwrap_or(-1),
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

fn describe(c: &Curl) -> String {
    if c.exit == 0 {
        format!("HTTP {}", c.status)
    } else {
        format!("curl exit {}: {}", c.exit, c.stderr)
    }
}

/// Wait (5 s) for an access-log entry written after line `mark` with this method and path.
fn log_entry(path: &Path, mark: usize, method: &str, req_path: &str) -> Option<(String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = access_log::lines(path)
            .into_iter()
            .skip(mark)
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok().map(|v| (l, v)))
            .find(|(_, v)| {
                v.get("method").and_then(Value::as_str) == Some(method)
                    && v.get("path").and_then(Value::as_str) == Some(req_path)
            });
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn is_true(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Bool(true))) || v.and_then(Value::as_str) == Some("true")
}

/// Step 2's check, shared by both stories: the legacy (plaintext) call's access-log line is
/// marked audited by the AUDIT policy (`access_log_hint`).
fn check_audited_legacy(s: &mut Story, entry: Option<(String, Value)>) {
    match entry {
        Some((line, v)) => {
            s.saw(&format!("access log: {line}"));
            s.check(
                field(&v, "chain") == "plaintext" && is_true(v.get("audit")),
                "its access-log line says chain plaintext, audit true (access_log_hint, set by the AUDIT policy)",
            );
        }
        None => {
            s.check(false, "an access-log line for GET /legacy");
        }
    }
}

/// Step 3's opening, shared by both stories: the plaintext and audit counters as the server
/// sidecar's admin endpoint shows them.
fn counters_step(s: &mut Story, admin: u16) -> Result<Vec<(String, u64)>> {
    s.step("Who still calls without mTLS? The plaintext counters and the audited log lines");
    let stats = meshauthz_stats(s, admin)?;
    s.saw(
        &stats
            .iter()
            .filter(|(k, _)| k.contains(".plaintext.") || k.ends_with(".audited"))
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    Ok(stats)
}

fn meshauthz_stats(story: &Story, admin: u16) -> Result<Vec<(String, u64)>> {
    // The module hands its counts to Envoy once per second (on_tick): let one flush pass.
    std::thread::sleep(Duration::from_millis(1500));
    let url = format!("http://127.0.0.1:{admin}/stats?filter=meshauthz");
    let c = curl(story, &[&url])?;
    if c.status != 200 {
        return Err(Error(format!("admin /stats: {}", describe(&c))));
    }
    Ok(c.body
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect())
}

fn sum_stats(stats: &[(String, u64)], prefix: &str, suffix: &str) -> u64 {
    stats
        .iter()
        .filter(|(k, _)| k.starts_with(prefix) && k.ends_with(suffix))
        .map(|(_, v)| v)
        .sum()
}

fn cli_command(sb: &Sandbox, mode: Mode, http_port: u16) -> Result<String> {
    let files: Vec<PathBuf> = policy_files(&sb.policies, mode)?
        .iter()
        .map(|f| PathBuf::from(shown(f)))
        .collect();
    Ok(format!(
        "{} {} > {}",
        shown(&sb.cli),
        plugin_config_args(&files, Some(http_port)).join(" "),
        shown(&sb.dir.join("plugin-config.json"))
    ))
}

/// Play the migration story against the running sandbox; `Ok(false)` if a step misbehaved.
fn demo(sb: &Sandbox) -> Result<bool> {
    let mut state = sb.running_state()?;
    sb.check_running(&state)?;
    if state.mode != Mode::Permissive {
        println!("sandbox: the server sidecar is in STRICT mode; back to PERMISSIVE for the story");
        state = sb.set_mode(Mode::Permissive)?;
    }
    let p = state.ports;
    let log = sb.access_log();
    let client_id = format!("spiffe://cluster.local/ns/{CLIENT_NS}/sa/{CLIENT_SA}");
    let mut s = Story {
        step: 0,
        passed: 0,
        failed: Vec::new(),
    };
    println!("\n==== meshauthz sandbox: an mTLS migration, step by step ====");
    println!("  echo application      127.0.0.1:{}", p.app);
    println!(
        "  server sidecar        127.0.0.1:{} (admin {}), workload foo/app=echo, access log {}",
        p.inbound,
        p.admin,
        shown(&log)
    );
    println!(
        "  client sidecar        127.0.0.1:{} (admin {}), mTLS as {client_id}",
        p.client, p.client_admin
    );
    println!(
        "  legacy client         curl straight to 127.0.0.1:{} (plaintext)",
        p.inbound
    );
    println!(
        "  policies              {}: PERMISSIVE mesh-wide, AUDIT callers outside istioinaction, DENY /admin on port 8080",
        shown(&sb.policies)
    );
    println!(
        "  plugin configuration  {}",
        cli_command(sb, Mode::Permissive, p.inbound)?
    );

    // 1. In-mesh call.
    s.step(
        "In-mesh call: sleep (istioinaction) -> client sidecar -> mTLS -> server sidecar -> echo",
    );
    let mark = access_log::lines(&log).len();
    let c = curl(&s, &[&format!("http://127.0.0.1:{}/hello", p.client)])?;
    s.saw(&describe(&c));
    let xfcc = serde_json::from_str::<Value>(&c.body)
        .ok()
        .and_then(|v| {
            v.get("headers")
                .and_then(|h| h.get("x-forwarded-client-cert"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    s.saw(&format!(
        "the application saw x-forwarded-client-cert: {xfcc}"
    ));
    s.check(
        c.exit == 0 && c.status == 200,
        "the in-mesh call succeeds (200)",
    );
    s.check(
        xfcc.contains(&format!("URI={client_id}")),
        &format!("the application sees the caller's identity URI={client_id}"),
    );
    match log_entry(&log, mark, "GET", "/hello") {
        Some((line, v)) => {
            s.saw(&format!("access log: {line}"));
            s.check(
                field(&v, "chain") == "mtls" && field(&v, "peer") == client_id,
                "the access log shows the mtls chain and the peer's SPIFFE identity",
            );
            s.check(
                !is_true(v.get("audit")),
                "not audited: the caller is in istioinaction (\"audit\" is not true)",
            );
        }
        None => {
            s.check(false, "an access-log line for GET /hello");
        }
    }

    // 2. Legacy plaintext call.
    s.step("Legacy call: a plaintext client outside the mesh -> server sidecar (PERMISSIVE)");
    let mark = access_log::lines(&log).len();
    let c = curl(&s, &[&format!("http://127.0.0.1:{}/legacy", p.inbound)])?;
    s.saw(&describe(&c));
    s.check(
        c.exit == 0 && c.status == 200,
        "the plaintext call to the PERMISSIVE port succeeds (200)",
    );
    check_audited_legacy(&mut s, log_entry(&log, mark, "GET", "/legacy"));

    // 3. Counters.
    let stats = counters_step(&mut s, p.admin)?;
    let accepted = sum_stats(&stats, "wasmcustom.meshauthz.plaintext.", ".accepted");
    s.check(
        accepted >= 1,
        &format!(
            "wasmcustom.meshauthz.plaintext.{}.accepted counts the legacy caller ({accepted})",
            if p.inbound == SAMPLE_DENY_PORT {
                p.inbound.to_string()
            } else {
                "<port>".into()
            }
        ),
    );
    s.run(&format!("grep '\"audit\":true' {}", quote(&shown(&log))));
    let audited: Vec<String> = access_log::lines(&log)
        .into_iter()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .is_some_and(|v| is_true(v.get("audit")))
        })
        .collect();
    s.saw(&audited.join("\n"));
    s.check(
        !audited.is_empty() && audited.iter().all(|l| !l.contains(&client_id)),
        "the audited lines are the callers outside istioinaction, never the in-mesh client",
    );

    // 4. STRICT.
    s.step("Switch the namespace to STRICT (90-strict.yaml), restart the server sidecar");
    s.run(&cli_command(sb, Mode::Strict, p.inbound)?);
    s.run(&format!(
        "render envoy-config/envoy/server-http.yaml into {} and restart the server sidecar (sandbox mode strict)",
        shown(&sb.config("server"))
    ));
    let state = sb.set_mode(Mode::Strict)?;
    s.saw(&format!(
        "server sidecar restarted (pid {})",
        state
            .processes
            .iter()
            .find(|q| q.name == "server")
            .map(|q| q.pid)
            .unwrap_or(0)
    ));
    let c = curl(&s, &[&format!("http://127.0.0.1:{}/legacy", p.inbound)])?;
    s.saw(&describe(&c));
    s.check(
        c.exit == CURL_RECV_ERROR && c.stderr.contains("Connection reset by peer"),
        "the legacy plaintext call is reset (curl exit 56, Connection reset by peer)",
    );
    let c = curl(&s, &[&format!("http://127.0.0.1:{}/hello", p.client)])?;
    s.saw(&describe(&c));
    s.check(
        c.exit == 0 && c.status == 200,
        "the in-mesh call still succeeds (200)",
    );
    let stats = meshauthz_stats(&s, p.admin)?;
    s.saw(
        &stats
            .iter()
            .filter(|(k, _)| k.contains(".plaintext."))
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let rejected = sum_stats(&stats, "wasmcustom.meshauthz.plaintext.", ".rejected");
    s.check(
        rejected >= 1,
        &format!("the plaintext counter counts the reset ({rejected} rejected)"),
    );

    // 5. DENY.
    s.step("A DENY rule: nobody reaches /admin on port 8080, whatever the path tricks");
    let mark = access_log::lines(&log).len();
    let c = curl(&s, &[&format!("http://127.0.0.1:{}/admin", p.client)])?;
    s.saw(&format!("{}: {}", describe(&c), c.body));
    s.check(
        c.status == 403 && c.body == "RBAC: access denied",
        "GET /admin via the client sidecar: 403 RBAC: access denied",
    );
    let c = curl(
        &s,
        &[
            "--path-as-is",
            &format!("http://127.0.0.1:{}/x/%2e%2e/admin", p.client),
        ],
    )?;
    s.saw(&format!("{}: {}", describe(&c), c.body));
    s.check(
        c.status == 403 && c.body == "RBAC: access denied",
        "GET /x/%2e%2e/admin: 403 RBAC: access denied",
    );
    match log_entry(&log, mark, "GET", "/admin") {
        Some((line, v)) => {
            s.saw(&format!("access log: {line}"));
            s.check(
                field(&v, "decision").starts_with("deny ns[foo]-policy[deny-admin]"),
                "the access log names the policy that denied it",
            );
        }
        None => {
            s.check(false, "an access-log line for GET /admin");
        }
    }

    println!(
        "\n==== {} steps, {} checks passed, {} failed ====",
        s.step,
        s.passed,
        s.failed.len()
    );
    for f in &s.failed {
        println!("FAILED {f}");
    }
    if !s.failed.is_empty() {
        println!(
            "logs: {}, {}, {}",
            shown(&sb.log("server")),
            shown(&sb.log("client")),
            shown(&log)
        );
    }
    Ok(s.failed.is_empty())
}

fn print_hints(sb: &Sandbox) -> Result<()> {
    let state = sb.running_state()?;
    let p = state.ports;
    let (cert, key) = sb.client_cert();
    let ca = sb.certs_dir().join("ca.crt");
    println!(
        "\nThe sandbox is running (server sidecar in {} mode). Try by hand:",
        state.mode.name().to_uppercase()
    );
    println!("  # in-mesh call through the client sidecar (mTLS as {CLIENT_NS}/{CLIENT_SA})");
    println!("  curl -sS http://127.0.0.1:{}/hello", p.client);
    println!("  # the same identity straight to the server sidecar, with the client certificate");
    println!(
        "  curl -sS --cacert {} --cert {} --key {} --resolve localhost:{}:127.0.0.1 https://localhost:{}/hello",
        shown(&ca),
        shown(&cert),
        shown(&key),
        p.inbound,
        p.inbound
    );
    println!("  # the legacy plaintext client (reset in STRICT mode, audited in PERMISSIVE)");
    println!("  curl -sS http://127.0.0.1:{}/hello", p.inbound);
    println!("  # the DENY rule");
    println!(
        "  curl -sS --path-as-is http://127.0.0.1:{}/x/%2e%2e/admin",
        p.client
    );
    println!("  # counters and the access log");
    println!(
        "  curl -s 'http://127.0.0.1:{}/stats?filter=meshauthz'",
        p.admin
    );
    println!("  tail -f {}", shown(&sb.access_log()));
    println!("  # switch the PeerAuthentication step (re-renders the config, restarts the server sidecar)");
    println!("  make sandbox-mode MODE=permissive     # or MODE=strict");
    println!("  # stop everything");
    println!("  make sandbox-stop");
    Ok(())
}
