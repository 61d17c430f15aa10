//! Scheduling benchmark (issue 13): the controller manager, a child process, spreads the
//! replicas of Deployments with preferences over local member clusters (in this process),
//! against the ConfigMap propagation burst of the same count measured in the same run.
//!
//! The member clusters run no workloads (`simulation.workloads: false`): they serve and
//! store the Deployments, and this benchmark writes what their controllers would, so that
//! the figures are the federation's and not ten simulated control planes'.
//!
//! - Baseline: ConfigMaps created in the federation as fast as the load client goes; the
//!   time until every member holds every copy.
//! - Burst: as many Deployments, each with `deployment-preferences` (every cluster weight 1,
//!   one of them 3) and 10 to 20 replicas; the time until every member's copy has the
//!   replicas the planner gives it, and its ratio to the baseline (target: at most 1.2).
//! - Status: every member reports its rollout done (a status write per copy, by the load
//!   client); the time from the last report until every federated Deployment's status is
//!   the sum, observed at its generation (target: under 5 s).
//! - Failover: one cluster stopped; the time from its Cluster turning Offline until every
//!   other member has the replicas the planner gives it over the rest (target: under 10 s).
//!
//! The controller manager's memory and CPU are printed after each phase.
//!
//! `cargo bench -p fellowship-controllers --bench scheduling`
//! Sizes: `FELLOWSHIP_BENCH_CLUSTERS` (10), `FELLOWSHIP_BENCH_DEPLOYMENTS` (10000),
//! `FELLOWSHIP_BENCH_CONNECTIONS` (4 per server), `FELLOWSHIP_BENCH_TIMEOUT` (900: seconds
//! any one wait may last).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::support::{Env, FEDERATION_TOKEN};
use common::{
    CONFIGMAPS, Copies, NAMESPACE, PREFIX, Phase, create_all, direct_writes, follow_store, kind,
    name_of, observe, start_manager, until_quiet, verdict, write_all,
};
use fellowship_apiserver::objects::present;
use fellowship_controllers::planner::{self, Preferences};
use fellowship_localcluster::FleetConfig;
use fellowship_storage::KeyValue;
use fellowship_testkit::env_number;
use fellowship_testkit::https::{Target, configmap, request};
use serde::Deserialize;
use serde_json::json;

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const PREFERENCES: &str = "federation.kubernetes.io/deployment-preferences";

/// The `i`th Deployment's name, preferences and replicas.
fn nth(i: usize, clusters: &[String]) -> (String, String, i64) {
    let favourite = &clusters[i % clusters.len()];
    let preferences = json!({"clusters": {"*": {"weight": 1}, favourite: {"weight": 3}}});
    (
        format!("{PREFIX}sched-{i:06}"),
        preferences.to_string(),
        10 + (i % 11) as i64,
    )
}

fn deployment(name: &str, preferences: &str, replicas: i64) -> Bytes {
    let body = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": {PREFERENCES: preferences}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "nginx:1.27",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}},
    });
    Bytes::from(serde_json::to_vec(&body).expect("JSON"))
}

/// Each cluster's share of a Deployment, as the planner gives it over `clusters` with
/// what they are asked to run now (`current`).
fn shares(
    preferences: &str,
    replicas: i64,
    clusters: &[&str],
    current: &BTreeMap<String, i64>,
    name: &str,
) -> BTreeMap<String, i64> {
    let preferences = Preferences::parse(preferences).expect("the benchmark's preferences");
    let plan = planner::plan(
        &preferences,
        replicas,
        clusters,
        current,
        &BTreeMap::new(),
        &format!("{NAMESPACE}/{name}"),
    );
    (plan.replicas.into_iter())
        .map(|(c, n)| {
            let overflow = plan.overflow.get(&c).copied().unwrap_or(0);
            (c, n + overflow)
        })
        .collect()
}

/// What the members' copies say and what a phase wants of them: by (cluster, name), the
/// replicas asked for and the replicas wanted; copies as wanted are added to `tally`.
#[derive(Default)]
struct Members {
    state: Mutex<Wanted>,
}

#[derive(Default)]
struct Wanted {
    replicas: HashMap<(usize, String), i64>,
    want: HashMap<(usize, String), i64>,
    done: HashSet<(usize, String)>,
    tally: Option<Arc<Copies>>,
}

impl Members {
    fn seen(&self, cluster: usize, name: &str, replicas: i64, at: Instant) {
        let mut s = self.state.lock().expect("not poisoned");
        let key = (cluster, name.to_string());
        s.replicas.insert(key.clone(), replicas);
        if s.want.get(&key) == Some(&replicas)
            && s.done.insert(key)
            && let Some(t) = &s.tally
        {
            t.add(name, at);
        }
    }

    /// A new phase: what it wants, counted into `tally` (copies as wanted already count now).
    fn expect(&self, want: HashMap<(usize, String), i64>, tally: Arc<Copies>) {
        let mut s = self.state.lock().expect("not poisoned");
        let now = Instant::now();
        s.done.clear();
        for (key, n) in &want {
            if s.replicas.get(key) == Some(n) {
                s.done.insert(key.clone());
                tally.add(&key.1, now);
            }
        }
        s.want = want;
        s.tally = Some(tally);
    }

    fn asked(&self, cluster: usize, name: &str) -> Option<i64> {
        let s = self.state.lock().expect("not poisoned");
        s.replicas.get(&(cluster, name.to_string())).copied()
    }
}

/// What the benchmark reads of a stored Deployment (the rest is skipped, not parsed: the
/// watches must cost the servers under test little).
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Peek {
    metadata: PeekMeta,
    spec: PeekSpec,
    status: PeekStatus,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PeekMeta {
    generation: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PeekSpec {
    replicas: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PeekStatus {
    observed_generation: i64,
    ready_replicas: i64,
    updated_replicas: i64,
}

fn peek(kv: &KeyValue) -> Peek {
    serde_json::from_slice(&kv.value).unwrap_or_default()
}

/// A stored Deployment's `spec.replicas`, found in its text without parsing it: members
/// store a hundred thousand of these in the burst, and a ConfigMap's watcher reads no
/// more than the key. Stored objects keep their fields in order (`metadata`, `spec`,
/// `status`; within `spec`, `replicas` before `template`).
fn spec_replicas(kv: &KeyValue) -> Option<i64> {
    let text = &kv.value[..];
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let spec = find(text, b"\"spec\":{")?;
    let at = spec + find(&text[spec..], b"\"replicas\":")? + b"\"replicas\":".len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&text[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// As the server binaries (`federation-apiserver`, `local-clusters`) this process stands in for.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    fellowship_apimachinery::process::no_transparent_huge_pages();
    let clusters = env_number("FELLOWSHIP_BENCH_CLUSTERS", 10).max(2);
    let count = env_number("FELLOWSHIP_BENCH_DEPLOYMENTS", 10_000);
    let connections = env_number("FELLOWSHIP_BENCH_CONNECTIONS", 4).max(1);
    let limit = Duration::from_secs(env_number("FELLOWSHIP_BENCH_TIMEOUT", 900) as u64);

    let mut fleet = FleetConfig::numbered(clusters, &[]);
    fleet.simulation.workloads = false;
    let mut env = Env::start_fleet(fleet);
    let names: Vec<String> = env.cluster_names();
    for name in &names {
        env.join(name);
    }
    // Clusters probed often enough to see the stopped one soon, and seldom enough that the
    // federation goes quiet between probes (their status writes) at the end of a phase.
    let (manager, _) = start_manager(&env, &["--cluster-monitor-period=5s"]);
    env.until_status(
        &names
            .iter()
            .map(|n| (n.as_str(), "Ready"))
            .collect::<Vec<_>>(),
    );
    println!(
        "scheduling benchmark: {clusters} local member clusters (no workloads run: this benchmark writes what their controllers would) and the federation API server in this process, the controller manager a child process; 2 cores"
    );
    let fed = Arc::new(Target::new(
        env.federation_port,
        env.fleet.ca_pem.as_bytes(),
    ));
    let token = FEDERATION_TOKEN.to_string();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let objects: Vec<(String, String, i64)> = (0..count).map(|i| nth(i, &names)).collect();
    // Each cluster's share of each Deployment, as planned over all the clusters.
    let mut planned = HashMap::new();
    for (name, preferences, replicas) in &objects {
        for (c, n) in shares(preferences, *replicas, &all, &BTreeMap::new(), name) {
            let index = names.iter().position(|x| *x == c).expect("a cluster");
            planned.insert((index, name.clone()), n);
        }
    }
    let planned = Arc::new(planned);

    // The members' own work, whatever the controller: as many ConfigMaps, then Deployments
    // (each cluster's share), written straight to an identical fleet.
    let object_names: Arc<Vec<String>> = Arc::new(objects.iter().map(|o| o.0.clone()).collect());
    let (members_configmaps, members_deployments) = env.runtime.block_on(async {
        let fleet = || {
            let mut fleet = FleetConfig::numbered(clusters, &[]);
            fleet.simulation.workloads = false;
            fleet
        };
        let configmaps = direct_writes(
            fleet(),
            object_names.clone(),
            connections,
            |_, token, name| vec![(request(token, "POST", CONFIGMAPS, configmap(name)), 201)],
        )
        .await;
        let planned = planned.clone();
        let preferences: Arc<HashMap<String, String>> =
            Arc::new(objects.iter().map(|o| (o.0.clone(), o.1.clone())).collect());
        let deployments = direct_writes(
            fleet(),
            object_names.clone(),
            connections,
            move |i, token, name| {
                let body = deployment(name, &preferences[name], planned[&(i, name.to_string())]);
                vec![(request(token, "POST", DEPLOYMENTS, body), 201)]
            },
        )
        .await;
        (configmaps, deployments)
    });
    let members_ratio = members_deployments.0.as_secs_f64() / members_configmaps.0.as_secs_f64();
    println!(
        "the members' own work: {} ConfigMaps written straight to them in {:.2} s ({:.2} s of CPU), as many Deployments in {:.2} s ({:.2} s of CPU): {members_ratio:.2} times as long",
        count * clusters,
        members_configmaps.0.as_secs_f64(),
        members_configmaps.1.as_secs_f64(),
        members_deployments.0.as_secs_f64(),
        members_deployments.1.as_secs_f64(),
    );

    let configmaps = Arc::new(Copies::new(clusters));
    let members = Arc::new(Members::default());
    let aggregated = Arc::new(Copies::new(1));
    let mut peak = 0u64;
    env.runtime.block_on(async {
        for (i, c) in env.fleet.clusters.iter().enumerate() {
            tokio::spawn(observe(c.app.clone(), configmaps.clone()));
            let (app, members) = (c.app.clone(), members.clone());
            let deployments = kind(&app, "apps", "v1", "deployments");
            tokio::spawn(follow_store(app, deployments, NAMESPACE, move |kv, at| {
                members.seen(i, name_of(kv), spec_replicas(kv).unwrap_or(1), at);
            }));
        }
        // A federated Deployment is aggregated once its status sums every member's report.
        let federation = env.federation.clone();
        let deployments = kind(&federation, "apps", "v1", "deployments");
        let (tally, mut told) = (aggregated.clone(), HashSet::new());
        tokio::spawn(follow_store(federation, deployments, NAMESPACE, move |kv, at| {
            let d = peek(kv);
            let replicas = d.spec.replicas.unwrap_or(1);
            let done = d.status.observed_generation == d.metadata.generation
                && d.status.ready_replicas == replicas
                && d.status.updated_replicas == replicas;
            if done && told.insert(name_of(kv).to_string()) {
                tally.add(name_of(kv), at);
            }
        }));

        // Baseline: ConfigMaps.
        let phase = Phase::start(&env, &manager).await;
        let cm_names: Arc<Vec<String>> = Arc::new((0..count).map(|i| format!("{PREFIX}baseline-{i:06}")).collect());
        let started = Instant::now();
        create_all(fed.clone(), token.clone(), cm_names, connections).await;
        let baseline = configmaps.until_complete("baseline", count, limit).await.map(|done| done.duration_since(started));
        match baseline {
            Some(took) => println!(
                "baseline: {count} ConfigMaps created in the federation, all {} member copies after {:.2} s",
                count * clusters,
                took.as_secs_f64()
            ),
            None => println!("baseline: the ConfigMap copies never all arrived"),
        }
        until_quiet(&env.federation, started, limit).await;
        peak = peak.max(phase.end("baseline").await.peak);

        // Burst: Deployments, each cluster's copy with its share.
        let phase = Phase::start(&env, &manager).await;
        let burst = Arc::new(Copies::new(clusters));
        members.expect((*planned).clone(), burst.clone());
        let bodies: Arc<HashMap<String, Bytes>> = Arc::new(
            objects.iter().map(|(n, p, r)| (n.clone(), deployment(n, p, *r))).collect(),
        );
        let started = Instant::now();
        let to_create: Arc<Vec<String>> = Arc::new(objects.iter().map(|o| o.0.clone()).collect());
        let (t, b) = (token.clone(), bodies.clone());
        write_all(fed.clone(), to_create, connections, move |name| {
            vec![(request(&t, "POST", DEPLOYMENTS, b[name].clone()), 201)]
        })
        .await;
        let created = started.elapsed().as_secs_f64();
        println!("burst: {count} Deployments with preferences created in the federation in {created:.2} s ({:.0}/s)", count as f64 / created);
        match burst.until_complete("sched", count, limit).await.map(|done| done.duration_since(started)) {
            Some(took) => {
                println!(
                    "  every member's copy with its planned replicas after {:.2} s ({} copies)",
                    took.as_secs_f64(),
                    count * clusters
                );
                match baseline {
                    Some(base) => {
                        let ratio = took.as_secs_f64() / base.as_secs_f64();
                        println!(
                            "  against the ConfigMap burst ({:.2} s): {ratio:.2} (target: scheduling adds at most 20 %, <= 1.20): {}",
                            base.as_secs_f64(),
                            verdict(ratio <= 1.2)
                        );
                        println!(
                            "  the members alone take {members_ratio:.2} times as long for these Deployments as for ConfigMaps: beyond that, scheduling adds {:.0} %",
                            (ratio / members_ratio - 1.0) * 100.0
                        );
                    }
                    None => println!("  against the ConfigMap burst: none to compare with: MISSED"),
                }
            }
            None => println!("  the copies never all had their shares (target <= 1.20): MISSED"),
        }
        if let Some(quiet) = until_quiet(&env.federation, started, limit).await {
            println!("  the federation quiet (states, shares, statuses written) {:.2} s after the first create", quiet.as_secs_f64());
        }
        peak = peak.max(phase.end("burst").await.peak);

        // Status: every member reports its rollout done.
        let phase = Phase::start(&env, &manager).await;
        let started = Instant::now();
        let reports: Vec<_> = env
            .fleet
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let target = Arc::new(Target::new(c.port, env.fleet.ca_pem.as_bytes()));
                let (token, members) = (c.token.clone(), members.clone());
                let to_report: Arc<Vec<String>> = Arc::new(objects.iter().map(|o| o.0.clone()).collect());
                tokio::spawn(write_all(target, to_report, connections, move |name| {
                    let n = members.asked(i, name).unwrap_or(0);
                    let status = json!({"status": {"observedGeneration": 1, "replicas": n, "updatedReplicas": n,
                        "readyReplicas": n, "availableReplicas": n,
                        "conditions": [
                            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
                            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": "ReplicaSet has successfully progressed."}]}});
                    let mut req = request(&token, "PATCH", &format!("{DEPLOYMENTS}/{name}/status"), status.to_string().into());
                    req.headers_mut().insert("content-type", "application/merge-patch+json".parse().expect("a header value"));
                    vec![(req, 200)]
                }))
            })
            .collect();
        for r in reports {
            r.await.expect("a member's reports");
        }
        let reported = started.elapsed();
        println!(
            "status: {} member reports (every copy rolled out) written in {:.2} s",
            count * clusters,
            reported.as_secs_f64()
        );
        match aggregated.until_complete("sched", count, limit).await {
            Some(done) => {
                let after = done.saturating_duration_since(started + reported);
                println!(
                    "  all {count} federated statuses summed and observed {:.2} s after the last report ({:.2} s after the first); under 5 s: {}",
                    after.as_secs_f64(),
                    done.duration_since(started).as_secs_f64(),
                    verdict(after < Duration::from_secs(5))
                );
            }
            None => println!("  the federated statuses never all summed (target under 5 s): MISSED"),
        }
        until_quiet(&env.federation, started, limit).await;
        peak = peak.max(phase.end("status").await.peak);
    });

    // Failover: the last cluster stopped; the others get its replicas.
    let gone = names.len() - 1;
    let rest: Vec<&str> = all[..gone].to_vec();
    let mut want = HashMap::new();
    for (name, preferences, replicas) in &objects {
        let current: BTreeMap<String, i64> = (rest.iter().enumerate())
            .filter_map(|(i, c)| Some((c.to_string(), members.asked(i, name)?)))
            .collect();
        for (c, n) in shares(preferences, *replicas, &rest, &current, name) {
            let index = names.iter().position(|x| *x == c).expect("a cluster");
            want.insert((index, name.clone()), n);
        }
    }
    let moved = want
        .iter()
        .filter(|(k, n)| members.asked(k.0, &k.1) != Some(**n))
        .count();
    let failover = Arc::new(Copies::new(gone));
    let offline: Arc<Mutex<Option<Instant>>> = Arc::default();
    env.runtime.block_on(async {
        let federation = env.federation.clone();
        let kind = kind(&federation, "federation", "v1beta1", "clusters");
        let (offline, stopped) = (offline.clone(), names[gone].clone());
        tokio::spawn(follow_store(federation, kind.clone(), "", move |kv, at| {
            let Ok(c) = present(kv, &kind) else { return };
            let is_offline = c["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Offline" && c["status"] == "True")
            });
            if name_of(kv) == stopped && is_offline {
                offline.lock().expect("not poisoned").get_or_insert(at);
            }
        }));
    });
    members.expect(want, failover.clone());
    let stopped_at = Instant::now();
    assert!(env.fleet.pause_cluster(&names[gone]));
    let phase = env.runtime.block_on(Phase::start(&env, &manager));
    env.runtime.block_on(async {
        println!("failover: {} stopped; {moved} copies in the other {gone} clusters to change", names[gone]);
        let done = failover.until_complete("sched", count, limit).await;
        let seen = *offline.lock().expect("not poisoned");
        match (done, seen) {
            (Some(done), Some(seen)) => {
                let after = done.saturating_duration_since(seen);
                println!(
                    "  seen Offline {:.2} s after it stopped; every replica re-planned onto the other {gone} {:.2} s after that; under 10 s: {}",
                    seen.duration_since(stopped_at).as_secs_f64(),
                    after.as_secs_f64(),
                    verdict(after < Duration::from_secs(10))
                );
            }
            _ => println!("  the replicas were never all re-planned (target under 10 s after Offline): MISSED"),
        }
        peak = peak.max(phase.end("failover").await.peak);
    });
    println!(
        "controller-manager peak memory over the run: {:.0} MiB",
        fellowship_testkit::mib(peak)
    );
    drop(manager);
}
