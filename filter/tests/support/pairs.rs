//! Test encoder: string pairs as Envoy serializes a map property (`xds.node.metadata.LABELS`),
//! the format `attrs::decode_pairs` reads. One copy for the unit tests (`src/attrs.rs`) and the
//! integration tests (`tests/request_path.rs`), included by `#[path]`.

/// Encodes pairs like Envoy does: the count, each key and value length (u32 little-endian), then
/// each key and value NUL-terminated.
pub fn encode_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let mut out = len(pairs.len()).to_vec();
    for (k, v) in pairs {
        out.extend(len(k.len()));
        out.extend(len(v.len()));
    }
    for (k, v) in pairs {
        out.extend(k.as_bytes());
        out.push(0);
        out.extend(v.as_bytes());
        out.push(0);
    }
    out
}
