//! The destination port is the listener's own port, and a golden names ports such as 80 or 8000
//! that a test cannot bind. Each port the golden names gets its own listener on a free loopback
//! port, and the port number is rewritten consistently on both sides: in the policies
//! (`operation.ports`, `operation.notPorts`, `when` `destination.port` values and notValues) and in
//! the generated filters (every `destinationPort`). The mapping is one-to-one, so every
//! comparison the golden makes between a port and a listener is preserved.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::rules::{self, Part, Site};

/// The ports a golden names, on both sides.
pub fn named_ports(policies: &[Value], filters: &[Value]) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for doc in policies {
        visit_policy_ports(doc, &mut |s| {
            if let Ok(p) = s.parse::<u16>() {
                ports.insert(p);
            }
        });
    }
    for f in filters {
        collect_destination_ports(f, &mut ports);
    }
    ports
}

/// Rewrite the policies' port strings through `map`.
pub fn rewrite_policies(policies: &mut [Value], map: &BTreeMap<u16, u16>) {
    for doc in policies {
        visit_policy_ports_mut(doc, map);
    }
}

/// Rewrite every `destinationPort` of the filters through `map`.
pub fn rewrite_filters(filters: &mut [Value], map: &BTreeMap<u16, u16>) {
    for f in filters {
        rewrite_destination_ports(f, map);
    }
}

/// The fields of a site that hold ports: `operation.ports` / `notPorts`, and a `when` on
/// `destination.port`'s `values` / `notValues`.
fn port_fields(site: &Site, at: &Value) -> &'static [&'static str] {
    match site.part {
        Part::Operation => &["ports", "notPorts"],
        Part::Condition if at.get("key").and_then(Value::as_str) == Some("destination.port") => {
            &["values", "notValues"]
        }
        _ => &[],
    }
}

fn visit_policy_ports(doc: &Value, f: &mut dyn FnMut(&str)) {
    for site in rules::sites(doc) {
        let Some(at) = doc.pointer(&site.pointer) else {
            continue;
        };
        for field in port_fields(&site, at) {
            rules::strings(Some(at), field).for_each(&mut *f);
        }
    }
}

fn map_list(list: Option<&mut Value>, map: &BTreeMap<u16, u16>) {
    let Some(Value::Array(items)) = list else {
        return;
    };
    for item in items {
        let mapped = item
            .as_str()
            .and_then(|s| s.parse::<u16>().ok())
            .and_then(|p| map.get(&p));
        if let Some(to) = mapped {
            *item = Value::String(to.to_string());
        }
    }
}

fn visit_policy_ports_mut(doc: &mut Value, map: &BTreeMap<u16, u16>) {
    for site in rules::sites(doc) {
        let Some(at) = doc.pointer_mut(&site.pointer) else {
            continue;
        };
        for field in port_fields(&site, at) {
            map_list(at.get_mut(*field), map);
        }
    }
}

fn collect_destination_ports(v: &Value, out: &mut BTreeSet<u16>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == "destinationPort" || k == "destination_port" {
                    if let Some(p) = child.as_u64().and_then(|p| u16::try_from(p).ok()) {
                        out.insert(p);
                    }
                } else {
                    collect_destination_ports(child, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| collect_destination_ports(c, out)),
        _ => {}
    }
}

fn rewrite_destination_ports(v: &mut Value, map: &BTreeMap<u16, u16>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if k == "destinationPort" || k == "destination_port" {
                    let mapped = child
                        .as_u64()
                        .and_then(|p| u16::try_from(p).ok())
                        .and_then(|p| map.get(&p));
                    if let Some(to) = mapped {
                        *child = Value::from(*to);
                    }
                } else {
                    rewrite_destination_ports(child, map);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite_destination_ports(c, map)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rewrites_both_sides_consistently() {
        let mut policies = vec![json!({"spec": {"rules": [
            {"to": [{"operation": {"ports": ["80", "90"], "notPorts": ["8000"], "methods": ["80"]}}],
             "when": [{"key": "destination.port", "values": ["91"], "notValues": ["80"]},
                      {"key": "request.headers[x]", "values": ["80"]}]}]}})];
        let mut filters = vec![
            json!({"typedConfig": {"rules": {"policies": {"p": {"permissions": [
            {"orRules": {"rules": [{"destinationPort": 80}, {"destinationPort": 90}]}},
            {"header": {"name": "x", "stringMatch": {"exact": "80"}}}]}}}}}),
        ];
        assert_eq!(
            named_ports(&policies, &filters)
                .into_iter()
                .collect::<Vec<_>>(),
            vec![80, 90, 91, 8000]
        );
        let map: BTreeMap<u16, u16> = [(80, 40080), (90, 40090), (91, 40091), (8000, 48000)]
            .into_iter()
            .collect();
        rewrite_policies(&mut policies, &map);
        rewrite_filters(&mut filters, &map);
        let rule = &policies[0]["spec"]["rules"][0];
        assert_eq!(
            rule["to"][0]["operation"]["ports"],
            json!(["40080", "40090"])
        );
        assert_eq!(rule["to"][0]["operation"]["notPorts"], json!(["48000"]));
        assert_eq!(rule["to"][0]["operation"]["methods"], json!(["80"]));
        assert_eq!(rule["when"][0]["values"], json!(["40091"]));
        assert_eq!(rule["when"][0]["notValues"], json!(["40080"]));
        assert_eq!(rule["when"][1]["values"], json!(["80"]));
        let perms = &filters[0]["typedConfig"]["rules"]["policies"]["p"]["permissions"];
        assert_eq!(
            perms[0]["orRules"]["rules"][1]["destinationPort"],
            json!(40090)
        );
        assert_eq!(perms[1]["header"]["stringMatch"]["exact"], json!("80"));
    }
}
