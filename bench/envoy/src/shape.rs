//! The benchmark's one transformation of the sidecar template
//! (`envoy-config/envoy/server-http.yaml`): the route answers with a direct response 200 (no
//! upstream, so only the filter chain is measured), the access log is dropped, and each filter
//! chain keeps only the filters of the variant (meshauthz's network companions, the
//! `set_filter_state` of the peer SANs and `meshauthz_net`, only in meshauthz variants). The mTLS listener, the HCM settings and the
//! meshauthz filters are the template's own.

use std::path::Path;

use meshauthz_harness::{Error, Result};
use serde_json::{json, Value};

use crate::variants::Chain;

/// The no-op filter (see [`Chain::Noop`]).
fn noop_filter(module: &Path, work: &str) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "noop",
                "root_id": "noop",
                "vm_config": {
                    "vm_id": "noop",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": module.display().to_string()}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": work,
                },
            },
        },
    })
}

fn at<'a>(v: &'a mut Value, pointer: &str) -> Result<&'a mut Value> {
    v.pointer_mut(pointer)
        .ok_or_else(|| Error(format!("the server template has no {pointer}")))
}

fn list<'a>(v: &'a mut Value, pointer: &str) -> Result<&'a mut Vec<Value>> {
    at(v, pointer)?
        .as_array_mut()
        .ok_or_else(|| Error(format!("{pointer} in the server template is not a list")))
}

pub fn root_id(f: &Value) -> Option<&str> {
    f.pointer("/typed_config/config/root_id")?.as_str()
}

pub fn name(f: &Value) -> &str {
    f.get("name").and_then(Value::as_str).unwrap_or("")
}

/// The rendered server template, transformed for `chain`: `rbac` are the native RBAC filters
/// (put first in the HTTP chain for [`Chain::Rbac`]), `noop_module` the no-op filter's module.
pub fn shape(config: &str, chain: Chain, rbac: &[Value], noop_module: &Path) -> Result<String> {
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(config)?;
    let mut v: Value = serde_json::to_value(yaml)?;
    for fc in list(&mut v, "/static_resources/listeners/0/filter_chains")? {
        let filters = list(fc, "/filters")?;
        let keep_net = matches!(
            chain,
            Chain::Meshauthz { net: true, .. } | Chain::Native | Chain::Connection
        );
        let meshauthz = matches!(
            chain,
            Chain::Meshauthz { .. } | Chain::Native | Chain::Connection
        );
        filters.retain(|f| match name(f) {
            "envoy.filters.network.wasm" => keep_net,
            // meshauthz's companion (the peer certificate's SANs as filter state).
            "envoy.filters.network.set_filter_state" => meshauthz,
            _ => true,
        });
        let hcm = filters
            .iter_mut()
            .find(|f| name(f) == "envoy.filters.network.http_connection_manager")
            .ok_or_else(|| Error("the server template has no HTTP connection manager".into()))?;
        let tc = at(hcm, "/typed_config")?;
        if let Some(o) = tc.as_object_mut() {
            o.remove("access_log");
        }
        *at(tc, "/route_config/virtual_hosts/0/routes")? = json!([{
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
        }]);
        let http = list(tc, "/http_filters")?;
        http.retain(|f| match chain {
            Chain::NoFilter | Chain::Rbac | Chain::Noop { .. } => {
                name(f) == "envoy.filters.http.router"
            }
            // The native and connection templates as shipped.
            Chain::Native | Chain::Connection => true,
            Chain::Meshauthz {
                decide,
                log,
                enforce,
                ..
            } => match (name(f), root_id(f)) {
                ("envoy.filters.http.rbac", _) => log,
                // The request companion serves the decide stage only.
                ("envoy.filters.http.set_filter_state", _) => decide,
                (_, Some("meshauthz_http")) => decide,
                (_, Some("meshauthz_http_enforce")) => enforce,
                _ => true,
            },
        });
        if chain == Chain::Rbac {
            for (i, f) in rbac.iter().enumerate() {
                http.insert(i, f.clone());
            }
        }
        if let Chain::Noop {
            filters,
            calls,
            call,
            ..
        } = chain
        {
            for _ in 0..filters {
                http.insert(0, noop_filter(noop_module, &format!("{calls} {call}")));
            }
        }
    }
    Ok(serde_json::to_string_pretty(&v)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use std::collections::BTreeMap;

    use meshauthz_harness::envoy::{render, template};
    use meshauthz_harness::sidecar::HTTP_TEMPLATE;

    use super::*;
    use crate::mix::Mix;
    use crate::variants::FULL;

    fn rendered() -> String {
        let vars = BTreeMap::from([
            ("ADMIN_PORT", "1".to_string()),
            ("INBOUND_PORT", "2".to_string()),
            ("APP_PORT", "3".to_string()),
            ("CERT_DIR", "/certs".to_string()),
            ("MODULE", "/m.wasm".to_string()),
            ("PLUGIN_CONFIG_JSON", "{}".to_string()),
            ("ACCESS_LOG", "/dev/null".to_string()),
        ]);
        render(&template(HTTP_TEMPLATE).unwrap(), &vars).unwrap()
    }

    /// (network filter names, HTTP filter names-or-root-ids) of every filter chain.
    fn chains(config: &str) -> Vec<(Vec<String>, Vec<String>)> {
        let v: Value = serde_json::from_str(config).unwrap();
        let fcs = v["static_resources"]["listeners"][0]["filter_chains"]
            .as_array()
            .unwrap();
        fcs.iter()
            .map(|fc| {
                let filters = fc["filters"].as_array().unwrap();
                let net = filters.iter().map(|f| name(f).to_string()).collect();
                let hcm = &filters.last().unwrap()["typed_config"];
                assert!(hcm.get("access_log").is_none());
                assert_eq!(
                    hcm["route_config"]["virtual_hosts"][0]["routes"][0]["direct_response"]
                        ["status"],
                    200
                );
                let http = hcm["http_filters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| {
                        let action = f["typed_config"]["rules"]["action"].as_str();
                        match (root_id(f), action) {
                            (Some(r), _) => r.to_string(),
                            (None, Some(a)) => format!("{} {a}", name(f)),
                            (None, None) => name(f).to_string(),
                        }
                    })
                    .collect();
                (net, http)
            })
            .collect()
    }

    #[test]
    fn every_chain_keeps_exactly_the_variants_filters() {
        let hcm = "envoy.filters.network.http_connection_manager";
        let rbac = "envoy.filters.http.rbac";
        let router = "envoy.filters.http.router";
        let sfs = "envoy.filters.network.set_filter_state";
        let companion = "envoy.filters.http.set_filter_state";
        let realistic = Mix::Realistic {
            audit: true,
            first: false,
        }
        .rbac_filters(10);
        // (chain, native RBAC filters, network filters, HTTP filters)
        type Case<'a> = (Chain, &'a [Value], Vec<&'a str>, Vec<String>);
        let cases: [Case; 6] = [
            (Chain::NoFilter, &[], vec![hcm], vec![router.into()]),
            (
                Chain::Rbac,
                &Mix::Uniform { audit: false }.rbac_filters(3),
                vec![hcm],
                vec![format!("{rbac} ALLOW"), router.into()],
            ),
            (
                Chain::Rbac,
                &realistic,
                vec![hcm],
                vec![
                    format!("{rbac} LOG"),
                    format!("{rbac} DENY"),
                    format!("{rbac} ALLOW"),
                    router.into(),
                ],
            ),
            (
                FULL,
                &[],
                vec![sfs, "envoy.filters.network.wasm", hcm],
                vec![
                    companion.into(),
                    "meshauthz_http".into(),
                    format!("{rbac} LOG"),
                    "meshauthz_http_enforce".into(),
                    router.into(),
                ],
            ),
            (
                Chain::Meshauthz {
                    net: false,
                    decide: true,
                    log: false,
                    enforce: true,
                },
                &[],
                vec![sfs, hcm],
                vec![
                    companion.into(),
                    "meshauthz_http".into(),
                    "meshauthz_http_enforce".into(),
                    router.into(),
                ],
            ),
            (
                // m-rbaclog: no decide stage, so no request companion either.
                Chain::Meshauthz {
                    net: false,
                    decide: false,
                    log: true,
                    enforce: false,
                },
                &[],
                vec![sfs, hcm],
                vec![format!("{rbac} LOG"), router.into()],
            ),
        ];
        for (chain, filters, net, http) in cases {
            let got = chains(&shape(&rendered(), chain, filters, Path::new("/noop.wasm")).unwrap());
            assert_eq!(
                got.len(),
                2,
                "{chain:?}: both filter chains (mtls, plaintext)"
            );
            for (n, h) in got {
                assert_eq!(n, net, "{chain:?}");
                assert_eq!(h, http, "{chain:?}");
            }
        }
    }
}
