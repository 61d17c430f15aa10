//! Services: a LoadBalancer Service gets an address from the cluster's pool in
//! `status.loadBalancer.ingress`; a Service with a selector gets Endpoints and an
//! EndpointSlice listing the matching Pods (ready ones as addresses, the others as not
//! ready), as the endpoints controllers keep them.

use std::collections::BTreeSet;

use fellowship_apimachinery::selector::LabelSelector;
use fellowship_apimachinery::{ApiError, meta};
use serde_json::{Value, json};

use super::{
    CONTROLLER_MANAGER, Controllers, collect_garbage, is_ready, is_terminated, owner_reference,
};

/// Every Service of a namespace: what a Pod's change may touch.
pub async fn namespace(c: &Controllers, namespace: &str) -> Result<(), ApiError> {
    for s in c.access.list(&c.access.kinds.services, namespace).await? {
        reconcile(c, namespace, meta::name(&s)).await?;
    }
    Ok(())
}

pub async fn reconcile(c: &Controllers, namespace: &str, name: &str) -> Result<(), ApiError> {
    let k = &c.access.kinds;
    let service = c.access.get(&k.services, namespace, name).await?;
    collect_garbage(
        c,
        &k.endpoints,
        namespace,
        "Service",
        name,
        service.as_ref(),
    )
    .await?;
    collect_garbage(
        c,
        &k.endpoint_slices,
        namespace,
        "Service",
        name,
        service.as_ref(),
    )
    .await?;
    let Some(service) = service else {
        return Ok(());
    };
    if service.pointer("/metadata/deletionTimestamp").is_some() {
        return Ok(());
    }
    load_balancer(c, &service).await?;
    let Some(selector) = service
        .pointer("/spec/selector")
        .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()))
    else {
        // Without a selector the endpoints are the user's.
        return Ok(());
    };
    let selector = LabelSelector::from_object(selector).unwrap_or_default();
    let pods: Vec<Value> = c
        .access
        .list(&k.pods, namespace)
        .await?
        .into_iter()
        .filter(|p| {
            selector.matches(meta::labels(p))
                && p.pointer("/status/podIP").is_some()
                && !is_terminated(p)
                && p.pointer("/metadata/deletionTimestamp").is_none()
        })
        .collect();
    endpoints(c, &service, &pods).await?;
    endpoint_slice(c, &service, &pods).await
}

/// The ingress address of a LoadBalancer Service: the next free one of the pool.
async fn load_balancer(c: &Controllers, service: &Value) -> Result<(), ApiError> {
    let k = &c.access.kinds;
    let is_lb = service.pointer("/spec/type") == Some(&json!("LoadBalancer"));
    let has = service.pointer("/status/loadBalancer/ingress/0").is_some();
    if is_lb == has {
        return Ok(());
    }
    let mut status = service.get("status").cloned().unwrap_or(json!({}));
    if is_lb {
        let taken: BTreeSet<String> = c
            .access
            .list(&k.services, "")
            .await?
            .iter()
            .filter_map(|s| {
                s.pointer("/status/loadBalancer/ingress/0/ip")?
                    .as_str()
                    .map(String::from)
            })
            .collect();
        let Some(ip) = (10..255)
            .map(|n| format!("{}.{n}", c.config.load_balancer_pool))
            .find(|ip| !taken.contains(ip))
        else {
            tracing::warn!(cluster = %c.config.name, "load-balancer pool {}.0/24 is used up", c.config.load_balancer_pool);
            return Ok(());
        };
        status["loadBalancer"] = json!({"ingress": [{"ip": ip, "ipMode": "VIP"}]});
    } else {
        status["loadBalancer"] = json!({});
    }
    let mut next = service.clone();
    next["status"] = status;
    c.access
        .update(&k.services, &next, true, "service-controller")
        .await?;
    Ok(())
}

/// The Service's ports as the Pods serve them: a named target port is looked up in the
/// Pod's containers.
fn target_ports(service: &Value, pod: Option<&Value>) -> Vec<Value> {
    let mut out = Vec::new();
    for p in service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let port = match p.get("targetPort") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(name)) => pod.and_then(|pod| {
                pod.pointer("/spec/containers")?
                    .as_array()?
                    .iter()
                    .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                    .find(|cp| cp["name"] == name.as_str())?["containerPort"]
                    .as_i64()
            }),
            _ => p.get("port").and_then(Value::as_i64),
        };
        let Some(port) = port else { continue };
        let mut e =
            json!({"port": port, "protocol": p.get("protocol").cloned().unwrap_or(json!("TCP"))});
        if let Some(name) = p.get("name") {
            e["name"] = name.clone();
        }
        out.push(e);
    }
    out
}

fn target_ref(pod: &Value) -> Value {
    json!({"kind": "Pod", "namespace": meta::namespace(pod), "name": meta::name(pod), "uid": meta::meta_str(pod, "uid")})
}

async fn endpoints(c: &Controllers, service: &Value, pods: &[Value]) -> Result<(), ApiError> {
    let k = &c.access.kinds;
    let (namespace, name) = (meta::namespace(service), meta::name(service));
    let address = |p: &Value| {
        let mut a = json!({"ip": p["status"]["podIP"], "targetRef": target_ref(p)});
        if let Some(n) = p.pointer("/spec/nodeName") {
            a["nodeName"] = n.clone();
        }
        a
    };
    let ready: Vec<Value> = pods.iter().filter(|p| is_ready(p)).map(address).collect();
    let not_ready: Vec<Value> = pods.iter().filter(|p| !is_ready(p)).map(address).collect();
    let mut subsets = Vec::new();
    if !pods.is_empty() {
        let mut subset = json!({"ports": target_ports(service, pods.first())});
        if !ready.is_empty() {
            subset["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = json!(not_ready);
        }
        subsets.push(subset);
    }
    let mut labels = meta::labels(service).cloned().unwrap_or_default();
    labels.insert(
        "endpointslice.kubernetes.io/skip-mirror".into(),
        json!("true"),
    );
    let desired = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "ownerReferences": owner_reference(service)},
        "subsets": subsets,
    });
    upsert(c, &k.endpoints, &desired, |current| {
        current.get("subsets") == desired.get("subsets")
    })
    .await
}

async fn endpoint_slice(c: &Controllers, service: &Value, pods: &[Value]) -> Result<(), ApiError> {
    let k = &c.access.kinds;
    let (namespace, name) = (meta::namespace(service), meta::name(service));
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|p| {
            let ready = is_ready(p);
            let mut e = json!({
                "addresses": [p["status"]["podIP"]],
                "conditions": {"ready": ready, "serving": ready, "terminating": false},
                "targetRef": target_ref(p),
            });
            if let Some(n) = p.pointer("/spec/nodeName") {
                e["nodeName"] = n.clone();
            }
            e
        })
        .collect();
    let desired = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{name}-{}", &super::deployments::template_hash(&json!(meta::meta_str(service, "uid")))[..5]),
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            "ownerReferences": owner_reference(service),
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": target_ports(service, pods.first()),
    });
    upsert(c, &k.endpoint_slices, &desired, |current| {
        current.get("endpoints") == desired.get("endpoints")
            && current.get("ports") == desired.get("ports")
    })
    .await
}

/// Creates `desired`, or replaces the stored object unless `same` says it already matches.
async fn upsert(
    c: &Controllers,
    kind: &std::sync::Arc<fellowship_apimachinery::ResourceKind>,
    desired: &Value,
    same: impl Fn(&Value) -> bool,
) -> Result<(), ApiError> {
    let (namespace, name) = (meta::namespace(desired), meta::name(desired));
    match c.access.get(kind, namespace, name).await? {
        None => {
            c.access
                .create(kind, namespace, CONTROLLER_MANAGER, desired)
                .await?;
        }
        Some(current) if !same(&current) => {
            let mut next = desired.clone();
            next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
            c.access
                .update(kind, &next, false, CONTROLLER_MANAGER)
                .await?;
        }
        Some(_) => {}
    }
    Ok(())
}
