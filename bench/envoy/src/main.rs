//! `make bench-envoy` and `make bench-instructions`: what the meshauthz filter chain costs in a
//! real Envoy, against no filter and Envoy's native RBAC measured in the same run (see
//! BENCHMARKS.md).
//!
//! Every variant is one server Envoy (`--concurrency 1`) rendered from the sidecar template
//! with one documented transformation ([`shape`]). Layout:
//! - [`options`]: the command line;
//! - [`mix`]: the policy mixes, as Istio YAML (for meshauthz) and as istiod's native RBAC;
//! - [`variants`]: which filters and which policies each variant runs;
//! - [`shape`]: the template transformation;
//! - [`server`]: one started Envoy per variant, with its start-up time and CPU;
//! - [`load`]: the timed run (oha, Envoy's completed requests and CPU time);
//! - [`instructions`]: the instruction-count run (callgrind on a window of requests);
//! - [`report`]: medians, ratios and the Markdown tables.
//!
//! The no-filter variant (a) always runs; ratios are against it, in the same run.

mod instructions;
mod load;
mod mix;
mod options;
mod report;
mod server;
mod shape;
mod variants;

use std::time::Duration;

use meshauthz_harness::certs::Pki;
use meshauthz_harness::{Result, WorkDir};

use options::{Mode, Opts};
use server::{Launch, Server};

/// Ready bound for a plain Envoy (10,000 policies take about 9 s on an idle machine).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

fn timed(o: &Opts, work: &WorkDir, pki: &Pki) -> Result<String> {
    let launch = Launch {
        launcher: &[],
        ready_timeout: READY_TIMEOUT,
    };
    let mut servers: Vec<(Server, Vec<load::Sample>)> = Vec::new();
    for v in variants::variants(o) {
        let s = server::start(v, work.path(), pki, &o.cli, &launch)?;
        load::check_and_warm(o, pki, &s)?;
        eprintln!(
            "bench: {} ready in {:.2} s ({:.2} s CPU), checked",
            s.variant.key, s.started.ready_s, s.started.cpu_s
        );
        servers.push((s, Vec::new()));
    }
    for round in 1..=o.rounds {
        for (s, samples) in servers.iter_mut() {
            let sample = load::measure(o, pki, s)?;
            eprintln!(
                "bench: round {round} {:>14}: {:>8.0} req/s, {:>7.1} µs CPU/req",
                s.variant.key, sample.rps, sample.cpu_us_per_request
            );
            samples.push(sample);
        }
    }
    let rows: Vec<_> = servers
        .iter()
        .map(|(s, samples)| (&s.variant, &s.started, samples.as_slice()))
        .collect();
    if let Some(path) = &o.csv {
        std::fs::write(path, report::timed_csv(&rows)?)?;
    }
    report::timed(o, &rows)
}

fn overran(e: &meshauthz_harness::Error) -> bool {
    e.0.contains("overran")
}

fn instruction_counts(o: &Opts, work: &WorkDir, pki: &Pki) -> Result<String> {
    let mut counted = Vec::new();
    // One Envoy at a time: valgrind runs it on one core, the clients on the other.
    for v in variants::variants(o) {
        let launcher = instructions::launcher(work.path(), &v.key);
        let launch = Launch {
            launcher: &launcher,
            ready_timeout: instructions::READY_TIMEOUT,
        };
        let mut s = server::start(v, work.path(), pki, &o.cli, &launch)?;
        let c = match instructions::count(o, work.path(), pki, &s) {
            Ok(c) => c,
            // A variant too slow under valgrind (e.g. native RBAC at 1,000 policies matched
            // late) must not lose the others' counts: reported, left out of the table.
            Err(e) if overran(&e) => {
                eprintln!("bench: {}: left out: {e}", s.variant.key);
                continue;
            }
            Err(e) => return Err(e),
        };
        eprintln!(
            "bench: {:>14}: ready under valgrind in {:.0} s, {:.0} instructions/request",
            s.variant.key,
            c.ready_s,
            c.instructions as f64 / c.requests as f64
        );
        s.envoy.stop();
        counted.push((s.variant, c));
    }
    let rows: Vec<_> = counted.iter().map(|(v, c)| (v, c)).collect();
    report::instructions(o, &rows)
}

fn startup(o: &Opts, work: &WorkDir, pki: &Pki, repeats: usize) -> Result<String> {
    let launch = Launch {
        launcher: &[],
        ready_timeout: READY_TIMEOUT,
    };
    let mut rows = Vec::new();
    for v in variants::variants(o) {
        let mut runs = Vec::new();
        for _ in 0..repeats.max(1) {
            let mut s = server::start(v.clone(), work.path(), pki, &o.cli, &launch)?;
            s.envoy.stop();
            runs.push(s.started);
        }
        let each: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.2} s ({:.2} s CPU)", r.ready_s, r.cpu_s))
            .collect();
        eprintln!("bench: {:>14}: ready in {}", v.key, each.join(", "));
        rows.push((v, runs));
    }
    let rows: Vec<_> = rows.iter().map(|(v, r)| (v, r.as_slice())).collect();
    report::startup(&rows)
}

fn run() -> Result<()> {
    let o = options::parse(std::env::args().skip(1))?;
    let work = WorkDir::new("bench")?;
    let pki = Pki::generate(&work.path().join("certs"))?;
    let table = match o.mode {
        Mode::Timed => timed(&o, &work, &pki)?,
        Mode::Instructions => instruction_counts(&o, &work, &pki)?,
        Mode::Startup { repeats } => startup(&o, &work, &pki, repeats)?,
    };
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
            eprintln!("bench-envoy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
