//! CEL expressions: compiled, and when accepted (within the cost budget) evaluated on a request.
//! First byte even: `<expression>\n<request JSON as the decision cases write it>`; odd: an
//! expression combined from fragments and a random request.
#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use meshauthz_fuzz::{cel, drive_cel, Request};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        let (source, request) = text.split_once('\n').unwrap_or((&text, "{}"));
        let request = serde_json::from_str(request).unwrap_or(serde_json::Value::Null);
        drive_cel(source, &Request::from_case(&request));
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(source) = cel(&mut u, 6) else {
        return;
    };
    let request = Request::arbitrary(&mut u).unwrap_or_default();
    drive_cel(&source, &request);
});
