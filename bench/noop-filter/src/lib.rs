//! The floor `make bench-envoy` measures meshauthz against: a proxy-wasm HTTP filter (same SDK,
//! same V8 runtime) that only makes K `get_property(["connection", "mtls"])` host calls per
//! request, K being its plugin configuration (a decimal number, 0 when absent or unreadable),
//! and continues. Never loaded outside the benchmark.

use std::cell::Cell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel};

struct Root {
    calls: Rc<Cell<u32>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let k = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(0);
        self.calls.set(k);
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop {
            calls: self.calls.get(),
        }))
    }
}

struct Noop {
    calls: u32,
}

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for _ in 0..self.calls {
            let _ = hostcalls::get_property(vec!["connection", "mtls"]);
        }
        Action::Continue
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root {
            calls: Rc::new(Cell::new(0)),
        })
    });
}}
