//! Decoding `PeerAuthentication.spec`: `selector`, `mtls: {mode}`, `portLevelMtls` (keys are
//! ports, written as strings or, in YAML, as integers). Rules are checked in `validate/`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::authorization_policy::decode_selector;
use super::decode::Decoder;
use super::field_path::FieldPath;
use crate::model::{MtlsMode, PeerAuthenticationSpec};

const SPEC_FIELDS: &[&str] = &["selector", "mtls", "portLevelMtls"];

const MODES: &[(&str, MtlsMode)] = &[
    ("UNSET", MtlsMode::Unset),
    ("DISABLE", MtlsMode::Disable),
    ("PERMISSIVE", MtlsMode::Permissive),
    ("STRICT", MtlsMode::Strict),
];

pub(crate) fn decode_spec(dec: &mut Decoder, value: Option<&Value>) -> PeerAuthenticationSpec {
    let path = FieldPath::root().field("spec");
    let mut spec = PeerAuthenticationSpec::default();
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return spec;
    };
    let Some(map) = dec.object(value, &path, SPEC_FIELDS) else {
        return spec;
    };
    spec.selector = decode_selector(dec, map.get("selector"), &path.field("selector"));
    spec.mtls = match map.get("mtls") {
        None | Some(Value::Null) => None,
        Some(v) => Some(decode_mtls(dec, v, &path.field("mtls"))),
    };
    spec.port_level_mtls = match map.get("portLevelMtls") {
        None | Some(Value::Null) => None,
        Some(v) => decode_port_level_mtls(dec, v, &path.field("portLevelMtls")),
    };
    spec
}

/// `{mode: ...}`; `{}` and `{mode: null}` are UNSET.
fn decode_mtls(dec: &mut Decoder, value: &Value, path: &FieldPath) -> MtlsMode {
    let Some(map) = dec.object(value, path, &["mode"]) else {
        return MtlsMode::Unset;
    };
    dec.enumeration(map.get("mode"), &path.field("mode"), MODES)
        .unwrap_or_default()
}

/// Port keys must be integers (the API server converts them: "type conversion error" otherwise).
/// The range 1..65535 is checked by validation, like Istio's; a key that does not even fit the
/// model's `u32` (or is negative) is reported here with the same message.
fn decode_port_level_mtls(
    dec: &mut Decoder,
    value: &Value,
    path: &FieldPath,
) -> Option<BTreeMap<u32, MtlsMode>> {
    let map = dec.object_any_fields(value, path)?;
    let mut out = BTreeMap::new();
    let mut seen: BTreeMap<u32, &str> = BTreeMap::new();
    for (key, v) in map {
        let key_path = path.key(key);
        let mode = match v {
            Value::Null => MtlsMode::Unset,
            v => decode_mtls(dec, v, &key_path),
        };
        let Some(port) = parse_port_key(key) else {
            dec.error(
                &key_path,
                format!(
                    "type conversion error from string {key:?} to integer: portLevelMtls keys are port numbers (1..65535)"
                ),
            );
            continue;
        };
        let Some(port) = port else {
            dec.error(&key_path, "port must be in range 1..65535");
            continue;
        };
        if let Some(previous) = seen.insert(port, key) {
            dec.error(
                &key_path,
                format!("duplicate port {port}: also written as {previous:?}"),
            );
            continue;
        }
        out.insert(port, mode);
    }
    Some(out)
}

/// `None`: not an integer. `Some(None)`: an integer outside `u32` (negative or huge).
fn parse_port_key(key: &str) -> Option<Option<u32>> {
    let (negative, digits) = match key.as_bytes().first() {
        Some(b'-') => (true, key.get(1..)?),
        Some(b'+') => (false, key.get(1..)?),
        _ => (false, key),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if negative {
        return Some(if digits.bytes().all(|b| b == b'0') {
            Some(0)
        } else {
            None
        });
    }
    Some(digits.parse::<u32>().ok())
}
