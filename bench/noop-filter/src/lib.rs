//! The floor `make bench-envoy` measures meshauthz against: a proxy-wasm HTTP filter (same SDK,
//! same V8 runtime) whose only work is K host calls of one kind per request, then continue.
//! Plugin configuration: `K` or `K KIND`, KIND one of
//! - `get` (default): `get_property(["connection", "mtls"])` (a value comes back),
//! - `header`: `get_http_request_header(":path")` (a value comes back),
//! - `headers`: `get_http_request_headers()` (all of them, serialized, come back),
//! - `set`: `set_property(["bench_noop"], "allow")` (filter state, nothing comes back),
//! - `count`: `increment_metric` of a counter defined at configuration (nothing comes back),
//! - `floor`: one `get_property(["connection", "mtls"])` and one `set_property`: the least an
//!   authorization filter does per request (read what it decides on, publish its verdict).
//!
//! An unreadable configuration means no calls. Never loaded outside the benchmark.

use std::cell::Cell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

#[derive(Clone, Copy, Default)]
enum Kind {
    #[default]
    Get,
    Header,
    Headers,
    Set,
    Count(u32),
    Floor,
}

#[derive(Clone, Copy, Default)]
struct Work {
    calls: u32,
    kind: Kind,
}

struct Root {
    work: Rc<Cell<Work>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let text = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let mut words = text.split_whitespace();
        let calls = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        let kind = match words.next() {
            Some("header") => Kind::Header,
            Some("headers") => Kind::Headers,
            Some("set") => Kind::Set,
            Some("floor") => Kind::Floor,
            Some("count") => match hostcalls::define_metric(MetricType::Counter, "bench_noop") {
                Ok(id) => Kind::Count(id),
                Err(_) => return false,
            },
            _ => Kind::Get,
        };
        self.work.set(Work { calls, kind });
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop {
            work: self.work.get(),
        }))
    }
}

struct Noop {
    work: Work,
}

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for _ in 0..self.work.calls {
            match self.work.kind {
                Kind::Get => {
                    let _ = hostcalls::get_property(vec!["connection", "mtls"]);
                }
                Kind::Header => {
                    let _ = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":path");
                }
                Kind::Headers => {
                    let _ = hostcalls::get_map_bytes(MapType::HttpRequestHeaders);
                }
                Kind::Set => {
                    let _ = hostcalls::set_property(vec!["bench_noop"], Some(b"allow"));
                }
                Kind::Count(id) => {
                    let _ = hostcalls::increment_metric(id, 1);
                }
                Kind::Floor => {
                    let _ = hostcalls::get_property(vec!["connection", "mtls"]);
                    let _ = hostcalls::set_property(vec!["bench_noop"], Some(b"allow"));
                }
            }
        }
        Action::Continue
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root {
            work: Rc::new(Cell::new(Work::default())),
        })
    });
}}
