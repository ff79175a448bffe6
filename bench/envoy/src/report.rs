//! Medians, per-round ratios and the Markdown tables.

use std::fmt::Write as _;

use meshauthz_harness::{Error, Result};

use crate::load::Sample;
use crate::mix::Mix;
use crate::options::Opts;
use crate::server::Started;
use crate::variants::{Chain, Variant, DECIDE_ONLY, FULL};

pub fn median(mut xs: Vec<f64>) -> f64 {
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

/// One variant's figures in a timed run: medians over rounds; ratio and added CPU per round
/// against the no-filter variant of the same round.
struct TimedRow {
    rps: f64,
    ratio: f64,
    ratio_lo: f64,
    ratio_hi: f64,
    cpu_us: f64,
    added_us: f64,
}

fn timed_row(samples: &[Sample], base: &[Sample]) -> TimedRow {
    let pairs: Vec<(Sample, Sample)> = samples.iter().zip(base).map(|(a, b)| (*a, *b)).collect();
    let ratios: Vec<f64> = pairs.iter().map(|(v, b)| v.rps / b.rps).collect();
    TimedRow {
        rps: median(samples.iter().map(|x| x.rps).collect()),
        ratio_lo: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratio_hi: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ratio: median(ratios),
        cpu_us: median(samples.iter().map(|x| x.cpu_us_per_request).collect()),
        added_us: median(
            pairs
                .iter()
                .map(|(v, b)| v.cpu_us_per_request - b.cpu_us_per_request)
                .collect(),
        ),
    }
}

fn baseline<'a>(rows: &[(&Variant, &Started, &'a [Sample])]) -> Result<&'a [Sample]> {
    rows.iter()
        .find(|(v, _, _)| v.chain == Chain::NoFilter)
        .map(|(_, _, s)| *s)
        .ok_or_else(|| Error("no baseline variant".into()))
}

/// The timed run's table.
pub fn timed(o: &Opts, rows: &[(&Variant, &Started, &[Sample])]) -> Result<String> {
    let base = baseline(rows)?;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} rounds x {} s per variant, {} keep-alive connections, medians over rounds; ratio and added CPU are per round against (a) of the same round.\n",
        o.rounds, o.seconds, o.connections
    );
    let _ = writeln!(
        t,
        "| variant | chain | policies | req/s | ratio to (a) | ratio min-max | server CPU µs/req | added µs/req | ready s | start-up CPU s |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|");
    for (v, started, samples) in rows {
        let r = timed_row(samples, base);
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.0} | {:.3} | {:.3}-{:.3} | {:.1} | {:+.1} | {:.2} | {:.2} |",
            v.key,
            v.what,
            v.policies(),
            r.rps,
            r.ratio,
            r.ratio_lo,
            r.ratio_hi,
            r.cpu_us,
            r.added_us,
            started.ready_s,
            started.cpu_s,
        );
    }
    Ok(t)
}

/// The timed run as CSV, one row per variant (what `bench/envoy/plot.py` draws): `chain` is
/// `none`, `rbac`, `full` (meshauthz's three stages), `decide` (one stage), `native` (the native
/// enforce stage) or `other`.
pub fn timed_csv(rows: &[(&Variant, &Started, &[Sample])]) -> Result<String> {
    let base = baseline(rows)?;
    let mut t = String::from(
        "key,chain,mix,audit,first,policies,rps,ratio,ratio_min,ratio_max,cpu_us,added_us,ready_s,startup_cpu_s\n",
    );
    for (v, started, samples) in rows {
        let r = timed_row(samples, base);
        let chain = match v.chain {
            Chain::NoFilter => "none",
            Chain::Rbac => "rbac",
            c if c == FULL => "full",
            c if c == DECIDE_ONLY => "decide",
            Chain::Native => "native",
            Chain::Connection => "connection",
            _ => "other",
        };
        let (mix, audit, first) = match v.mix {
            Mix::Uniform { audit } => ("uniform", audit, false),
            Mix::Realistic { audit, first } => ("realistic", audit, first),
            Mix::Principals => ("principals", false, false),
        };
        let _ = writeln!(
            t,
            "{},{chain},{mix},{audit},{first},{},{:.0},{:.4},{:.4},{:.4},{:.2},{:.2},{:.2},{:.2}",
            v.key,
            v.policies(),
            r.rps,
            r.ratio,
            r.ratio_lo,
            r.ratio_hi,
            r.cpu_us,
            r.added_us,
            started.ready_s,
            started.cpu_s,
        );
    }
    Ok(t)
}

/// One variant's instruction count: the measured window, and the start-up.
pub struct Counted {
    pub requests: u64,
    pub instructions: u64,
    pub ready_s: f64,
}

/// The instruction run's table: instructions per request and the ratio to no filter.
pub fn instructions(o: &Opts, rows: &[(&Variant, &Counted)]) -> Result<String> {
    let per = |c: &Counted| c.instructions as f64 / c.requests.max(1) as f64;
    let base = rows
        .iter()
        .find(|(v, _)| v.chain == Chain::NoFilter)
        .map(|(_, c)| per(c))
        .ok_or_else(|| Error("no baseline variant".into()))?;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "callgrind on the server Envoy: {} requests over {} keep-alive connections after {} warm-up requests; instructions of the whole Envoy process in the window (all threads).\n",
        o.requests, o.connections, o.warmup
    );
    let _ = writeln!(
        t,
        "| variant | chain | policies | instructions/req | vs (a) | added/req | ready under valgrind (s) |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|");
    for (v, c) in rows {
        let i = per(c);
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.1} k | {:.3} | {:+.1} k | {:.0} |",
            v.key,
            v.what,
            v.policies(),
            i / 1e3,
            i / base,
            (i - base) / 1e3,
            c.ready_s,
        );
    }
    Ok(t)
}

/// The start-up table: medians over repeats, and the module each variant loads.
pub fn startup(rows: &[(&Variant, &[Started])]) -> Result<String> {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Each variant's Envoy started {} times: wall time from process start to `/ready` 200, and the process's CPU time (all threads) then; medians.\n",
        rows.first().map(|(_, r)| r.len()).unwrap_or(0)
    );
    let _ = writeln!(
        t,
        "| variant | chain | policies | module bytes | ready s | start-up CPU s |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|");
    let current = meshauthz_harness::module_path()?;
    for (v, runs) in rows {
        let module = match v.chain {
            Chain::Meshauthz { .. } | Chain::Native | Chain::Connection => {
                let path = v.module.clone().unwrap_or_else(|| current.clone());
                std::fs::metadata(&path)?.len().to_string()
            }
            _ => "-".to_string(),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {:.2} | {:.2} |",
            v.key,
            v.what,
            v.policies(),
            module,
            median(runs.iter().map(|r| r.ready_s).collect()),
            median(runs.iter().map(|r| r.cpu_s).collect()),
        );
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }
}
