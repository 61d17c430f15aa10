//! The DaemonSet controller: one Pod on each node its template's node selector admits,
//! bound directly as the DaemonSet controller binds them.

use std::collections::BTreeMap;

use fellowship_apimachinery::{ApiError, meta};
use serde_json::{Value, json};

use super::{
    CONTROLLER_MANAGER, Controllers, collect_garbage, int, is_ready, owned_pods, pod_from_template,
    write_status,
};

pub async fn reconcile(c: &Controllers, namespace: &str, name: &str) -> Result<(), ApiError> {
    let k = &c.access.kinds;
    let ds = c.access.get(&k.daemon_sets, namespace, name).await?;
    collect_garbage(c, &k.pods, namespace, "DaemonSet", name, ds.as_ref()).await?;
    let Some(ds) = ds else { return Ok(()) };
    if super::release_if_deleting(c, &k.daemon_sets, &ds, &k.pods).await? {
        return Ok(());
    }
    let selector = ds
        .pointer("/spec/template/spec/nodeSelector")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let nodes: Vec<String> = c
        .access
        .list(&k.nodes, "")
        .await?
        .iter()
        .filter(|n| {
            let labels = meta::labels(n);
            selector
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .map(|n| meta::name(n).to_string())
        .collect();
    let mut by_node: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in owned_pods(c, &ds) {
        let node = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        by_node.entry(node).or_default().push(p);
    }
    for node in &nodes {
        if by_node.get(node).is_none_or(Vec::is_empty) {
            let mut pod = pod_from_template(&ds);
            pod["spec"]["nodeName"] = json!(node);
            if let Some(p) = c
                .access
                .create(&k.pods, namespace, CONTROLLER_MANAGER, &pod)
                .await?
            {
                by_node.entry(node.clone()).or_default().push(p);
            }
        }
    }
    // Pods on nodes that are gone or no longer admitted, and duplicates, go.
    let mut kept = Vec::new();
    for (node, pods) in by_node {
        let mut pods = pods.into_iter();
        if nodes.contains(&node)
            && let Some(p) = pods.next()
        {
            kept.push(p);
        }
        for extra in pods {
            c.access
                .delete(&k.pods, namespace, meta::name(&extra), CONTROLLER_MANAGER)
                .await?;
        }
    }
    let ready = kept.iter().filter(|p| is_ready(p)).count();
    let status = json!({
        "desiredNumberScheduled": nodes.len(),
        "currentNumberScheduled": kept.len(),
        "updatedNumberScheduled": kept.len(),
        "numberReady": ready,
        "numberAvailable": ready,
        "numberMisscheduled": 0,
        "numberUnavailable": nodes.len().saturating_sub(ready),
        "observedGeneration": int(&ds, "/metadata/generation", 1),
    });
    write_status(c, &k.daemon_sets, &ds, status).await
}
