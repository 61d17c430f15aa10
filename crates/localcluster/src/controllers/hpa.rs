//! HorizontalPodAutoscalers: the target's replica count kept within min and max, and a
//! status with current and desired replicas and a simulated CPU utilisation. The load is
//! steady (each Pod at the target utilisation) unless the HPA carries [`CPU_LOAD`]: then the
//! target is scaled as kube-controller-manager would for that load, so a test can make a
//! member's HPA scale up or down. A target at zero replicas is left there, as
//! kube-controller-manager leaves it.

use fellowship_apimachinery::{ApiError, meta};
use serde_json::{Value, json};

use super::{Controllers, condition, int, write_status};

/// An annotation on an HPA: the CPU its target's Pods use in all, in percent of one Pod's
/// request (`"300"`: three Pods' worth, 150% each on two Pods).
pub const CPU_LOAD: &str = "simulation.fellowship.io/cpu-load";
/// How far from the target utilisation the HPA lets the load be before it scales
/// (kube-controller-manager's `--horizontal-pod-autoscaler-tolerance`).
const TOLERANCE: f64 = 0.1;

/// The utilisation the target's Pods report, and the replicas that would bring it to
/// `target`, for `current` replicas under `load` (none: a steady load).
fn scale(current: i64, target: i64, load: Option<f64>) -> (i64, i64) {
    let Some(load) = load else {
        return (target, current);
    };
    let utilization = load / current.max(1) as f64;
    let ratio = utilization / target.max(1) as f64;
    let desired = if (ratio - 1.0).abs() <= TOLERANCE {
        current
    } else {
        (load / target.max(1) as f64).ceil() as i64
    };
    (utilization.round() as i64, desired)
}

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
    if current == 0 {
        // As kube-controller-manager: a target scaled to zero is left there.
        let status = json!({
            "currentReplicas": 0,
            "desiredReplicas": 0,
            "conditions": [condition("ScalingActive", false, "ScalingDisabled", "scaling is disabled since the replica count of the target is zero")],
        });
        return write_status(c, &k.hpas, &hpa, status).await;
    }
    let min = int(&hpa, "/spec/minReplicas", 1);
    let max = int(&hpa, "/spec/maxReplicas", min);
    let load = (hpa.pointer(&format!(
        "/metadata/annotations/{}",
        CPU_LOAD.replace('/', "~1")
    )))
    .and_then(Value::as_str)
    .and_then(|l| l.parse::<f64>().ok());
    let (utilization, wanted) = scale(current, target_utilization(c, &hpa), load);
    let desired = wanted.clamp(min, max.max(min));
    let mut status = json!({
        "currentReplicas": current,
        "desiredReplicas": desired,
        "currentMetrics": [{
            "type": "Resource",
            "resource": {"name": "cpu", "current": {"averageUtilization": utilization}},
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

/// The CPU utilisation the HPA aims at (the simulation's own when it names none).
fn target_utilization(c: &Controllers, hpa: &Value) -> i64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_scales_as_kube_controller_manager_would() {
        // Steady: each Pod at the target, nothing moves.
        assert_eq!(scale(3, 50, None), (50, 3));
        // Three Pods' worth at a 50% target: six Pods; at 100% each on three, the same.
        assert_eq!(scale(3, 50, Some(300.0)), (100, 6));
        assert_eq!(scale(6, 50, Some(300.0)), (50, 6));
        // Within the tolerance, no change; below it, fewer.
        assert_eq!(scale(6, 50, Some(320.0)), (53, 6));
        assert_eq!(scale(6, 50, Some(100.0)), (17, 2));
    }
}
