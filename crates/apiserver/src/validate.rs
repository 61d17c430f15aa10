//! Per-type strategy: what the server sets on create and what it validates beyond metadata.

use fellowship_apimachinery::{Cause, ResourceKind, meta};
use serde_json::{Value, json};

/// Type-specific changes on create: the defaults kube-apiserver applies, and state the server
/// owns.
pub fn prepare_create(kind: &ResourceKind, object: &mut Value) {
    match (kind.group, kind.plural) {
        ("", "namespaces") => {
            object["status"] = json!({"phase": "Active"});
            // The namespace finalizer is always there: it empties the namespace on delete.
            let mut finalizers: Vec<Value> = object
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if !finalizers.iter().any(|f| f == "kubernetes") {
                finalizers.push(json!("kubernetes"));
            }
            object["spec"] = json!({"finalizers": finalizers});
        }
        ("", "secrets") if object.get("type").is_none_or(|t| t == "") => {
            object["type"] = json!("Opaque");
        }
        ("", "services") if object.pointer("/spec/type").is_none_or(|t| t == "") => {
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("type".into(), json!("ClusterIP"));
            }
        }
        ("apps", "deployments" | "replicasets") => {
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                spec.entry("replicas").or_insert(json!(1));
            }
        }
        ("batch", "jobs") => job_defaults(object),
        // A new cluster has no known state: the cluster controller writes it (spec §1).
        ("federation", "clusters") => {
            object.as_object_mut().map(|o| o.remove("status"));
        }
        _ => {}
    }
}

/// A new Job as kube-apiserver makes it: one Pod at a time until one succeeds unless it
/// says otherwise, six retries, and, unless it brings its own (`manualSelector`), a
/// selector of its uid with the labels that go with it on its Pods and on itself. The
/// federation's job controller hands that selector to every member (spec §4.5).
fn job_defaults(job: &mut Value) {
    let uid = meta::meta_str(job, "uid").to_string();
    let name = meta::name(job).to_string();
    let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if !spec.contains_key("parallelism") && !spec.contains_key("completions") {
        spec.insert("completions".into(), json!(1));
    }
    spec.entry("parallelism").or_insert(json!(1));
    spec.entry("backoffLimit").or_insert(json!(6));
    spec.entry("completionMode").or_insert(json!("NonIndexed"));
    spec.entry("suspend").or_insert(json!(false));
    if spec.get("manualSelector") != Some(&json!(true)) {
        let mut labels = json!({"batch.kubernetes.io/controller-uid": uid, "controller-uid": uid});
        if name.len() <= 63 {
            labels["batch.kubernetes.io/job-name"] = json!(name);
            labels["job-name"] = json!(name);
        }
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
        let template = spec.entry("template").or_insert(json!({}));
        let template_labels = &mut template["metadata"]["labels"];
        if !template_labels.is_object() {
            *template_labels = json!({});
        }
        for (k, v) in labels.as_object().into_iter().flatten() {
            template_labels[k] = v.clone();
        }
    }
    let template_labels = spec
        .get("template")
        .and_then(|t| t.pointer("/metadata/labels"))
        .cloned();
    let own = job.pointer("/metadata/labels").and_then(Value::as_object);
    if own.is_none_or(|l| l.is_empty())
        && let Some(labels) = template_labels
    {
        meta::metadata_mut(job).insert("labels".into(), labels);
    }
}

/// Type-specific changes on update: what the server allocated on create stays when a
/// writer leaves it out, as kube-apiserver keeps a Service's cluster IPs and node ports
/// (so that a controller writing its own copy of a Service never fights the cluster).
pub fn prepare_update(kind: &ResourceKind, current: &Value, object: &mut Value) {
    if (kind.group, kind.plural) != ("", "services") {
        return;
    }
    let (Some(old), Some(new)) = (
        current.get("spec"),
        object.get_mut("spec").and_then(Value::as_object_mut),
    ) else {
        return;
    };
    for field in ["clusterIP", "clusterIPs", "healthCheckNodePort"] {
        if let Some(v) = old.get(field)
            && new.get(field).is_none_or(|n| n == "" || n.is_null())
        {
            new.insert(field.into(), v.clone());
        }
    }
    let old_ports = old.get("ports").and_then(Value::as_array);
    let new_ports = new.get_mut("ports").and_then(Value::as_array_mut);
    if let (Some(old_ports), Some(new_ports)) = (old_ports, new_ports) {
        for port in new_ports.iter_mut().filter(|p| p.get("nodePort").is_none()) {
            let same = old_ports.iter().find(|o| {
                o.get("port") == port.get("port")
                    && o.get("protocol").unwrap_or(&json!("TCP"))
                        == port.get("protocol").unwrap_or(&json!("TCP"))
            });
            if let Some(node_port) = same.and_then(|o| o.get("nodePort")) {
                port["nodePort"] = node_port.clone();
            }
        }
    }
}

/// Type-specific validation causes.
pub fn kind_causes(kind: &ResourceKind, object: &Value) -> Vec<Cause> {
    match (kind.group, kind.plural) {
        ("federation", "clusters") => cluster_causes(object),
        _ => Vec::new(),
    }
}

/// spec §1: `serverAddressByClientCIDRs` is required and each non-empty `clientCIDR` parses.
fn cluster_causes(object: &Value) -> Vec<Cause> {
    let field = "spec.serverAddressByClientCIDRs";
    let entries = object
        .pointer("/spec/serverAddressByClientCIDRs")
        .and_then(Value::as_array);
    let Some(entries) = entries.filter(|e| !e.is_empty()) else {
        return vec![Cause::required(field)];
    };
    let mut causes = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let cidr = e.get("clientCIDR").and_then(Value::as_str).unwrap_or("");
        if !cidr.is_empty() && !is_cidr(cidr) {
            causes.push(Cause::invalid(
                format!("{field}[{i}].clientCIDR"),
                cidr,
                "must be a valid CIDR",
            ));
        }
    }
    causes
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}
