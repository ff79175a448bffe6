//! Issue 12's heavy policies, written once for the loading benchmark (`benches/load.rs`) and the
//! loading budget test (`tests/load_budget.rs`): up to 4 rules, 5 principals, namespaces with
//! `notIpBlocks`, 3 paths, ports, hosts with wildcards, two `when` keys, one policy in five with a
//! CEL condition; about 1.7 KB of JSON each.

use std::fmt::Write as _;

/// The workload the applicable policies select.
pub const NAMESPACE: &str = "foo";
pub const APP: &str = "echo";

/// Policy `i` as compact JSON, in `namespace`, selecting `app`. Policy names sort in index order;
/// one in ten is a DENY, the others ALLOW; policy `i` has `1 + i % 4` rules.
pub fn policy(i: usize, namespace: &str, app: &str) -> String {
    let mut out = String::with_capacity(2048);
    let action = if i % 10 == 9 { "DENY" } else { "ALLOW" };
    let _ = write!(
        out,
        r#"{{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{{"name":"heavy-{i:05}","namespace":"{namespace}"}},"spec":{{"selector":{{"matchLabels":{{"app":"{app}"}}}},"action":"{action}","rules":["#
    );
    for r in 0..=(i % 4) {
        if r > 0 {
            out.push(',');
        }
        let team = format!("team-{i}-{r}");
        let principals: Vec<String> = (0..5)
            .map(|k| format!(r#""cluster.local/ns/{team}/sa/app-{k}""#))
            .collect();
        let _ = write!(
            out,
            r#"{{"from":[{{"source":{{"principals":[{principals}]}}}},{{"source":{{"namespaces":["{team}","{team}-*"],"notIpBlocks":["10.{a}.0.0/16","192.168.{b}.0/24"]}}}}],"to":[{{"operation":{{"hosts":["api.{team}.example.com","*.{team}.svc.cluster.local"],"ports":["8080","8443"],"paths":["/api/v1/{team}/*","/api/v2/{team}/orders","/healthz"]}}}}],"when":[{{"key":"request.headers[x-tenant]","values":["{team}"]}},"#,
            principals = principals.join(","),
            a = i % 250,
            b = r,
        );
        if i % 5 == 0 && r == 0 {
            let _ = write!(
                out,
                r#"{{"key":"meshauthz.io/cel","values":["request.headers[\"x-tenant\"] == source.namespace && destination.port == 8443"]}}]}}"#
            );
        } else {
            let _ = write!(
                out,
                r#"{{"key":"source.ip","notValues":["10.99.{b}.0/24"]}}]}}"#,
                b = i % 250
            );
        }
    }
    out.push_str("]}}");
    out
}

/// A plugin configuration (the module's JSON) for workload `foo`/`app=echo` carrying
/// `applicable` heavy policies that select it, then `other` that do not: half in another
/// namespace, half in `foo` selecting another app.
pub fn plugin_config(applicable: usize, other: usize) -> String {
    let mut out = String::with_capacity((applicable + other) * 1800 + 256);
    out.push_str(r#"{"policies":["#);
    for i in 0..applicable + other {
        if i > 0 {
            out.push(',');
        }
        let (ns, app) = if i < applicable {
            (NAMESPACE, APP)
        } else if i % 2 == 0 {
            ("bar", APP)
        } else {
            (NAMESPACE, "other")
        };
        out.push_str(&policy(i, ns, app));
    }
    let _ = write!(
        out,
        r#"],"workload":{{"namespace":"{NAMESPACE}","labels":{{"app":"{APP}"}}}},"httpPorts":[8080]}}"#
    );
    out
}
