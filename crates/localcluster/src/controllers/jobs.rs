//! The Job controller: runs `parallelism` Pods at a time until `completions` have
//! succeeded, then marks the Job Complete.

use fellowship_apimachinery::{ApiError, meta};
use serde_json::{Value, json};

use super::{
    CONTROLLER_MANAGER, Controllers, collect_garbage, condition, int, pod_from_template,
    write_status,
};

pub async fn reconcile(c: &Controllers, namespace: &str, name: &str) -> Result<(), ApiError> {
    let k = &c.access.kinds;
    let job = c.access.get(&k.jobs, namespace, name).await?;
    collect_garbage(c, &k.pods, namespace, "Job", name, job.as_ref()).await?;
    let Some(job) = job else { return Ok(()) };
    if super::release_if_deleting(c, &k.jobs, &job, &k.pods).await? {
        return Ok(());
    }
    let completions = int(&job, "/spec/completions", 1).max(0);
    let parallelism = int(&job, "/spec/parallelism", 1).max(0);
    let pods = super::owned_pods(c, &job);
    let phase = |p: &Value| {
        p.pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
    let failed = pods.iter().filter(|p| phase(p) == "Failed").count() as i64;
    let mut active = pods.len() as i64 - succeeded - failed;
    let complete = succeeded >= completions;
    let suspended = job.pointer("/spec/suspend") == Some(&json!(true));
    if !complete && !suspended {
        let want = parallelism.min(completions - succeeded);
        while active < want {
            // The template carries the Job's selector labels (the API server put them there,
            // or the Job brought its own with `manualSelector`).
            let mut pod = pod_from_template(&job);
            if pod.pointer("/spec/restartPolicy").is_none() {
                pod["spec"]["restartPolicy"] = json!("Never");
            }
            c.access
                .create(&k.pods, namespace, CONTROLLER_MANAGER, &pod)
                .await?;
            active += 1;
        }
    }
    let ready = pods
        .iter()
        .filter(|p| phase(p) == "Running" && super::is_ready(p))
        .count();
    let mut status = job.get("status").cloned().unwrap_or(json!({}));
    if status.get("startTime").is_none() {
        status["startTime"] = json!(meta::now());
    }
    status["active"] = json!(if complete { 0 } else { active });
    status["succeeded"] = json!(succeeded);
    status["failed"] = json!(failed);
    status["ready"] = json!(ready);
    if let Some(m) = status.as_object_mut() {
        m.retain(|k, v| !matches!(k.as_str(), "active" | "succeeded" | "failed") || v != &json!(0));
    }
    if complete && status.get("completionTime").is_none() {
        status["completionTime"] = json!(meta::now());
        status["conditions"] = json!([
            condition(
                "SuccessCriteriaMet",
                true,
                "CompletionsReached",
                "Reached expected number of succeeded pods"
            ),
            condition(
                "Complete",
                true,
                "CompletionsReached",
                "Reached expected number of succeeded pods"
            ),
        ]);
    }
    write_status(c, &k.jobs, &job, status).await
}
