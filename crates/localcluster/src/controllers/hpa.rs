//! HorizontalPodAutoscalers: the target's replica count kept within min and max, and a
//! status with current and desired replicas and a simulated CPU utilisation (the target
//! utilisation when the HPA sets one: a steady load).

use fellowship_apimachinery::{ApiError, meta};
use serde_json::{Value, json};

use super::{Controllers, condition, int, write_status};

pub async fn reconcile(c: &Controllers, namespace: &str, name: &str) -> Result<(), ApiError> {
    let k = &c.access.kinds;
    let Some(hpa) = c.access.get(&k.hpas, namespace, name).await? else {
        return Ok(());
    };
    let target_kind = hpa
        .pointer("/spec/scaleTargetRef/kind")
        .and_then(Value::as_str);
    let target_name = hpa
        .pointer("/spec/scaleTargetRef/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = match target_kind {
        Some("Deployment") => &k.deployments,
        Some("ReplicaSet") => &k.replica_sets,
        _ => return Ok(()),
    };
    let Some(target) = c.access.get(kind, namespace, target_name).await? else {
        let status = json!({
            "currentReplicas": 0,
            "desiredReplicas": 0,
            "conditions": [condition("AbleToScale", false, "FailedGetScale", &format!("the HPA controller was unable to get the target's current scale: {} {target_name} not found", target_kind.unwrap_or("")))],
        });
        return write_status(c, &k.hpas, &hpa, status).await;
    };
    let current = int(&target, "/spec/replicas", 1);
    let min = int(&hpa, "/spec/minReplicas", 1);
    let max = int(&hpa, "/spec/maxReplicas", min);
    let desired = current.clamp(min, max.max(min));
    let mut status = json!({
        "currentReplicas": current,
        "desiredReplicas": desired,
        "currentMetrics": [{
            "type": "Resource",
            "resource": {"name": "cpu", "current": {"averageUtilization": utilization(c, &hpa)}},
        }],
        "conditions": [
            condition("AbleToScale", true, "ReadyForNewScale", "recommended size matches current size"),
            condition("ScalingActive", true, "ValidMetricFound", "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)"),
        ],
    });
    if let Some(t) = hpa.pointer("/status/lastScaleTime") {
        status["lastScaleTime"] = t.clone();
    }
    if desired != current {
        let mut scaled = target.clone();
        scaled["spec"]["replicas"] = json!(desired);
        c.access
            .update(kind, &scaled, false, "horizontal-pod-autoscaler")
            .await?;
        status["lastScaleTime"] = json!(meta::now());
    }
    write_status(c, &k.hpas, &hpa, status).await
}

fn utilization(c: &Controllers, hpa: &Value) -> i64 {
    hpa.pointer("/spec/metrics")
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter()
                .find(|m| m.pointer("/resource/name") == Some(&json!("cpu")))
        })
        .and_then(|m| m.pointer("/resource/target/averageUtilization"))
        .and_then(Value::as_i64)
        .unwrap_or(c.simulation.cpu_utilization)
}
