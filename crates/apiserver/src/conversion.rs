//! Conversion between the versions of one resource. Each resource is stored at one version
//! (its hub: `apps/v1`, `networking.k8s.io/v1`, `autoscaling/v2`); a request at another
//! version is converted on the way in and out, so every version shows the same object.
//! Fields a version cannot express travel in annotations, as kube-apiserver keeps them, so a
//! round trip through an older version loses nothing.

use fellowship_apimachinery::ResourceKind;
use serde_json::{Map, Value, json};

/// The version objects of `kind` are stored at.
pub fn storage_version(kind: &ResourceKind) -> String {
    match (kind.group, kind.kind) {
        ("extensions", "Ingress") => "networking.k8s.io/v1".into(),
        ("extensions", _) => "apps/v1".into(),
        ("autoscaling", _) => "autoscaling/v2".into(),
        _ => kind.api_version(),
    }
}

/// Converts `object` (carrying its own `apiVersion`) to `to`.
pub fn convert(object: &mut Value, to: &str) {
    let from = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if from == to {
        return;
    }
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    match (kind, from.as_str(), to) {
        ("Deployment" | "ReplicaSet" | "DaemonSet", "extensions/v1beta1", _) => {
            default_selector(object)
        }
        ("Ingress", "extensions/v1beta1", _) => {
            ingress(object, backend_to_v1, "backend", "defaultBackend")
        }
        ("Ingress", _, "extensions/v1beta1") => {
            ingress(object, backend_to_v1beta1, "defaultBackend", "backend")
        }
        ("HorizontalPodAutoscaler", "autoscaling/v1", _) => hpa_to_v2(object),
        ("HorizontalPodAutoscaler", _, "autoscaling/v1") => hpa_to_v1(object),
        _ => {}
    }
    object["apiVersion"] = json!(to);
}

/// `extensions/v1beta1` defaulted a missing selector to the template's labels; `apps/v1`
/// requires one.
fn default_selector(object: &mut Value) {
    let labels = object.pointer("/spec/template/metadata/labels").cloned();
    if let (Some(spec), Some(labels)) = (
        object.get_mut("spec").and_then(Value::as_object_mut),
        labels,
    ) && !spec.contains_key("selector")
    {
        spec.insert("selector".into(), json!({"matchLabels": labels}));
    }
}

fn ingress(object: &mut Value, backend: fn(&mut Value), from_default: &str, to_default: &str) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(mut b) = spec.remove(from_default) {
        backend(&mut b);
        spec.insert(to_default.into(), b);
    }
    let rules = spec.get_mut("rules").and_then(Value::as_array_mut);
    for rule in rules.into_iter().flatten() {
        let paths = rule
            .pointer_mut("/http/paths")
            .and_then(Value::as_array_mut);
        for path in paths.into_iter().flatten() {
            if let Some(b) = path.get_mut("backend") {
                backend(b);
            }
            // networking.k8s.io/v1 requires a pathType; the old default was this one.
            if path.get("pathType").is_none() {
                path["pathType"] = json!("ImplementationSpecific");
            }
        }
    }
}

/// `{serviceName, servicePort}` → `{service: {name, port: {number | name}}}`.
fn backend_to_v1(b: &mut Value) {
    let Some(m) = b.as_object_mut() else { return };
    let name = m.remove("serviceName");
    let port = m.remove("servicePort");
    if name.is_none() && port.is_none() {
        return;
    }
    let port = match port {
        Some(Value::Number(n)) => json!({"number": n}),
        Some(Value::String(s)) => match s.parse::<i64>() {
            Ok(n) => json!({"number": n}),
            Err(_) => json!({"name": s}),
        },
        _ => json!({}),
    };
    m.insert(
        "service".into(),
        json!({"name": name.unwrap_or(json!("")), "port": port}),
    );
}

fn backend_to_v1beta1(b: &mut Value) {
    let Some(service) = b.as_object_mut().and_then(|m| m.remove("service")) else {
        return;
    };
    b["serviceName"] = service.get("name").cloned().unwrap_or(json!(""));
    let port = service.get("port");
    if let Some(p) = port.and_then(|p| p.get("number").or_else(|| p.get("name"))) {
        b["servicePort"] = p.clone();
    }
}

/// Where `autoscaling/v1` keeps what only `autoscaling/v2` can say.
const HPA_ANNOTATIONS: [(&str, &str, &str); 4] = [
    ("spec", "metrics", "autoscaling.alpha.kubernetes.io/metrics"),
    (
        "spec",
        "behavior",
        "autoscaling.alpha.kubernetes.io/behavior",
    ),
    (
        "status",
        "currentMetrics",
        "autoscaling.alpha.kubernetes.io/current-metrics",
    ),
    (
        "status",
        "conditions",
        "autoscaling.alpha.kubernetes.io/conditions",
    ),
];

fn is_cpu_utilization(metric: &Value, target: &str) -> bool {
    metric.get("type") == Some(&json!("Resource"))
        && metric.pointer("/resource/name") == Some(&json!("cpu"))
        && metric
            .pointer(&format!("/resource/{target}/averageUtilization"))
            .is_some()
}

fn section<'a>(object: &'a mut Value, name: &str) -> &'a mut Map<String, Value> {
    if !object.get(name).is_some_and(Value::is_object) {
        object[name] = json!({});
    }
    object[name].as_object_mut().expect("made an object above")
}

fn hpa_to_v1(object: &mut Value) {
    let spec = section(object, "spec");
    let cpu = spec
        .get("metrics")
        .and_then(Value::as_array)
        .and_then(|m| m.iter().find(|m| is_cpu_utilization(m, "target")))
        .and_then(|m| m.pointer("/resource/target/averageUtilization"))
        .cloned();
    if let Some(cpu) = cpu {
        spec.insert("targetCPUUtilizationPercentage".into(), cpu);
    }
    // Only the metrics v1 cannot show need keeping.
    if let Some(metrics) = spec.get_mut("metrics").and_then(Value::as_array_mut) {
        metrics.retain(|m| !is_cpu_utilization(m, "target"));
    }
    if spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        spec.remove("metrics");
    }
    let current_cpu = object
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .and_then(|m| m.iter().find(|m| is_cpu_utilization(m, "current")))
        .and_then(|m| m.pointer("/resource/current/averageUtilization"))
        .cloned();
    if let Some(cpu) = current_cpu {
        section(object, "status").insert("currentCPUUtilizationPercentage".into(), cpu);
    }
    let mut annotations = Map::new();
    for (part, field, annotation) in HPA_ANNOTATIONS {
        let taken = object
            .get_mut(part)
            .and_then(Value::as_object_mut)
            .and_then(|p| p.remove(field));
        if let Some(v) = taken.filter(|v| !v.is_null()) {
            annotations.insert(annotation.into(), json!(v.to_string()));
        }
    }
    if !annotations.is_empty() {
        let meta = section(object, "metadata");
        if !meta.get("annotations").is_some_and(Value::is_object) {
            meta.insert("annotations".into(), json!({}));
        }
        meta["annotations"]
            .as_object_mut()
            .expect("made an object above")
            .extend(annotations);
    }
}

fn hpa_to_v2(object: &mut Value) {
    let mut kept = Map::new();
    if let Some(annotations) = object
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        for (_, field, annotation) in HPA_ANNOTATIONS {
            let parsed = annotations
                .remove(annotation)
                .and_then(|v| v.as_str().and_then(|s| serde_json::from_str(s).ok()));
            if let Some(v) = parsed {
                kept.insert(field.into(), v);
            }
        }
        if annotations.is_empty() {
            object["metadata"]
                .as_object_mut()
                .map(|m| m.remove("annotations"));
        }
    }
    for (part, field, _) in HPA_ANNOTATIONS {
        if let Some(v) = kept.remove(field) {
            section(object, part).insert(field.into(), v);
        }
    }
    // The v1 CPU target is the one the v1 client sees and edits: it wins over a kept copy.
    let spec = section(object, "spec");
    let cpu = spec.remove("targetCPUUtilizationPercentage");
    let mut metrics: Vec<Value> = spec
        .remove("metrics")
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default();
    metrics.retain(|m| !is_cpu_utilization(m, "target"));
    if let Some(cpu) = cpu {
        metrics.insert(
            0,
            json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}),
        );
    }
    if !metrics.is_empty() {
        spec.insert("metrics".into(), json!(metrics));
    }
    let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) else {
        return;
    };
    let current = status.remove("currentCPUUtilizationPercentage");
    if let Some(cpu) = current
        && !status.contains_key("currentMetrics")
    {
        status.insert(
            "currentMetrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}}]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_ingress_round_trip() {
        let old = json!({"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "i"},
            "spec": {"backend": {"serviceName": "s", "servicePort": 80},
                "rules": [{"host": "a.example.com", "http": {"paths": [{"path": "/", "backend": {"serviceName": "t", "servicePort": "http"}}]}}]}});
        let mut v1 = old.clone();
        convert(&mut v1, "networking.k8s.io/v1");
        assert_eq!(
            v1["spec"]["defaultBackend"],
            json!({"service": {"name": "s", "port": {"number": 80}}})
        );
        assert_eq!(
            v1["spec"]["rules"][0]["http"]["paths"][0]["backend"],
            json!({"service": {"name": "t", "port": {"name": "http"}}})
        );
        assert_eq!(
            v1["spec"]["rules"][0]["http"]["paths"][0]["pathType"],
            "ImplementationSpecific"
        );
        let mut back = v1.clone();
        convert(&mut back, "extensions/v1beta1");
        let mut expected = old;
        expected["spec"]["rules"][0]["http"]["paths"][0]["pathType"] =
            json!("ImplementationSpecific");
        assert_eq!(back, expected);
    }

    #[test]
    fn hpa_v2_survives_a_v1_round_trip() {
        let v2 = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
            "spec": {"maxReplicas": 5, "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}}]},
            "status": {"currentReplicas": 2, "desiredReplicas": 2, "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 40}}}]}});
        let mut v1 = v2.clone();
        convert(&mut v1, "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 40);
        assert!(v1["spec"].get("metrics").is_none());
        // A v1 client changes the CPU target; the memory metric is still there in v2.
        v1["spec"]["targetCPUUtilizationPercentage"] = json!(70);
        let mut back = v1;
        convert(&mut back, "autoscaling/v2");
        assert_eq!(
            back["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            70
        );
        assert_eq!(back["spec"]["metrics"][1], v2["spec"]["metrics"][1]);
        assert_eq!(
            back["status"]["currentMetrics"],
            v2["status"]["currentMetrics"]
        );
        assert!(back["metadata"].get("annotations").is_none());
        assert!(back["spec"].get("targetCPUUtilizationPercentage").is_none());
    }

    #[test]
    fn extensions_workloads_get_a_selector() {
        let mut rs = json!({"apiVersion": "extensions/v1beta1", "kind": "ReplicaSet",
            "spec": {"template": {"metadata": {"labels": {"app": "nginx"}}}}});
        convert(&mut rs, "apps/v1");
        assert_eq!(
            rs["spec"]["selector"],
            json!({"matchLabels": {"app": "nginx"}})
        );
        assert_eq!(rs["apiVersion"], "apps/v1");
    }
}
