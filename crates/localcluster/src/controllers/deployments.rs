//! The Deployment controller: one ReplicaSet per pod template (named by the template's
//! hash, as `pod-template-hash`), scaled to `spec.replicas`; the older ones scaled to zero
//! once the new one is available. Status as kube-controller-manager writes it, so
//! `kubectl rollout status` works against a local cluster, and fails as it does there: a
//! rollout that makes no progress for `progressDeadlineSeconds` (600 by default) is
//! `Progressing=False`, `ProgressDeadlineExceeded`.

use std::time::Duration;

use fellowship_apimachinery::{ApiError, meta};
use serde_json::{Value, json};

use super::{
    CONTROLLER_MANAGER, Controllers, collect_garbage, condition, int, owner_reference, write_status,
};

const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";

/// FNV-1a of the template, in the alphabet Kubernetes uses for generated names.
pub fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u32 = 0x811c_9dc5;
    for b in template.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let mut out = String::new();
    let mut n = h;
    for _ in 0..10 {
        out.push(ALPHABET[(n % ALPHABET.len() as u32) as usize] as char);
        n /= ALPHABET.len() as u32;
        if n == 0 {
            n = h.rotate_left(out.len() as u32 * 3);
        }
    }
    out
}

/// Returns when to look at the Deployment again (its progress deadline).
pub async fn reconcile(
    c: &Controllers,
    namespace: &str,
    name: &str,
) -> Result<Option<Duration>, ApiError> {
    let k = &c.access.kinds;
    let d = c.access.get(&k.deployments, namespace, name).await?;
    collect_garbage(
        c,
        &k.replica_sets,
        namespace,
        "Deployment",
        name,
        d.as_ref(),
    )
    .await?;
    let Some(d) = d else { return Ok(None) };
    if super::release_if_deleting(c, &k.deployments, &d, &k.replica_sets).await? {
        return Ok(None);
    }
    let want = int(&d, "/spec/replicas", 1).max(0);
    let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = template_hash(&template);
    let sets = super::controlled(c, &k.replica_sets, &d);
    let revision = |rs: &Value| {
        rs.pointer(&format!(
            "/metadata/annotations/{}",
            REVISION.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .and_then(|r| r.parse::<i64>().ok())
        .unwrap_or(0)
    };
    let (new, old): (Vec<Value>, Vec<Value>) = sets.into_iter().partition(|rs| {
        rs.pointer(&format!("/metadata/labels/{HASH_LABEL}")) == Some(&json!(hash))
    });
    let new = match new.into_iter().next() {
        Some(rs) if int(&rs, "/spec/replicas", 0) != want => {
            let mut scaled = rs.clone();
            scaled["spec"]["replicas"] = json!(want);
            c.access
                .update(&k.replica_sets, &scaled, false, CONTROLLER_MANAGER)
                .await?
                .unwrap_or(rs)
        }
        Some(rs) => rs,
        None => {
            let next_revision = old.iter().map(revision).max().unwrap_or(0) + 1;
            let rs = new_replica_set(&d, &template, &hash, want, next_revision);
            // A 409 (a ReplicaSet of that name not yet collected) is retried.
            match c
                .access
                .create(&k.replica_sets, namespace, CONTROLLER_MANAGER, &rs)
                .await?
            {
                Some(rs) => rs,
                None => return Ok(None),
            }
        }
    };
    // The Deployment carries its new ReplicaSet's revision, as kube-controller-manager
    // writes it (what `kubectl rollout history` and a federation's copy see).
    let current = json!(revision(&new).to_string());
    let d = if d.pointer(&format!(
        "/metadata/annotations/{}",
        REVISION.replace('/', "~1")
    )) == Some(&current)
    {
        d
    } else {
        let mut marked = d.clone();
        marked["metadata"]["annotations"][REVISION] = current;
        c.access
            .update(&k.deployments, &marked, false, CONTROLLER_MANAGER)
            .await?
            .unwrap_or(d)
    };
    let new_available = int(&new, "/status/availableReplicas", 0);
    if new_available >= want {
        for rs in old.iter().filter(|rs| int(rs, "/spec/replicas", 0) != 0) {
            let mut scaled = rs.clone();
            scaled["spec"]["replicas"] = json!(0);
            c.access
                .update(&k.replica_sets, &scaled, false, CONTROLLER_MANAGER)
                .await?;
        }
    }
    let all: Vec<&Value> = std::iter::once(&new).chain(old.iter()).collect();
    let sum = |p: &str| all.iter().map(|rs| int(rs, p, 0)).sum::<i64>();
    let replicas = sum("/status/replicas");
    let updated = int(&new, "/status/replicas", 0);
    let available = sum("/status/availableReplicas");
    let old_replicas = replicas - updated;
    let rs_name = meta::name(&new);
    let complete = updated >= want && available >= want && old_replicas == 0;
    // Progress: the counts moved, or a new generation is seen. Without it for the deadline,
    // the rollout has failed.
    let ready = sum("/status/readyReplicas");
    let before = |p: &str| int(&d, p, 0);
    let progressed = (replicas, updated, ready, available)
        != (
            before("/status/replicas"),
            before("/status/updatedReplicas"),
            before("/status/readyReplicas"),
            before("/status/availableReplicas"),
        )
        || before("/status/observedGeneration") != int(&d, "/metadata/generation", 1);
    let previous = d
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"));
    let last_progress = previous
        .filter(|_| !progressed)
        .and_then(|p| p["lastUpdateTime"].as_str())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .unwrap_or_else(jiff::Timestamp::now);
    let deadline = Duration::from_secs(int(&d, "/spec/progressDeadlineSeconds", 600).max(0) as u64);
    let since = Duration::try_from(jiff::Timestamp::now().duration_since(last_progress))
        .unwrap_or_default();
    let mut wake = None;
    let mut progressing = if complete {
        condition(
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
        )
    } else if since >= deadline {
        condition(
            "Progressing",
            false,
            "ProgressDeadlineExceeded",
            &format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
        )
    } else {
        wake = Some(deadline - since);
        condition(
            "Progressing",
            true,
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{rs_name}\" is progressing."),
        )
    };
    progressing["lastUpdateTime"] = json!(last_progress.to_string());
    let available_condition = if available >= want {
        condition(
            "Available",
            true,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        condition(
            "Available",
            false,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    let mut available_condition = available_condition;
    available_condition["lastUpdateTime"] = available_condition["lastTransitionTime"].clone();
    let conditions = [available_condition, progressing];
    let status = json!({
        "observedGeneration": int(&d, "/metadata/generation", 1),
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (want - available).max(0),
        "conditions": conditions,
    });
    let status = super::replicasets::prune_zeros(status);
    write_status(c, &k.deployments, &d, status).await?;
    Ok(wake)
}

fn new_replica_set(d: &Value, template: &Value, hash: &str, replicas: i64, revision: i64) -> Value {
    let mut template = template.clone();
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let mut labels = template["metadata"]["labels"].clone();
    labels[HASH_LABEL] = json!(hash);
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{}-{hash}", meta::name(d)),
            "namespace": meta::namespace(d),
            "labels": labels,
            "annotations": {
                REVISION: revision.to_string(),
                "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                "deployment.kubernetes.io/max-replicas": replicas.to_string(),
            },
            "ownerReferences": owner_reference(d),
        },
        "spec": {
            "replicas": replicas,
            "minReadySeconds": d.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0)),
            "selector": selector,
            "template": template,
        },
    })
}
