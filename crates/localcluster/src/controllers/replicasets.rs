//! The ReplicaSet controller: keeps `spec.replicas` Pods from the template, removing the
//! extra ones (unscheduled, then not ready, then newest first), and reports replicas, ready
//! and available counts.

use fellowship_apimachinery::{ApiError, meta};
use serde_json::{Value, json};

use super::{
    CONTROLLER_MANAGER, Controllers, collect_garbage, controlled_by, controller_of, int, is_ready,
    owned_pods, pod_from_template, write_status,
};

pub async fn reconcile(c: &Controllers, namespace: &str, name: &str) -> Result<(), ApiError> {
    let k = &c.access.kinds;
    let rs = c.access.get(&k.replica_sets, namespace, name).await?;
    let Some(rs) = rs else {
        return collect_garbage(c, &k.pods, namespace, "ReplicaSet", name, None).await;
    };
    collect_garbage(c, &k.pods, namespace, "ReplicaSet", name, Some(&rs)).await?;
    if super::release_if_deleting(c, &k.replica_sets, &rs, &k.pods).await? {
        return Ok(());
    }
    // A ReplicaSet whose Deployment is gone goes too.
    if let Some(owner) = controller_of(&rs, "Deployment") {
        let deployment = c.access.get(&k.deployments, namespace, owner).await?;
        if deployment.is_none_or(|d| !controlled_by(&rs, &d)) {
            return c
                .access
                .delete(&k.replica_sets, namespace, name, "garbage-collector")
                .await;
        }
    }
    let want = int(&rs, "/spec/replicas", 1).max(0) as usize;
    let mut pods = owned_pods(c, &rs);
    if pods.len() < want {
        for _ in pods.len()..want {
            let pod = pod_from_template(&rs);
            if let Some(created) = c
                .access
                .create(&k.pods, namespace, CONTROLLER_MANAGER, &pod)
                .await?
            {
                pods.push(created);
            }
        }
    } else if pods.len() > want {
        // Least useful first: unscheduled, not ready, newest.
        pods.sort_by_key(|p| {
            (
                p.pointer("/spec/nodeName").is_some(),
                is_ready(p),
                std::cmp::Reverse(meta::meta_str(p, "creationTimestamp").to_string()),
            )
        });
        let extra = pods.len() - want;
        for p in pods.drain(..extra) {
            c.access
                .delete(&k.pods, namespace, meta::name(&p), CONTROLLER_MANAGER)
                .await?;
        }
    }
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let status = json!({
        "replicas": pods.len(),
        "fullyLabeledReplicas": pods.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": int(&rs, "/metadata/generation", 1),
    });
    write_status(c, &k.replica_sets, &rs, prune_zeros(status)).await
}

/// kube-controller-manager leaves zero counts out of status, as omitempty fields.
pub fn prune_zeros(mut status: Value) -> Value {
    if let Some(m) = status.as_object_mut() {
        m.retain(|k, v| k == "replicas" || v != &json!(0));
    }
    status
}
