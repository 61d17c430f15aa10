//! Discovery documents: `/api`, `/apis`, per-group and per-version resource lists, `/version`.

use fellowship_apimachinery::ResourceKind;
use serde_json::{Value, json};

use crate::registry::Registry;

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub fn core_versions(advertise: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": advertise}],
    })
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": versions,
        "preferredVersion": versions[0],
    })
}

pub fn groups(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry.groups().map(|(g, v)| group_doc(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(registry: &Registry, name: &str) -> Option<Value> {
    registry.groups().find(|(g, _)| *g == name).map(|(g, v)| {
        let mut doc = group_doc(g, v);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        doc
    })
}

fn resource_entries(k: &ResourceKind) -> Vec<Value> {
    let mut entry = json!({
        "name": k.plural,
        "singularName": k.singular,
        "namespaced": k.namespaced(),
        "kind": k.kind,
        "verbs": VERBS,
    });
    if !k.short_names.is_empty() {
        entry["shortNames"] = json!(k.short_names);
    }
    if !k.categories.is_empty() {
        entry["categories"] = json!(k.categories);
    }
    let mut entries = vec![entry];
    for sub in k.subresources {
        let (kind, group, version) = if *sub == "scale" {
            ("Scale", "autoscaling", "v1")
        } else {
            (k.kind, k.group, k.version)
        };
        let verbs: &[&str] = if *sub == "finalize" {
            &["update"]
        } else {
            &["get", "patch", "update"]
        };
        let mut e = json!({
            "name": format!("{}/{sub}", k.plural),
            "singularName": "",
            "namespaced": k.namespaced(),
            "kind": kind,
            "verbs": verbs,
        });
        if *sub == "scale" {
            e["group"] = json!(group);
            e["version"] = json!(version);
        }
        entries.push(e);
    }
    entries
}

pub fn resources(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    if !registry.has_version(group, version) {
        return None;
    }
    let resources: Vec<Value> = registry
        .resources(group, version)
        .into_iter()
        .flat_map(|k| resource_entries(k))
        .collect();
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// The aggregated discovery document (`apidiscovery.k8s.io`) of the core group (`/api`) or of
/// the named groups (`/apis`): every group, version and resource in one response, which
/// kubectl 1.30+ asks for instead of one request per group/version.
pub fn aggregated(registry: &Registry, core: bool, api_version: &str) -> Value {
    let groups: Vec<(&str, Vec<String>)> = if core {
        vec![("", vec!["v1".to_string()])]
    } else {
        registry.groups().map(|(g, v)| (g, v.to_vec())).collect()
    };
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = registry
                        .resources(group, v)
                        .into_iter()
                        .map(|k| aggregated_resource(k))
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let metadata = if group.is_empty() {
                json!({"creationTimestamp": null})
            } else {
                json!({"name": group, "creationTimestamp": null})
            };
            json!({"metadata": metadata, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": api_version,
        "metadata": {},
        "items": items,
    })
}

fn aggregated_resource(k: &ResourceKind) -> Value {
    let mut entries = resource_entries(k).into_iter();
    let main = entries.next().expect("a resource has its own entry");
    let kind = |e: &Value| {
        json!({
            "group": e.get("group").and_then(Value::as_str).unwrap_or(k.group),
            "version": e.get("version").and_then(Value::as_str).unwrap_or(k.version),
            "kind": e["kind"],
        })
    };
    let subresources: Vec<Value> = entries
        .map(|e| {
            let name = e["name"].as_str().unwrap_or("");
            json!({
                "subresource": name.split_once('/').map_or(name, |(_, s)| s),
                "responseKind": kind(&e),
                "verbs": e["verbs"],
            })
        })
        .collect();
    let mut r = json!({
        "resource": k.plural,
        "responseKind": kind(&main),
        "scope": if k.namespaced() { "Namespaced" } else { "Cluster" },
        "singularResource": k.singular,
        "verbs": main["verbs"],
    });
    for field in ["shortNames", "categories"] {
        if let Some(v) = main.get(field) {
            r[field] = v.clone();
        }
    }
    if !subresources.is_empty() {
        r["subresources"] = json!(subresources);
    }
    r
}

/// The aggregated discovery version an `Accept` header asks for, if any.
pub fn aggregated_version(accept: &str) -> Option<&'static str> {
    let asks = |v: &str| {
        accept.split(',').any(|t| {
            t.contains("g=apidiscovery.k8s.io")
                && t.contains("as=APIGroupDiscoveryList")
                && t.split(';').any(|p| p.trim() == format!("v={v}"))
        })
    };
    if asks("v2") {
        Some("v2")
    } else if asks("v2beta1") {
        Some("v2beta1")
    } else {
        None
    }
}

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": format!("v1.33.0-fellowship-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}
