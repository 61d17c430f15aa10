//! The scheduler and the kubelets: a Pod without a node is bound to the node with room for
//! it (pod count, CPU and memory requests, node selector) and the fewest Pods; a Pod that
//! fits nowhere stays Pending with `PodScheduled=False, reason=Unschedulable` (spec §4.4
//! reads this). Bound Pods run and become Ready; a Job's Pods succeed after the configured
//! time. A Pod whose controller is gone is removed.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fellowship_apimachinery::{ApiError, meta};
use serde_json::{Value, json};

use super::{Controllers, controlled_by, controller_of, is_terminated, write_status};
use crate::quantity;

/// Returns when to look at the Pod again (a running Job Pod's completion).
pub async fn reconcile(
    c: &Controllers,
    namespace: &str,
    name: &str,
) -> Result<Option<Duration>, ApiError> {
    let k = &c.access.kinds;
    let Some(pod) = c.access.get(&k.pods, namespace, name).await? else {
        return Ok(None);
    };
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return Ok(None);
    }
    for (kind, owners) in [
        ("ReplicaSet", &k.replica_sets),
        ("DaemonSet", &k.daemon_sets),
        ("Job", &k.jobs),
    ] {
        if let Some(owner) = controller_of(&pod, kind) {
            let owner = c.access.get(owners, namespace, owner).await?;
            if owner.is_none_or(|o| !controlled_by(&pod, &o)) {
                c.access
                    .delete(&k.pods, namespace, name, "garbage-collector")
                    .await?;
                return Ok(None);
            }
        }
    }
    if is_terminated(&pod) {
        return Ok(None);
    }
    match pod.pointer("/spec/nodeName").and_then(Value::as_str) {
        None | Some("") => {
            schedule(c, &pod).await?;
            Ok(None)
        }
        Some(node) => run(c, &pod, node).await,
    }
}

/// CPU millicores and memory bytes a Pod asks for.
pub fn requests(pod: &Value) -> (i64, i64) {
    let mut cpu = 0;
    let mut memory = 0;
    for container in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let r = container.pointer("/resources/requests");
        let q = |name: &str| r.and_then(|r| r.get(name)).and_then(Value::as_str);
        cpu += q("cpu").and_then(quantity::milli).unwrap_or(0);
        memory += q("memory").and_then(quantity::units).unwrap_or(0);
    }
    (cpu, memory)
}

fn allocatable<'a>(node: &'a Value, name: &str) -> Option<&'a str> {
    node.pointer(&format!("/status/allocatable/{name}"))
        .and_then(Value::as_str)
}

async fn schedule(c: &Controllers, pod: &Value) -> Result<(), ApiError> {
    let k = &c.access.kinds;
    let nodes = c.access.list(&k.nodes, "").await?;
    let (cpu, memory) = requests(pod);
    let selector = pod.pointer("/spec/nodeSelector").and_then(Value::as_object);
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    let mut best: Option<(i64, &str)> = None;
    for node in &nodes {
        let name = meta::name(node);
        let labels = meta::labels(node);
        let used = c.access.node_usage(name);
        let (count, used_cpu, used_memory) = (used.pods, used.cpu, used.memory);
        let cap = |n: &str, parse: fn(&str) -> Option<i64>| {
            allocatable(node, n).and_then(parse).unwrap_or(i64::MAX)
        };
        let reason = if selector.is_some_and(|s| {
            s.iter()
                .any(|(k, v)| labels.and_then(|l| l.get(k)) != Some(v))
        }) {
            Some("node(s) didn't match Pod's node affinity/selector")
        } else if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
            Some("node(s) were unschedulable")
        } else if count + 1 > cap("pods", quantity::units) {
            Some("Too many pods")
        } else if used_cpu + cpu > cap("cpu", quantity::milli) {
            Some("Insufficient cpu")
        } else if used_memory + memory > cap("memory", quantity::units) {
            Some("Insufficient memory")
        } else {
            None
        };
        match reason {
            Some(r) => *reasons.entry(r).or_default() += 1,
            None if best.is_none_or(|(n, _)| count < n) => best = Some((count, name)),
            None => {}
        }
    }
    match best {
        Some((_, node)) => {
            let mut bound = pod.clone();
            bound["spec"]["nodeName"] = json!(node);
            c.access
                .update(&k.pods, &bound, false, "kube-scheduler")
                .await?;
        }
        None => {
            let why: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            let message = format!("0/{} nodes are available: {}.", nodes.len(), why.join(", "));
            let mut status = pod.get("status").cloned().unwrap_or(json!({}));
            status["phase"] = json!("Pending");
            let mut unschedulable =
                super::condition("PodScheduled", false, "Unschedulable", &message);
            unschedulable["lastProbeTime"] = Value::Null;
            status["conditions"] = json!([unschedulable]);
            status["qosClass"] = json!(qos(pod));
            write_status(c, &k.pods, pod, status).await?;
        }
    }
    Ok(())
}

fn qos(pod: &Value) -> &'static str {
    if requests(pod) == (0, 0) {
        "BestEffort"
    } else {
        "Burstable"
    }
}

/// The kubelet: a bound Pod runs and is Ready; a Job's Pod succeeds after a while.
async fn run(c: &Controllers, pod: &Value, node: &str) -> Result<Option<Duration>, ApiError> {
    let k = &c.access.kinds;
    let job_pod = controller_of(pod, "Job").is_some();
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if phase == Some("Running") {
        if !job_pod {
            return Ok(None);
        }
        let started = pod
            .pointer("/status/startTime")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .unwrap_or_else(jiff::Timestamp::now);
        let ran = (jiff::Timestamp::now() - started)
            .total(jiff::Unit::Millisecond)
            .unwrap_or(0.0)
            .max(0.0) as u64;
        let remaining = c
            .simulation
            .job_duration
            .saturating_sub(Duration::from_millis(ran));
        if !remaining.is_zero() {
            return Ok(Some(remaining));
        }
        write_status(c, &k.pods, pod, finished(pod)).await?;
        return Ok(None);
    }
    let node_ip = c
        .access
        .get(&k.nodes, "", node)
        .await?
        .and_then(|n| {
            n.pointer("/status/addresses/0/address")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_default();
    let n = c.next_pod_ip.fetch_add(1, Ordering::Relaxed);
    let pod_ip = std::net::Ipv4Addr::from(u32::from_be_bytes([10, 244, 0, 2]) + n).to_string();
    let now = meta::now();
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let containers: Vec<Value> = containers(pod)
        .enumerate()
        .map(|(i, ctr)| {
            json!({
                "name": ctr["name"],
                "image": ctr["image"],
                "imageID": format!("{}@sha256:simulated", ctr["image"].as_str().unwrap_or("")),
                "containerID": format!("fellowship://{}-{i}", meta::meta_str(pod, "uid")),
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    let status = json!({
        "phase": "Running",
        "conditions": [
            condition("PodReadyToStartContainers"),
            condition("Initialized"),
            condition("Ready"),
            condition("ContainersReady"),
            condition("PodScheduled"),
        ],
        "hostIP": node_ip,
        "hostIPs": [{"ip": node_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": now,
        "containerStatuses": containers,
        "qosClass": qos(pod),
    });
    write_status(c, &k.pods, pod, status).await?;
    Ok(job_pod.then_some(c.simulation.job_duration))
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A Pod whose containers exited 0.
fn finished(pod: &Value) -> Value {
    let now = meta::now();
    let mut status = pod.get("status").cloned().unwrap_or(json!({}));
    status["phase"] = json!("Succeeded");
    for c in status
        .get_mut("conditions")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if matches!(c["type"].as_str(), Some("Ready" | "ContainersReady")) {
            c["status"] = json!("False");
            c["reason"] = json!("PodCompleted");
            c["lastTransitionTime"] = json!(now);
        }
    }
    let started = status["startTime"].clone();
    for c in status
        .get_mut("containerStatuses")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        c["ready"] = json!(false);
        c["started"] = json!(false);
        c["state"] = json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": now}});
    }
    status
}
