//! Local clusters benchmark: starts a fleet of clusters of 3 nodes in this process and
//! prints the time until every cluster serves and lists its nodes over HTTPS, the memory per
//! idle cluster, then the throughput of direct writes spread over the clusters (1,000
//! ConfigMaps and 100 Deployments of one replica each, over HTTPS, 4 connections per
//! cluster) and the memory after, once the clusters have run the Deployments' Pods. This is
//! the baseline the federation's propagation benchmark compares against.
//!
//! `cargo bench -p fellowship-localcluster --bench clusters`
//! `FELLOWSHIP_BENCH_CLUSTERS` (100), `FELLOWSHIP_BENCH_CONFIGMAPS` (1000) and
//! `FELLOWSHIP_BENCH_DEPLOYMENTS` (100) set the sizes, `FELLOWSHIP_BENCH_CONNECTIONS` (4) the
//! connections per cluster, `FELLOWSHIP_BENCH_CONTROLLER_QPS` (20, kube-controller-manager's
//! default; 0 unlimited) the clusters' control-loop write rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fellowship_localcluster::{Fleet, FleetConfig};
use fellowship_testkit::https::{Target, configmap, request, send};
use fellowship_testkit::{bench_runtime, cpu_time, env_number, memory, mib};

/// As the `local-clusters` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn deployment(name: &str) -> Bytes {
    let body = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    });
    Bytes::from(serde_json::to_vec(&body).unwrap())
}

/// GETs `path` on every cluster until `done` says the body is there.
async fn until_all(
    targets: &[(Arc<Target>, String)],
    path: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) {
    for (target, token) in targets {
        let mut conn = target.connect().await;
        loop {
            conn.ready().await.unwrap();
            let resp = conn
                .send_request(request(token, "GET", path, Bytes::new()))
                .await
                .unwrap();
            use http_body_util::BodyExt as _;
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if done(&value) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn main() {
    fellowship_apimachinery::process::no_transparent_huge_pages();
    let count = env_number("FELLOWSHIP_BENCH_CLUSTERS", 100);
    let configmaps = env_number("FELLOWSHIP_BENCH_CONFIGMAPS", 1000);
    let deployments = env_number("FELLOWSHIP_BENCH_DEPLOYMENTS", 100);
    let connections = env_number("FELLOWSHIP_BENCH_CONNECTIONS", 4);
    let qps = env_number("FELLOWSHIP_BENCH_CONTROLLER_QPS", 20) as u32;
    let dir = tempfile::tempdir().unwrap();
    let rt = bench_runtime();
    rt.block_on(async {
        let before = memory(None).0;
        let started = Instant::now();
        let mut config = FleetConfig::numbered(count, &[]);
        config.simulation.controller_qps = qps;
        let fleet = Fleet::start(config, dir.path(), None).await.unwrap();
        let serving = started.elapsed();
        let targets: Vec<(Arc<Target>, String)> = fleet
            .clusters
            .iter()
            .map(|c| (Arc::new(Target::new(c.port, fleet.ca_pem.as_bytes())), c.token.clone()))
            .collect();
        until_all(&targets, "/api/v1/nodes", |v| {
            v["items"].as_array().is_some_and(|i| i.len() == 3)
        })
        .await;
        let ready = started.elapsed();
        println!("local clusters benchmark, {count} clusters of 3 nodes in one process, 2 cores");
        println!(
            "each cluster's control loops write at most {qps}/s (burst 30) as kube-controller-manager's client does (0: unlimited)"
        );
        println!(
            "start: all serving in {:.0} ms, all listing their 3 nodes in {:.0} ms",
            serving.as_secs_f64() * 1000.0,
            ready.as_secs_f64() * 1000.0
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = memory(None).0.saturating_sub(before);
        println!(
            "idle memory: {:.0} MiB for {count} clusters, {:.2} MiB per cluster",
            mib(idle),
            mib(idle) / count as f64
        );

        // Direct writes: each connection creates its share of one cluster's objects.
        let cpu_before = cpu_time(None);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (ci, (target, token)) in targets.iter().enumerate() {
            for conn_index in 0..connections {
                let (target, token) = (target.clone(), token.clone());
                tasks.push(tokio::spawn(async move {
                    let mut conn = target.connect().await;
                    let mine = move |n: usize| (0..n).filter(move |i| i % connections == conn_index);
                    for i in mine(configmaps) {
                        let body = configmap(&format!("cm-{i}"));
                        let status = send(&mut conn, request(&token, "POST", "/api/v1/namespaces/default/configmaps", body)).await;
                        assert_eq!(status, 201, "cluster {ci}");
                    }
                    for i in mine(deployments) {
                        let body = deployment(&format!("web-{i}"));
                        let status = send(&mut conn, request(&token, "POST", "/apis/apps/v1/namespaces/default/deployments", body)).await;
                        assert_eq!(status, 201, "cluster {ci}");
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let took = started.elapsed().as_secs_f64();
        let cpu = (cpu_time(None) - cpu_before).as_secs_f64();
        let total = count * (configmaps + deployments);
        println!(
            "direct writes: {total} objects ({configmaps} ConfigMaps + {deployments} Deployments x {count} clusters, {connections} connections each) in {took:.2} s: {:.0} objects/s (target 20000)",
            total as f64 / took
        );
        println!(
            "  CPU during the writes (load generator, servers and simulation together): {:.0}% of one core",
            cpu / took * 100.0
        );
        println!("memory right after the writes: {:.0} MiB", mib(memory(None).0.saturating_sub(before)));
        let path = "/apis/apps/v1/namespaces/default/deployments";
        until_all(&targets, path, |v| {
            v["items"].as_array().is_some_and(|items| {
                items.len() == deployments
                    && items.iter().all(|d| d["status"]["availableReplicas"] == 1)
            })
        })
        .await;
        println!(
            "every Deployment available (one Ready Pod each) {:.2} s after the writes began",
            started.elapsed().as_secs_f64()
        );
        println!(
            "memory holding them: {:.0} MiB, {:.1} MiB per cluster",
            mib(memory(None).0.saturating_sub(before)),
            mib(memory(None).0.saturating_sub(before)) / count as f64
        );
        fleet.stop();
    });
}
