//! Configuration decoding, validation and compilation: the policy text as the CLI reads a file
//! (first byte even), or Istio objects with random fields and values (first byte odd) as JSON
//! (as the module reads its configuration) and as YAML.
#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use meshauthz_fuzz::{drive_text, drive_value, istio_object};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        drive_text(&String::from_utf8_lossy(rest), None);
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
    drive_value(&serde_json::Value::Array(objects.clone()), None);
    let documents: Vec<String> = objects
        .iter()
        .filter_map(|o| serde_yaml_ng::to_string(o).ok())
        .collect();
    drive_text(&documents.join("---\n"), None);
});
