//! Simulated nodes: the configured number, spread over the cluster's zones, labelled with
//! zone and region under the current and the older keys (the federation's cluster
//! controller reads the older ones, spec §1.1), Ready, with capacity.

use fellowship_apimachinery::ApiError;
use serde_json::{Value, json};

use super::Controllers;

pub fn node_name(cluster: &str, i: usize) -> String {
    format!("{cluster}-node-{}", i + 1)
}

fn node(c: &Controllers, i: usize) -> Value {
    let cfg = &c.config;
    let name = node_name(&cfg.name, i);
    let zone = &cfg.zones[i % cfg.zones.len()];
    let capacity = json!({
        "cpu": cfg.node_capacity.cpu,
        "memory": cfg.node_capacity.memory,
        "pods": cfg.node_capacity.pods.to_string(),
        "ephemeral-storage": "100Gi",
    });
    let ready = super::condition(
        "Ready",
        true,
        "KubeletReady",
        "kubelet is posting ready status",
    );
    let healthy =
        |kind: &str, reason: &str, message: &str| super::condition(kind, false, reason, message);
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "fellowship-simulated",
                "topology.kubernetes.io/zone": zone,
                "topology.kubernetes.io/region": cfg.region,
                "failure-domain.beta.kubernetes.io/zone": zone,
                "failure-domain.beta.kubernetes.io/region": cfg.region,
            },
        },
        "spec": {"podCIDR": format!("10.244.{}.0/24", i + 1)},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                healthy("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                healthy("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                healthy("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                ready,
            ],
            "addresses": [
                {"type": "InternalIP", "address": node_ip(c.index, i)},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.33.0",
                "kubeProxyVersion": "v1.33.0",
                "containerRuntimeVersion": "fellowship://simulated",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "osImage": "Fellowship simulated node",
                "kernelVersion": "simulated",
                "machineID": name,
                "systemUUID": name,
                "bootID": name,
            },
        },
    })
}

pub fn node_ip(cluster_index: usize, node_index: usize) -> String {
    format!("172.18.{}.{}", cluster_index % 256, node_index + 2)
}

/// Creates the nodes that are missing.
pub async fn ensure(c: &Controllers) -> Result<(), ApiError> {
    let kind = &c.access.kinds.nodes;
    for i in 0..c.config.nodes {
        match c.access.create(kind, "", "kubelet", &node(c, i)).await {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
