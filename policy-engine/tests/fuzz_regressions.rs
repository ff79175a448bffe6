//! Inputs the fuzz targets (`make fuzz`, fuzz/) found, kept as regression tests: each once
//! crashed or hung the loader, the compiler or the engine.

use policy_engine::{load_str, LoadOptions};

/// `fuzz/` target `policy`: a YAML alias to an unknown anchor made serde_yaml_ng 0.10 resume
/// mid-document and panic ("unexpected end of mapping"), crashing `meshauthz validate`.
#[test]
fn unknown_yaml_anchor_is_an_error_not_a_panic() {
    for text in [
        "a: {b: *X}\n",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {name: b, namespace: ns1}\nspec:\n  portLevelMtls:\n    9000: {mode: *NSET}\n",
        "kind: x\n---\na: [*X]\n---\nkind: y\n",
    ] {
        let Err(errors) = load_str(text, &LoadOptions::default()) else {
            panic!("`{text}` should not load");
        };
        let shown = errors.to_string();
        assert!(shown.contains("unknown anchor"), "{shown}");
    }
}
