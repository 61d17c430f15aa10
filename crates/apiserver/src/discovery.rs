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
