//! `sandbox`: the command behind `make sandbox`, `make sandbox-stop` and `make sandbox DEMO=1`.
//!
//! ```text
//! sandbox up [PORT FLAGS]          start the loopback mesh (detached), stop a previous one first
//! sandbox demo [--hints]           play the mTLS migration story against the running sandbox
//! sandbox ci [PORT FLAGS]          up, demo, down (also on failure); exit 1 if a step misbehaved
//! sandbox mode permissive|report-only|strict   the sample policies of that step, by a live
//!                                  update (no restart); report-only: 90-strict.yaml replaced by
//!                                  envoy-config/sandbox/policies/90-strict-report-only.yaml
//! sandbox apply [--unchecked] PATH...   send the policy set of PATH (folders, files) to the running
//!                                  server sidecar by a live update (file-based LDS, no restart);
//!                                  the CLI validates first (a refused set is not sent, exit 1);
//!                                  --unchecked sends it anyway (the module refuses a bad set and
//!                                  keeps the last good one: exit 1)
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
use meshauthz_sandbox::live::{Applied, Check};
use meshauthz_sandbox::mesh::{
    default_cli, default_dir, plugin_config_args, policy_files, render_compose, shown, Mode, Ports,
    Sandbox, CLIENT_NS, CLIENT_SA, REPORT_ONLY_POLICY, SAMPLE_DENY_PORT, SUPERVISE,
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
    unchecked: bool,
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
            "usage: sandbox up|demo|ci|mode|apply|down|hints|echo|render-compose|compose|compose-down (see the source header)"
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
        unchecked: false,
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
            "--unchecked" => a.unchecked = true,
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
                Some("report-only") => Mode::ReportOnly,
                Some("permissive") => Mode::Permissive,
                _ => {
                    return Err(Error(
                        "usage: sandbox mode permissive|report-only|strict".into(),
                    ))
                }
            };
            let applied = sb.set_mode(mode)?;
            println!("{}", applied_report(&applied));
            println!("sandbox: server sidecar in {} mode", mode.name());
            Ok(ExitCode::SUCCESS)
        }
        "apply" => {
            let inputs: Vec<PathBuf> = args.rest.iter().map(PathBuf::from).collect();
            let check = if args.unchecked {
                Check::Unchecked
            } else {
                Check::Cli
            };
            let applied = sb.apply(&inputs, check)?;
            println!("{}", applied_report(&applied));
            Ok(if applied.refused() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
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
            "unknown command {other:?}: up|demo|ci|mode|apply|down|hints|echo|render-compose|compose|compose-down"
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

/// What a live update did, in the words `sandbox apply` prints.
fn applied_report(a: &Applied) -> String {
    let files: Vec<String> = a.files.iter().map(|f| shown(f)).collect();
    let mut out = vec![
        format!("sandbox: sent {} policy file(s): {}", files.len(), files.join(" ")),
        format!(
            "sandbox: Envoy applied the new listener live: listener_manager.lds.update_success {} -> {}, server.uptime {} -> {} s (pid {}: not restarted); the replaced chains drained after {:.1} s",
            a.lds_updates.0,
            a.lds_updates.1,
            a.uptime.0,
            a.uptime.1,
            a.server_pid,
            a.drained_after.as_secs_f64()
        ),
    ];
    if a.refused() {
        out.push(format!(
            "sandbox: the module REFUSED the set (wasmcustom.meshauthz.config_refused {} -> {}); the last good set stays in force. Envoy's log:",
            a.config_refused.0, a.config_refused.1
        ));
        out.extend(a.refusals.iter().map(|l| format!("  {l}")));
    } else {
        out.push(format!(
            "sandbox: the module accepted the set (wasmcustom.meshauthz.config_refused {} -> {}): new connections are decided by it",
            a.config_refused.0, a.config_refused.1
        ));
    }
    out.join("\n")
}

// ---- the story ---------------------------------------------------------------------------------

#[derive(Default)]
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

    /// The totals and every failed check; whether all checks passed.
    fn summary(&self) -> bool {
        println!(
            "\n==== {} steps, {} checks passed, {} failed ====",
            self.step,
            self.passed,
            self.failed.len()
        );
        for f in &self.failed {
            println!("FAILED {f}");
        }
        self.failed.is_empty()
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

/// The access-log line found for `request` (`GET /path`), shown; when there is none, a failed
/// check saying so.
fn logged(s: &mut Story, entry: Option<(String, Value)>, request: &str) -> Option<Value> {
    match entry {
        Some((line, v)) => {
            s.saw(&format!("access log: {line}"));
            Some(v)
        }
        None => {
            s.check(false, &format!("an access-log line for {request}"));
            None
        }
    }
}

/// The `x-forwarded-client-cert` the echo application says it received.
fn xfcc(c: &Curl) -> String {
    serde_json::from_str::<Value>(&c.body)
        .ok()
        .and_then(|v| {
            v.get("headers")
                .and_then(|h| h.get("x-forwarded-client-cert"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// A call that must be served: what the caller saw, and a 200.
fn check_served(s: &mut Story, c: &Curl, claim: &str) {
    s.saw(&describe(c));
    s.check(c.exit == 0 && c.status == 200, claim);
}

/// A call that must be denied as Istio denies: what the caller saw, and the 403.
fn check_denied(s: &mut Story, c: &Curl, claim: &str) {
    s.saw(&format!("{}: {}", describe(c), c.body));
    s.check(deny_status(c), claim);
}

/// Step 1's checks, shared by both stories: the in-mesh call `c` is served, the application sees
/// the caller's identity, and the call's access-log line shows mTLS and that peer, not audited.
fn check_in_mesh(s: &mut Story, c: &Curl, client_id: &str, entry: Option<(String, Value)>) {
    let x = xfcc(c);
    s.saw(&format!("the application saw x-forwarded-client-cert: {x}"));
    s.check(
        c.exit == 0 && c.status == 200,
        "the in-mesh call succeeds (200)",
    );
    s.check(
        x.contains(&format!("URI={client_id}")),
        &format!("the application sees the caller's identity URI={client_id}"),
    );
    if let Some(v) = logged(s, entry, "GET /hello") {
        s.check(
            field(&v, "chain") == "mtls" && field(&v, "peer") == client_id,
            "the access log shows the mtls chain and the peer's SPIFFE identity",
        );
        s.check(
            !is_true(v.get("audit")),
            "not audited: the caller is in istioinaction (\"audit\" is not true)",
        );
    }
}

/// Step 2's check, shared by both stories: the legacy (plaintext) call's access-log line is
/// marked audited by the AUDIT policy (`access_log_hint`).
fn check_audited_legacy(s: &mut Story, entry: Option<(String, Value)>) {
    if let Some(v) = logged(s, entry, "GET /legacy") {
        s.check(
            field(&v, "chain") == "plaintext" && is_true(v.get("audit")),
            "its access-log line says chain plaintext, audit true (access_log_hint, set by the AUDIT policy)",
        );
    }
}

/// Step 3's closing, shared by both stories: the access-log lines marked audited are the callers
/// outside istioinaction.
fn check_audited_lines(s: &mut Story, audited: &[String], client_id: &str) {
    s.saw(&audited.join("\n"));
    s.check(
        !audited.is_empty() && audited.iter().all(|l| !l.contains(client_id)),
        "the audited lines are the callers outside istioinaction, never the in-mesh client",
    );
}

/// After STRICT, shared by both stories: the plaintext counters of the server sidecar (admin
/// port `admin`) count the reset.
fn check_plaintext_rejected(s: &mut Story, admin: u16) -> Result<()> {
    let stats = meshauthz_stats(s, admin)?;
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
    Ok(())
}

/// The DENY step's closing, shared by both stories: the access-log line of the denied
/// `GET /admin` names the policy.
fn check_admin_denial_logged(s: &mut Story, entry: Option<(String, Value)>) {
    if let Some(v) = logged(s, entry, "GET /admin") {
        s.check(
            field(&v, "decision").starts_with("deny ns[foo]-policy[deny-admin]"),
            "the access log names the policy that denied it",
        );
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
    if state.policies != policy_files(&sb.policies, Mode::Permissive)? {
        println!(
            "sandbox: the server sidecar runs another policy set; back to the PERMISSIVE step for the story (live update)"
        );
        println!("{}", applied_report(&sb.set_mode(Mode::Permissive)?));
        state = sb.running_state()?;
    }
    let p = state.ports;
    let log = sb.access_log();
    let client_id = format!("spiffe://cluster.local/ns/{CLIENT_NS}/sa/{CLIENT_SA}");
    let mut s = Story::default();
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
    check_in_mesh(
        &mut s,
        &c,
        &client_id,
        log_entry(&log, mark, "GET", "/hello"),
    );

    // 2. Legacy plaintext call.
    s.step("Legacy call: a plaintext client outside the mesh -> server sidecar (PERMISSIVE)");
    let mark = access_log::lines(&log).len();
    let c = curl(&s, &[&format!("http://127.0.0.1:{}/legacy", p.inbound)])?;
    check_served(
        &mut s,
        &c,
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
    check_audited_lines(&mut s, &audited, &client_id);

    // 4. Report-only STRICT, by a live update.
    report_only_steps(sb, &mut s, p.inbound, p.admin)?;

    // 6. STRICT, by a live update.
    s.step("Enforce: the namespace STRICT without the annotation (90-strict.yaml), live: the running server sidecar gets the new set, no restart");
    s.run(&format!(
        "make sandbox-mode MODE=strict    # the same as make sandbox-apply POLICIES={}",
        shown(&sb.policies)
    ));
    s.saw(&format!(
        "runs {}, writes the listeners into {} (aside, then rename: Envoy watches it)",
        cli_command(sb, Mode::Strict, p.inbound)?,
        shown(&sb.lds_path())
    ));
    let applied = sb.apply(std::slice::from_ref(&sb.policies), Check::Cli)?;
    s.saw(&applied_report(&applied));
    check_live(&mut s, &applied);
    let c = curl(&s, &[&format!("http://127.0.0.1:{}/legacy", p.inbound)])?;
    s.saw(&describe(&c));
    s.check(
        c.exit == CURL_RECV_ERROR && c.stderr.contains("Connection reset by peer"),
        "the legacy plaintext call is reset (curl exit 56, Connection reset by peer)",
    );
    let c = curl(&s, &[&format!("http://127.0.0.1:{}/hello", p.client)])?;
    check_served(&mut s, &c, "the in-mesh call still succeeds (200)");
    check_plaintext_rejected(&mut s, p.admin)?;

    // 7. DENY.
    s.step("A DENY rule: nobody reaches /admin on port 8080, whatever the path tricks");
    let mark = access_log::lines(&log).len();
    let c = curl(&s, &[&format!("http://127.0.0.1:{}/admin", p.client)])?;
    check_denied(
        &mut s,
        &c,
        "GET /admin via the client sidecar: 403 RBAC: access denied",
    );
    let c = curl(
        &s,
        &[
            "--path-as-is",
            &format!("http://127.0.0.1:{}/x/%2e%2e/admin", p.client),
        ],
    )?;
    check_denied(&mut s, &c, "GET /x/%2e%2e/admin: 403 RBAC: access denied");
    check_admin_denial_logged(&mut s, log_entry(&log, mark, "GET", "/admin"));

    live_steps(sb, &mut s, p.client)?;

    if !s.summary() {
        println!(
            "logs: {}, {}, {}",
            shown(&sb.log("server")),
            shown(&sb.log("client")),
            shown(&log)
        );
    }
    Ok(s.failed.is_empty())
}

/// Steps 4 and 5: STRICT written down but report-only (plaintext still served, counted and
/// logged with the caller), and `meshauthz strict-readiness` on the evidence: not ready.
fn report_only_steps(sb: &Sandbox, s: &mut Story, inbound: u16, admin: u16) -> Result<()> {
    s.step("Report-only STRICT, live: the namespace says STRICT with meshauthz.io/strict-report-only: \"true\"; plaintext is still served, counted and logged");
    s.run("make sandbox-mode MODE=report-only");
    s.saw(&format!(
        "sends {} without 90-strict.yaml, plus {REPORT_ONLY_POLICY}",
        shown(&sb.policies)
    ));
    let applied = sb.set_mode(Mode::ReportOnly)?;
    s.saw(&applied_report(&applied));
    check_live(s, &applied);
    let server_log = sb.log("server");
    let log_from = std::fs::metadata(&server_log).map(|m| m.len()).unwrap_or(0);
    let c = curl(s, &[&format!("http://127.0.0.1:{inbound}/legacy")])?;
    check_served(
        s,
        &c,
        "the legacy plaintext call is still served (200): STRICT is report-only",
    );
    let stats = meshauthz_stats(s, admin)?;
    s.saw(
        &stats
            .iter()
            .filter(|(k, _)| k.contains(".plaintext.") && k.contains(&inbound.to_string()))
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let report_only = sum_stats(&stats, "wasmcustom.meshauthz.plaintext.", ".report_only");
    s.check(
        report_only >= 1,
        &format!(
            "wasmcustom.meshauthz.plaintext.{inbound}.report_only counts the connection STRICT would have reset ({report_only})"
        ),
    );
    s.run(&format!(
        "grep 'report-only STRICT' {}",
        quote(&shown(&server_log))
    ));
    let mut line = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while line.is_none() && Instant::now() < deadline {
        line = std::fs::read(&server_log).ok().and_then(|b| {
            let from = usize::try_from(log_from).unwrap_or(usize::MAX);
            String::from_utf8_lossy(b.get(from..).unwrap_or_default())
                .lines()
                .find(|l| l.contains("report-only STRICT: plaintext connection from 127.0.0.1:"))
                .map(str::to_string)
        });
        if line.is_none() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    s.saw(line.as_deref().unwrap_or("(no line)"));
    s.check(
        line.as_deref().is_some_and(|l| {
            l.contains(&format!("to port {inbound} admitted")) && l.contains("would be reset")
        }),
        "Envoy's log names the caller (127.0.0.1:<port>) and the port, admitted although STRICT would reset it",
    );

    s.step(
        "Is it safe to enforce? meshauthz strict-readiness reads the counters and the access log",
    );
    let admin_url = format!("http://127.0.0.1:{admin}");
    let port = inbound.to_string();
    let log = sb.access_log();
    let args = [
        "strict-readiness",
        "--admin",
        &admin_url,
        "--access-log",
        &shown(&log),
        "--port",
        &port,
        "--min-uptime",
        "0",
    ];
    s.run(&format!(
        "{} {}",
        shown(&sb.cli),
        args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
    ));
    let mut cmd = Command::new(&sb.cli);
    cmd.args(&args[..4])
        .arg(&log)
        .args(&args[5..])
        .stdin(Stdio::null());
    let out = cmd
        .output()
        .map_err(|e| Error(format!("cannot run {}: {e}", sb.cli.display())))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    s.saw(text.trim_end());
    let code = out.status.code().unwrap_or(-1);
    s.saw(&format!("exit status {code}"));
    s.check(
        code == 5 && text.contains(&format!("port {inbound}: NOT READY")),
        &format!("port {inbound}: NOT READY (exit status 5) while the legacy caller is there"),
    );
    s.check(
        text.contains("would have been reset")
            && text.contains("127.0.0.1")
            && text.contains("GET /legacy"),
        "it names what would have been reset and the caller (127.0.0.1, GET /legacy)",
    );
    s.saw("the legacy caller moves into the mesh (it now calls through a client sidecar); once strict-readiness stays READY, enforce:");
    Ok(())
}

/// The sample DENY the story adds live, and the same with a typo (refused).
const LIVE_POLICY: &str = "envoy-config/sandbox/policies/40-deny-debug.yaml";
const LIVE_POLICY_TYPO: &str = "envoy-config/sandbox/policies/40-deny-debug-typo.yaml";

/// A live update landed: Envoy applied the listener without a restart and the module took the set.
fn check_live(s: &mut Story, a: &Applied) {
    s.check(
        a.lds_updates.1 > a.lds_updates.0 && a.uptime.1 >= a.uptime.0 && !a.refused(),
        "the new set is in force without a restart (lds.update_success rose, server.uptime did not start over, nothing refused)",
    );
}

fn deny_status(c: &Curl) -> bool {
    c.status == 403 && c.body == "RBAC: access denied"
}

/// Steps 6 and 7: a new policy reaches the running sidecar (allow -> deny), and an invalid set is
/// refused, by the CLI and, sent anyway, by the module, the last good set staying in force.
fn live_steps(sb: &Sandbox, s: &mut Story, client: u16) -> Result<()> {
    let root = workspace_root();
    // Paths as a person in the workspace would type them (the CLI's messages repeat them).
    let here = |p: &Path| -> PathBuf {
        match std::env::current_dir() {
            Ok(cwd) if cwd == root => p.strip_prefix(&root).unwrap_or(p).to_path_buf(),
            _ => p.to_path_buf(),
        }
    };
    let policies = here(&sb.policies);
    let debug_url = format!("http://127.0.0.1:{client}/debug");
    let hello_url = format!("http://127.0.0.1:{client}/hello");
    let log = sb.access_log();

    s.step("A new policy, live: DENY /debug (envoy-config/sandbox/policies/40-deny-debug.yaml) reaches the running server sidecar");
    let c = curl(s, &[&debug_url])?;
    check_served(s, &c, "before the update, GET /debug is served (200)");
    s.run(&format!(
        "make sandbox-apply POLICIES=\"{} {LIVE_POLICY}\"",
        shown(&sb.policies)
    ));
    let applied = sb.apply(
        &[policies.clone(), here(&root.join(LIVE_POLICY))],
        Check::Cli,
    )?;
    s.saw(&applied_report(&applied));
    check_live(s, &applied);
    let mark = access_log::lines(&log).len();
    let c = curl(s, &[&debug_url])?;
    check_denied(
        s,
        &c,
        "after the update, GET /debug: 403 RBAC: access denied",
    );
    if let Some(v) = logged(s, log_entry(&log, mark, "GET", "/debug"), "GET /debug") {
        s.check(
            field(&v, "decision").starts_with("deny ns[foo]-policy[deny-debug]"),
            "the access log names the new policy (deny-debug)",
        );
    }
    let c = curl(s, &[&hello_url])?;
    check_served(s, &c, "GET /hello is still served (200)");

    s.step("An invalid set is refused; the last good set stays in force");
    s.run(&format!(
        "make sandbox-apply POLICIES=\"{} {LIVE_POLICY_TYPO}\"",
        shown(&sb.policies)
    ));
    let before = meshauthz_sandbox::live::admin_stats(sb.running_state()?.ports.admin)?;
    let updates = |st: &std::collections::BTreeMap<String, u64>| {
        st.get("listener_manager.lds.update_success")
            .copied()
            .unwrap_or(0)
    };
    let typo_set = [policies.clone(), here(&root.join(LIVE_POLICY_TYPO))];
    match sb.apply(&typo_set, Check::Cli) {
        Ok(a) => {
            s.saw(&applied_report(&a));
            s.check(false, "the CLI refuses the set before anything is sent");
        }
        Err(e) => {
            s.saw(&e.0);
            s.check(
                e.0.contains("AuthorizationPolicy foo/deny-debug")
                    && e.0.contains("spec.rules[0].to[0].operation.path"),
                "the CLI refuses it, naming the object and the field (foo/deny-debug, spec.rules[0].to[0].operation.path)",
            );
        }
    }
    let after = meshauthz_sandbox::live::admin_stats(sb.running_state()?.ports.admin)?;
    s.check(
        updates(&after) == updates(&before),
        &format!(
            "nothing reached Envoy (listener_manager.lds.update_success still {})",
            updates(&after)
        ),
    );
    s.run(&format!(
        "make sandbox-apply POLICIES=\"{} {LIVE_POLICY_TYPO}\" UNCHECKED=1    # sent anyway: the module's own check",
        shown(&sb.policies)
    ));
    let a = sb.apply(&typo_set, Check::Unchecked)?;
    s.saw(&applied_report(&a));
    s.check(
        a.refusals.iter().any(|l| {
            l.contains("AuthorizationPolicy foo/deny-debug")
                && l.contains("spec.rules[0].to[0].operation.path")
        }),
        "the module refuses it: Envoy's log names the object, the field and what is wrong",
    );
    s.check(
        a.config_refused.1 > a.config_refused.0,
        &format!(
            "wasmcustom.meshauthz.config_refused counts it ({} -> {})",
            a.config_refused.0, a.config_refused.1
        ),
    );
    let c = curl(s, &[&debug_url])?;
    s.saw(&format!("{}: {}", describe(&c), c.body));
    let d = curl(s, &[&hello_url])?;
    s.saw(&describe(&d));
    s.check(
        deny_status(&c) && d.exit == 0 && d.status == 200,
        "the last good set stays in force: /debug 403, /hello 200 (the typo would have denied everything on port 8080)",
    );
    Ok(())
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
    println!("  # a new policy set, live (file-based LDS, no restart); a folder or files");
    println!("  make sandbox-apply POLICIES=\"envoy-config/policies {LIVE_POLICY}\"");
    println!("  # the PeerAuthentication step (the sample policies with or without 90-strict.yaml, live)");
    println!("  make sandbox-mode MODE=permissive     # or MODE=report-only, MODE=strict");
    println!("  # is it safe to enforce STRICT?");
    println!(
        "  {} strict-readiness --admin http://127.0.0.1:{} --access-log {} --port {} --min-uptime 0",
        shown(&sb.cli),
        p.admin,
        shown(&sb.access_log()),
        p.inbound
    );
    println!("  # stop everything");
    println!("  make sandbox-stop");
    Ok(())
}
