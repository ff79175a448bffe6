//! `sandbox compose`: the compose sandbox on a real container engine, the migration story played
//! against it, everything stopped afterwards (see `meshauthz_sandbox::compose`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use meshauthz_harness::envoy::http10;
use meshauthz_harness::{envoy_binary, workspace_root, Error, Result};
use meshauthz_sandbox::compose::{wait_ready, Engine, Kind, Output, Project};
use meshauthz_sandbox::mesh::{
    compose_policy_files, compose_sources_policy, render_compose, render_compose_servers, shown,
    Mode, CLIENT_NS, CLIENT_SA, COMPOSE_SOURCES_POLICY,
};
use serde_json::Value;

use super::{
    check_denied, check_served, describe, field, is_true, logged, quote, sum_stats, Curl, Story,
};
use meshauthz_harness::client::CURL_RECV_ERROR;

/// `sandbox compose` flags.
pub struct Options {
    pub project: String,
    pub dir: PathBuf,
    pub work: PathBuf,
    pub server_admin: u16,
    pub client_admin: u16,
    pub tcp_admin: u16,
    pub keep: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            project: "meshauthz-sandbox".into(),
            dir: workspace_root().join("envoy-config/sandbox"),
            work: workspace_root().join("target/sandbox-compose"),
            server_admin: 19901,
            client_admin: 19902,
            tcp_admin: 19903,
            keep: false,
        }
    }
}

/// How long the containers may take to become ready.
const READY: Duration = Duration::from_secs(60);

/// The Envoy version of the binary the e2e suite runs (`.../1.40.0/Clean/RELEASE/...`).
fn envoy_version(envoy: &Path) -> Result<String> {
    let out = meshauthz_sandbox::compose::run(
        std::process::Command::new(envoy).arg("--version"),
        Duration::from_secs(30),
    )?;
    out.stdout
        .split('/')
        .find(|p| p.split('.').count() == 3 && p.split('.').all(|n| n.parse::<u32>().is_ok()))
        .map(str::to_string)
        .ok_or_else(|| {
            Error(format!(
                "no version in `envoy --version`: {}",
                out.stdout.trim()
            ))
        })
}

/// Build the local images (podman, or `MESHAUTHZ_LOCAL_IMAGES=1` with Docker); returns the
/// compose variables naming them. With Docker the compose file's defaults (the official images)
/// are used.
fn images(engine: &Engine, work: &Path) -> Result<Vec<(String, String)>> {
    let local = engine.kind == Kind::Podman
        || std::env::var("MESHAUTHZ_LOCAL_IMAGES").is_ok_and(|v| v == "1");
    if !local {
        println!("images: the compose file's defaults (envoyproxy/envoy:v1.40.0, curlimages/curl)");
        return Ok(Vec::new());
    }
    let envoy = envoy_binary()?;
    let version = envoy_version(&envoy)?;
    let envoy_tag = format!("localhost/meshauthz-sandbox-envoy:{version}");
    let built = engine.build_scratch_image(
        work,
        &envoy_tag,
        &[(envoy.clone(), "/usr/local/bin/envoy")],
        &[],
        &["/usr/local/bin/envoy"],
    )?;
    println!(
        "images: {envoy_tag} {} (FROM scratch: {} and the glibc files ldd lists)",
        if built { "built" } else { "up to date" },
        shown(&envoy)
    );
    let curl = PathBuf::from("/usr/bin/curl");
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| Error("no sleep binary (coreutils) to put in the curl image".into()))?;
    if !curl.is_file() {
        return Err(Error("no /usr/bin/curl to put in the curl image".into()));
    }
    let curl_tag = "localhost/meshauthz-sandbox-curl:latest".to_string();
    let built = engine.build_scratch_image(
        work,
        &curl_tag,
        &[(curl, "/usr/bin/curl"), (sleep, "/usr/bin/sleep")],
        &[("/etc/nsswitch.conf", "hosts: files dns\n")],
        &["/usr/bin/curl"],
    )?;
    println!(
        "images: {curl_tag} {} (FROM scratch: this machine's curl and sleep with their libraries)",
        if built { "built" } else { "up to date" }
    );
    Ok(vec![
        ("MESHAUTHZ_ENVOY_IMAGE".into(), envoy_tag),
        ("MESHAUTHZ_CURL_IMAGE".into(), curl_tag),
    ])
}

/// Copy the compose file and the application's configuration into `dir` (when it is not the
/// folder they live in), so that a run there uses its own `generated/`.
fn prepare_dir(dir: &Path) -> Result<()> {
    let src = workspace_root().join("envoy-config/sandbox");
    fs::create_dir_all(dir)?;
    if fs::canonicalize(dir)? != fs::canonicalize(&src)? {
        for f in ["docker-compose.yaml", "app.yaml"] {
            fs::copy(src.join(f), dir.join(f))?;
        }
    }
    Ok(())
}

pub fn main(o: &Options, cli: &Path) -> Result<ExitCode> {
    fs::create_dir_all(&o.work)?;
    let engine = match Engine::detect(&o.work) {
        Ok(e) => e,
        Err(reason) => {
            println!("sandbox compose: skipped: no container engine can run here: {reason}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!(
        "sandbox compose: engine {} ({}){}",
        engine.program,
        engine.compose_name(),
        engine
            .env
            .iter()
            .map(|(k, v)| format!(", {k}={}", shown(Path::new(v))))
            .collect::<String>()
    );
    let mut vars = images(&engine, &o.work)?;
    // One container run: whether this engine can run a container at all.
    if let Some((_, image)) = vars.iter().find(|(k, _)| k == "MESHAUTHZ_ENVOY_IMAGE") {
        let probe = meshauthz_sandbox::compose::run(
            &mut engine.cmd([
                "run",
                "--rm",
                "--network",
                "none",
                image.as_str(),
                "--version",
            ]),
            Duration::from_secs(120),
        )?;
        if !probe.ok() {
            println!(
                "sandbox compose: skipped: no container engine can run here: {} run failed: {}",
                engine.program,
                probe.last_line()
            );
            return Ok(ExitCode::SUCCESS);
        }
    }
    vars.extend([
        (
            "MESHAUTHZ_SERVER_ADMIN_PORT".to_string(),
            o.server_admin.to_string(),
        ),
        (
            "MESHAUTHZ_CLIENT_ADMIN_PORT".to_string(),
            o.client_admin.to_string(),
        ),
        (
            "MESHAUTHZ_TCP_ADMIN_PORT".to_string(),
            o.tcp_admin.to_string(),
        ),
    ]);
    prepare_dir(&o.dir)?;
    let generated = o.dir.join("generated");
    render_compose(&generated, cli, Mode::Permissive, &[])?;
    println!("rendered {}", shown(&generated));

    let mut project = Project::new(engine, &o.project, &o.dir, vars);
    let played = up_and_play(&mut project, o, cli, &generated);
    let result = match played {
        Ok(ok) if o.keep => {
            project_kept(&project, o);
            std::mem::forget(project);
            Ok(ok)
        }
        Ok(ok) => stop(&mut project).map(|()| ok),
        Err(e) => {
            let _ = stop(&mut project);
            Err(e)
        }
    };
    Ok(if result? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `sandbox compose-down`: take the project down (containers and networks), whatever left it.
pub fn down(o: &Options) -> Result<ExitCode> {
    let engine = match Engine::detect(&o.work) {
        Ok(e) => e,
        Err(reason) => {
            println!("sandbox compose: nothing to stop: no container engine here ({reason})");
            return Ok(ExitCode::SUCCESS);
        }
    };
    prepare_dir(&o.dir)?;
    let mut project = Project::new(engine, &o.project, &o.dir, Vec::new());
    stop(&mut project)?;
    Ok(ExitCode::SUCCESS)
}

fn stop(project: &mut Project) -> Result<()> {
    project.down()?;
    let (containers, networks) = project.leftovers()?;
    println!(
        "sandbox compose: stopped; project {} has {} containers and {} networks left",
        project.name,
        containers.len(),
        networks.len()
    );
    Ok(())
}

fn project_kept(project: &Project, o: &Options) {
    println!("\nThe compose sandbox is running (STRICT step). Try by hand:");
    let e = &project.engine;
    if let Some((k, v)) = e.env.first() {
        println!("  export {k}={v}");
    }
    let name = |s: &str| project.container(s).unwrap_or_else(|_| s.to_string());
    println!(
        "  {} exec {} curl -sS http://client:8000/hello          # in-mesh: 200",
        e.program,
        name("sleep")
    );
    println!(
        "  {} exec {} curl -sS http://client:8000/admin          # 403 RBAC: access denied",
        e.program,
        name("sleep")
    );
    println!(
        "  {} exec {} curl -sS http://server:8080/hello         # plaintext: reset in STRICT",
        e.program,
        name("legacy")
    );
    println!(
        "  {} logs {}                          # the access log",
        e.program,
        name("server")
    );
    println!(
        "  curl -s 'http://127.0.0.1:{}/stats?filter=meshauthz'",
        o.server_admin
    );
    println!("  make sandbox-compose-stop");
}

/// Restart the server sidecars (a new configuration) and wait until they are ready and the client
/// sidecar sends to the server's new address (a restarted container gets a new address; the
/// client's `STRICT_DNS` cluster picks it up at its next refresh, every 5 s). podman 4.3's DNS
/// (aardvark-dns 1.4) was seen to answer nothing, or time out for up to 40 s, after restarts, so
/// the client must keep the new address for 12 s (two refreshes) before the story goes on.
fn restart_servers(project: &Project, o: &Options) -> Result<()> {
    project.restart("server")?;
    project.restart("server-tcp")?;
    wait_all_ready(project, o)?;
    let server = project.address("server")?;
    let want = format!("server_mtls::{server}:8080::health_flags::healthy");
    let settled = Duration::from_secs(12);
    let deadline = Instant::now() + READY + READY;
    let mut since: Option<Instant> = None;
    loop {
        let clusters = http10(o.client_admin, "GET", "/clusters")
            .map(|(_, body)| body)
            .unwrap_or_default();
        let hosts: Vec<&str> = clusters
            .lines()
            .filter(|l| l.contains("::health_flags::"))
            .collect();
        if hosts == [want.as_str()] {
            let t = *since.get_or_insert_with(Instant::now);
            if t.elapsed() >= settled {
                break;
            }
        } else {
            since = None;
        }
        if Instant::now() > deadline {
            return Err(Error(format!(
                "the client sidecar did not settle on the server's address {server} within {:?}: {hosts:?}",
                READY + READY
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // The first connections from the client sidecar to a restarted server have been seen to
    // time out for a few seconds (podman 4.3); wait until the in-mesh path answers.
    let start = Instant::now();
    let mut first = None;
    loop {
        let out = http_code(project, "sleep", "http://client:8000/ready-probe")?;
        let code = out.stdout.trim().to_string();
        if code == "200" {
            if let Some(f) = first {
                println!(
                    "  (the in-mesh path answered {:.1} s after the restart; before: {f})",
                    start.elapsed().as_secs_f64()
                );
            }
            return Ok(());
        }
        first.get_or_insert_with(|| format!("HTTP {code}"));
        if Instant::now() > start + READY {
            return Err(Error(format!(
                "the in-mesh path (sleep -> client:8000 -> server:8080) did not answer 200 within {READY:?} of the restart: HTTP {code} {}",
                out.last_line()
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `curl` in the container `service` to `url`, 3 s at most: standard output is the HTTP status.
fn http_code(project: &Project, service: &str, url: &str) -> Result<Output> {
    project.exec(
        service,
        &[
            "curl",
            "-sS",
            "-m",
            "3",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            url,
        ],
    )
}

fn wait_all_ready(project: &Project, o: &Options) -> Result<()> {
    for (service, port) in [
        ("server", o.server_admin),
        ("server-tcp", o.tcp_admin),
        ("client", o.client_admin),
    ] {
        if !wait_ready(port, READY) {
            return Err(Error(format!(
                "{service} not ready on 127.0.0.1:{port} after {READY:?}; its last lines:\n{}",
                project.log_tail(service, 30)
            )));
        }
    }
    Ok(())
}

fn up_and_play(project: &mut Project, o: &Options, cli: &Path, generated: &Path) -> Result<bool> {
    println!(
        "$ {} -p {} up -d",
        project.engine.compose_name(),
        project.name
    );
    project.up()?;
    wait_all_ready(project, o)?;
    // The application answers on the compose network (and the callers' image resolves names).
    let deadline = Instant::now() + READY;
    loop {
        let out = http_code(project, "legacy", "http://echo:8090/")?;
        if out.stdout.trim() == "200" {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error(format!(
                "the application (echo:8090) did not answer the legacy container: {}; echo's last lines:\n{}",
                out.last_line(),
                project.log_tail("echo", 20)
            )));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut addresses = Vec::new();
    for service in ["echo", "server", "client", "sleep", "legacy", "outsider"] {
        addresses.push((service, project.address(service)?));
    }
    for (service, a) in &addresses {
        println!("  {service:<10} {a}");
    }
    let addr = |s: &str| {
        addresses
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, a)| a.clone())
            .unwrap_or_default()
    };
    // The sources policy needs the addresses: render it, re-render the servers, restart them.
    let policy_dir = generated.join("policies");
    fs::create_dir_all(&policy_dir)?;
    let sources = policy_dir.join(COMPOSE_SOURCES_POLICY);
    fs::write(
        &sources,
        compose_sources_policy(&addr("client"), &addr("legacy"))?,
    )?;
    let extra = vec![sources.clone()];
    render_compose_servers(
        generated,
        cli,
        &compose_policy_files(Mode::Permissive, &extra)?,
    )?;
    // A restarted container gets a new address: wait until the client sidecar uses it.
    restart_servers(project, o)?;
    story(
        project,
        o,
        cli,
        generated,
        &extra,
        &addr("client"),
        &addr("legacy"),
        &addr("outsider"),
    )
}

fn exec_curl(s: &Story, project: &Project, service: &str, args: &[&str]) -> Result<Curl> {
    let mut all = vec!["curl", "-sS", "-m", "5", "-w", r"\n%{http_code}"];
    all.extend_from_slice(args);
    s.run(&format!(
        "{} exec {service} {}",
        project.engine.compose_name(),
        all.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
    ));
    let out: Output = project.exec(service, &all)?;
    let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", &out.stdout));
    Ok(Curl {
        exit: out.code.unwrap_or(-1),
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
        stderr: out.stderr.trim().to_string(),
    })
}

/// The server's access-log lines (JSON objects on its stdout).
fn access_lines(project: &Project) -> Vec<(String, Value)> {
    project
        .stdout("server")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v.get("method").is_some())
                .map(|v| (l.to_string(), v))
        })
        .collect()
}

/// Wait (5 s) for an access-log entry after `mark` lines with this method and path.
fn log_entry(project: &Project, mark: usize, method: &str, path: &str) -> Option<(String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = access_lines(project)
            .into_iter()
            .skip(mark)
            .find(|(_, v)| field(v, "method") == method && field(v, "path") == path);
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a caller saw; the body too when it is not a 200 (Envoy's reason for a 503).
fn shown_reply(c: &Curl) -> String {
    if c.exit == 0 && c.status != 200 {
        format!("{}: {}", describe(c), c.body)
    } else {
        describe(c)
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the story reads each of these once; a struct would only rename them"
)]
fn story(
    project: &Project,
    o: &Options,
    cli: &Path,
    generated: &Path,
    extra: &[PathBuf],
    client_addr: &str,
    legacy_addr: &str,
    outsider_addr: &str,
) -> Result<bool> {
    let c = project.engine.compose_name();
    let client_id = format!("spiffe://cluster.local/ns/{CLIENT_NS}/sa/{CLIENT_SA}");
    let mut s = Story::default();
    println!("\n==== meshauthz compose sandbox: an mTLS migration, step by step ====");
    println!(
        "  echo        the application (Envoy: JSON echo of the request on 8090, TCP echo on 9090)"
    );
    println!("  server      server sidecar of foo/app=echo, server:8080 -> echo:8090, admin 127.0.0.1:{}", o.server_admin);
    println!("  client      client sidecar of {client_id} at {client_addr}, client:8000 -> mTLS -> server:8080");
    println!("  sleep       the in-mesh application, calls client:8000");
    println!("  legacy      a plaintext caller outside the mesh at {legacy_addr}");
    println!("  outsider    another plaintext caller at {outsider_addr}");
    println!(
        "  policies    envoy-config/policies/ (PERMISSIVE, AUDIT, DENY /admin) and {}",
        shown(&extra.first().cloned().unwrap_or_default())
    );

    // 1. In-mesh call.
    s.step("In-mesh call: sleep -> client sidecar -> mTLS -> server sidecar -> echo, across containers");
    let mark = access_lines(project).len();
    let r = exec_curl(&s, project, "sleep", &["http://client:8000/hello"])?;
    s.saw(&shown_reply(&r));
    super::check_in_mesh(
        &mut s,
        &r,
        &client_id,
        log_entry(project, mark, "GET", "/hello"),
    );

    // 2. Legacy plaintext call.
    s.step("Legacy call: a plaintext container outside the mesh -> server sidecar (PERMISSIVE)");
    let mark = access_lines(project).len();
    let r = exec_curl(&s, project, "legacy", &["http://server:8080/legacy"])?;
    check_served(
        &mut s,
        &r,
        "the plaintext call to the PERMISSIVE port succeeds (200)",
    );
    super::check_audited_legacy(&mut s, log_entry(project, mark, "GET", "/legacy"));

    // 3. Counters.
    let stats = super::counters_step(&mut s, o.server_admin)?;
    let accepted = sum_stats(&stats, "wasmcustom.meshauthz.plaintext.8080", ".accepted");
    s.check(
        accepted >= 1,
        &format!(
            "wasmcustom.meshauthz.plaintext.8080.accepted counts the legacy caller ({accepted})"
        ),
    );
    s.run(&format!("{c} logs server | grep '\"audit\":true'"));
    let audited: Vec<String> = access_lines(project)
        .into_iter()
        .filter(|(_, v)| is_true(v.get("audit")))
        .map(|(l, _)| l)
        .collect();
    super::check_audited_lines(&mut s, &audited, &client_id);

    // 4. Source addresses.
    s.step(
        "Source addresses (ipBlocks): only the client sidecar's and legacy's addresses are allowed",
    );
    s.saw(&format!(
        "{}: ALLOW from ipBlocks {client_addr}/32, {legacy_addr}/32",
        COMPOSE_SOURCES_POLICY
    ));
    let mark = access_lines(project).len();
    let r = exec_curl(&s, project, "outsider", &["http://server:8080/legacy"])?;
    check_denied(
        &mut s,
        &r,
        &format!("the outsider ({outsider_addr}) gets 403 RBAC: access denied"),
    );
    let entry = log_entry(project, mark, "GET", "/legacy");
    if let Some(v) = logged(&mut s, entry, "the outsider's GET /legacy") {
        s.check(
            v.get("code").and_then(Value::as_u64) == Some(403)
                && field(&v, "decision").starts_with("deny"),
            "its access-log line records the denial (code 403, decision deny)",
        );
    }
    let r = exec_curl(&s, project, "legacy", &["http://server:8080/legacy"])?;
    check_served(
        &mut s,
        &r,
        &format!("the legacy caller ({legacy_addr}) is still allowed (200)"),
    );

    // 5. STRICT.
    s.step("Switch the namespace to STRICT (90-strict.yaml), restart the server sidecars");
    s.run(&format!(
        "meshauthz plugin-config ... {} > {}",
        compose_policy_files(Mode::Strict, extra)?
            .iter()
            .map(|p| shown(p))
            .collect::<Vec<_>>()
            .join(" "),
        shown(&generated.join("plugin-config.json"))
    ));
    render_compose_servers(generated, cli, &compose_policy_files(Mode::Strict, extra)?)?;
    s.run(&format!("{c} restart server server-tcp"));
    restart_servers(project, o)?;
    let r = exec_curl(&s, project, "legacy", &["http://server:8080/legacy"])?;
    s.saw(&describe(&r));
    s.check(
        r.exit == CURL_RECV_ERROR && r.stderr.contains("reset by peer"),
        "the legacy plaintext call is reset (curl exit 56, Connection reset by peer)",
    );
    let r = exec_curl(&s, project, "sleep", &["http://client:8000/hello"])?;
    check_served(&mut s, &r, "the in-mesh call still succeeds (200)");
    super::check_plaintext_rejected(&mut s, o.server_admin)?;

    // 6. DENY.
    s.step("A DENY rule: nobody reaches /admin on port 8080, whatever the path tricks");
    let mark = access_lines(project).len();
    let r = exec_curl(&s, project, "sleep", &["http://client:8000/admin"])?;
    check_denied(
        &mut s,
        &r,
        "GET /admin via the client sidecar: 403 RBAC: access denied",
    );
    let r = exec_curl(
        &s,
        project,
        "sleep",
        &["--path-as-is", "http://client:8000/x/%2e%2e/admin"],
    )?;
    check_denied(&mut s, &r, "GET /x/%2e%2e/admin: 403 RBAC: access denied");
    super::check_admin_denial_logged(&mut s, log_entry(project, mark, "GET", "/admin"));

    if !s.summary() {
        for service in ["server", "client"] {
            println!(
                "--- {service} (last lines) ---\n{}",
                project.log_tail(service, 20)
            );
        }
        let clusters = http10(o.client_admin, "GET", "/clusters")
            .map(|(_, body)| body)
            .unwrap_or_default();
        println!(
            "--- client sidecar hosts (server at {}) ---\n{}",
            project.address("server").unwrap_or_default(),
            clusters
                .lines()
                .filter(|l| l.contains("::health_flags::") || l.contains("::cx_connect_fail::"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(s.failed.is_empty())
}
