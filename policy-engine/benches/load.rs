//! Loading cost (issue 12): what reading a plugin configuration and compiling it for the workload
//! costs, in time and in memory, as the module does it in `on_configure`
//! (`policy_engine::plugin_config::decode`, then `Engine::compile`).
//!
//! ```sh
//! cargo bench -p meshauthz-policy-engine --bench load            # native
//! cargo build --release -p meshauthz-policy-engine --bench load --target wasm32-wasip1 \
//!   && node policy-engine/benches/support/run-wasi.mjs target/wasm32-wasip1/release/deps/load-*.wasm
//! ```
//!
//! Policies: issue 12's heavy policies (`support/heavy.rs`). Memory is counted by a global
//! allocator (every byte the program asks for): *peak* is the most held at once above what was
//! held before the step (the configuration text included), *retained* what the compiled engine
//! keeps. In wasm32 the linear memory also shows (`memory.size`): it never shrinks, so the peak
//! of loading is what a VM keeps for good (Envoy runs one VM per worker thread).
//! A benchmark, not a test: it asserts nothing (`tests/load_budget.rs` pins the byte counts).

use std::hint::black_box;
use std::time::{Duration, Instant};

use peak_alloc::PeakAlloc;
use policy_engine::{plugin_config, Engine};

#[path = "support/heavy.rs"]
mod heavy;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// One load: times, and bytes above what was held before it: the peak of decoding, the peak of
/// the whole load, the decoded configuration, and what the compiled engine keeps.
struct Load {
    decode: Duration,
    compile: Duration,
    decode_peak: usize,
    load_peak: usize,
    decoded: usize,
    retained: usize,
    policies: usize,
}

fn load(text: &str) -> Load {
    let base = ALLOC.current_usage();
    ALLOC.reset_peak_usage();
    let t0 = Instant::now();
    let decoded = plugin_config::decode(text.as_bytes());
    let decode = t0.elapsed();
    let decode_peak = ALLOC.peak_usage().saturating_sub(base);
    let Ok((cfg, _warnings)) = decoded else {
        eprintln!("the heavy configuration was refused");
        std::process::exit(1);
    };
    let decoded_bytes = ALLOC.current_usage().saturating_sub(base);
    let workload = cfg.workload.unwrap_or_default();
    let t1 = Instant::now();
    // As the module does: the decoded policies are consumed, each dropped once compiled.
    let compiled = Engine::compile_owned(cfg.policies, &workload, &cfg.mesh);
    let compile = t1.elapsed();
    let load_peak = ALLOC.peak_usage().saturating_sub(base);
    let Ok((engine, compile_warnings)) = compiled else {
        eprintln!("the heavy configuration did not compile");
        std::process::exit(1);
    };
    drop(compile_warnings);
    drop(_warnings);
    drop(workload);
    // What the engine holds (the rest of the decoded configuration, a few small values, too).
    let retained = ALLOC.current_usage().saturating_sub(base);
    let policies = engine.policies().len();
    black_box(&engine);
    drop(engine);
    Load {
        decode,
        compile,
        decode_peak,
        load_peak,
        decoded: decoded_bytes,
        retained,
        policies,
    }
}

fn mb(bytes: usize) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[cfg(target_arch = "wasm32")]
fn linear_memory() -> String {
    format!(
        ", wasm linear memory {}",
        mb(core::arch::wasm32::memory_size::<0>() * 65536)
    )
}

#[cfg(not(target_arch = "wasm32"))]
fn linear_memory() -> String {
    String::new()
}

fn main() {
    // `cargo bench` passes `--bench`; a first number picks one row, a second the number of runs
    // (for wasm: one row and one run, since linear memory only grows: `-- 0 1`).
    let rows: &[(usize, usize)] = &[(1_000, 0), (0, 10_000), (1_000, 10_000)];
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let only = numbers.first().copied();
    let runs = numbers.get(1).copied().unwrap_or(5).max(1);
    for (row, &(applicable, other)) in rows.iter().enumerate() {
        if only.is_some_and(|o| o != row) {
            continue;
        }
        let text = heavy::plugin_config(applicable, other);
        // The generator's own work grows the linear memory too: shown apart.
        let before = linear_memory();
        let mut loads: Vec<Load> = (0..runs).map(|_| load(&text)).collect();
        loads.sort_by_key(|l| l.decode + l.compile);
        let Some(m) = loads.get(runs / 2) else {
            return;
        };
        println!(
            "{applicable} applicable + {other} other heavy policies ({} of JSON, {} B each; {} compiled): \
             decode {}, compile {}, total {} (median of {runs}); \
             peak {} (decode {}), decoded set {}, engine retained {} ({} B per applicable policy){}{}",
            mb(text.len()),
            text.len() / (applicable + other).max(1),
            m.policies,
            ms(m.decode),
            ms(m.compile),
            ms(m.decode + m.compile),
            mb(m.load_peak),
            mb(m.decode_peak),
            mb(m.decoded),
            mb(m.retained),
            m.retained / applicable.max(1),
            linear_memory(),
            if before.is_empty() {
                String::new()
            } else {
                format!(" (after generating the text, before loading:{})", before.trim_start_matches(", wasm linear memory"))
            },
        );
    }
}
