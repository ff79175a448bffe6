//! Evaluation with arbitrary requests: policies and a request as the decision cases write them
//! (first byte even: `<policies>\n#request\n<request JSON>`), or random Istio objects and a random
//! request (first byte odd), through the loader, the compiler and `Engine::check`.
#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use meshauthz_fuzz::{drive_text, drive_value, istio_object, Request, REQUEST_MARKER};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        let (policies, request) = text.split_once(REQUEST_MARKER).unwrap_or((&text, "{}"));
        let request = serde_json::from_str(request).unwrap_or(serde_json::Value::Null);
        drive_text(policies, Some(&Request::from_case(&request)));
        return;
    }
    let mut u = Unstructured::new(rest);
    let mut objects = Vec::new();
    for _ in 0..u.int_in_range(1..=3u8).unwrap_or(1) {
        match istio_object(&mut u) {
            Ok(object) => objects.push(object),
            Err(_) => break,
        }
    }
    let request = Request::arbitrary(&mut u).unwrap_or_default();
    drive_value(&serde_json::Value::Array(objects), Some(&request));
});
