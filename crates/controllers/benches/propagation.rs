//! Propagation benchmark (issue 5): the controller manager, run as a child process so that
//! its memory is its own, propagates ConfigMaps from the federation API server to local
//! member clusters (both in this process), against the direct-write baseline of the local
//! clusters measured in the same run.
//!
//! - Baseline: a separate, identical fleet takes as many ConfigMaps per cluster as the burst
//!   creates in the federation, by direct writes with the load client of the clusters
//!   benchmark (same 1 KiB ConfigMaps, the same connections per server).
//! - Floor: what the federation API server itself must do for each federated object
//!   whatever the controller (the create, then the two patches and the event any controller
//!   following the contract makes: §6 finalizers, the per-cluster state, an event),
//!   written by the load client to a namespace then deleted, before the controller manager
//!   starts. Its CPU beside the baseline's gives the lowest ratio any controller could reach
//!   on this machine, where the federation, the members and the controller share the cores.
//! - Burst: ConfigMaps created in the federation as fast as the load client goes; the time
//!   from the first create until every member holds every copy, and its ratio to the
//!   baseline.
//! - Steady: creates at a steady rate; latency from each create's acknowledgement to its
//!   last member copy, p50 and p99.
//! - Cold start: the federation brought to its full count of objects in sync, the
//!   controller manager killed (SIGKILL) and started again; the time until its metrics say
//!   every cluster has reconciled them all and has nothing pending.
//!
//! The controller manager's memory (resident now, and its peak during the phase) and CPU
//! are printed after each phase. Member copies are seen through each member's store watch,
//! in process: a copy exists from the moment its cluster commits it, and the machine does
//! none of the work an HTTPS watch per member would add.
//!
//! `cargo bench -p fellowship-controllers --bench propagation`
//! Sizes: `FELLOWSHIP_BENCH_CLUSTERS` (10), `FELLOWSHIP_BENCH_CONFIGMAPS` (10000: the burst,
//! and what the baseline writes to each cluster), `FELLOWSHIP_BENCH_RATE` (100 creates/s)
//! for `FELLOWSHIP_BENCH_STEADY_SECONDS` (25), `FELLOWSHIP_BENCH_FEDERATED` (30000 objects
//! at the cold start; 100000 measures the memory target), `FELLOWSHIP_BENCH_CONNECTIONS`
//! (4 per server), `FELLOWSHIP_BENCH_TIMEOUT` (900: seconds any one wait may last).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::support::{self, Env, FEDERATION_TOKEN};
use common::{
    CONFIGMAPS, Copies, NAMESPACE, PREFIX, Phase, STALL, create_all, direct_writes, kind, name_of,
    observe, start_manager, stored, until_quiet, verdict, write_all,
};
use fellowship_apiserver::App;
use fellowship_apiserver::objects::present;
use fellowship_controllers::annotations::PROPAGATION;
use fellowship_localcluster::FleetConfig;
use fellowship_testkit::https::{Target, configmap, request, send};
use fellowship_testkit::{cpu_time, env_number, mib};

/// The federation namespace the floor's objects are written to, deleted after.
const FLOOR: &str = "bench-floor";
const GIB: f64 = (1u64 << 30) as f64;

/// Writes, for each of `names` in `namespace` of the federation, what the contract makes
/// the federation take for a federated object whatever its controller: the create, a
/// patch of its metadata (the §6 finalizers; a label here, so that the namespace can go
/// without a controller), a patch of its per-cluster state annotation and an event.
async fn federation_writes(
    target: Arc<Target>,
    token: String,
    namespace: &'static str,
    names: Arc<Vec<String>>,
    clusters: usize,
    connections: usize,
) {
    let state: HashMap<String, &str> = (0..clusters)
        .map(|c| (format!("cluster-{c:02}"), "Synced"))
        .collect();
    let state = serde_json::to_string(&state).expect("JSON");
    let base = format!("/api/v1/namespaces/{namespace}");
    write_all(target, names, connections, move |name| {
        let patch = |path: String, body: serde_json::Value| {
            let mut req = request(&token, "PATCH", &path, body.to_string().into());
            req.headers_mut().insert(
                "content-type",
                "application/merge-patch+json".parse().expect("a header value"),
            );
            (req, 200)
        };
        let object = format!("{base}/configmaps/{name}");
        let event = serde_json::json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": format!("{name}.")},
            "involvedObject": {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "namespace": namespace},
            "reason": "Synced", "type": "Normal",
            "message": format!("clusters {}: Synced", clusters),
            "source": {"component": "federation-controller-manager"},
        });
        vec![
            (request(&token, "POST", &format!("{base}/configmaps"), configmap(name)), 201),
            patch(object.clone(), serde_json::json!({"metadata": {"labels": {"floor": "finalizers"}}})),
            patch(object, serde_json::json!({"metadata": {"annotations": {PROPAGATION: state}}})),
            (request(&token, "POST", &format!("{base}/events"), event.to_string().into()), 201),
        ]
    })
    .await;
}

/// Waits until every federated ConfigMap says, in its propagation annotation, that all
/// `clusters` hold it: the controller manager has recorded the state a restart starts from.
/// `None` after `limit`, or once the count of the others has not fallen for [`STALL`].
async fn until_reported(federation: &App, clusters: usize, limit: Duration) -> Option<()> {
    let started = Instant::now();
    let kind = kind(federation, "", "v1", "configmaps");
    let (mut before, mut moved) = (usize::MAX, started);
    loop {
        let (items, _) = stored(federation, &kind, NAMESPACE).await;
        let unreported = items
            .iter()
            .filter(|kv| name_of(kv).starts_with(PREFIX))
            .filter(|kv| {
                let object = present(kv, &kind).expect("a stored ConfigMap");
                let states: HashMap<String, String> = object["metadata"]["annotations"]
                    [PROPAGATION]
                    .as_str()
                    .and_then(|a| serde_json::from_str(a).ok())
                    .unwrap_or_default();
                states.len() < clusters || states.values().any(|s| s != "Synced")
            })
            .count();
        if unreported == 0 {
            return Some(());
        }
        if unreported < before {
            (before, moved) = (unreported, Instant::now());
        }
        if moved.elapsed() > STALL || started.elapsed() > limit {
            println!(
                "gave up after {:.0} s: {unreported} federated ConfigMaps do not say every cluster has them",
                started.elapsed().as_secs_f64()
            );
            return None;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The sync controller's figures on the controller manager's `/metrics`: by cluster,
/// (reconciles done, keys pending). Empty while it does not answer.
async fn sync_metrics(port: u16) -> HashMap<String, (u64, u64)> {
    let text = tokio::task::spawn_blocking(move || support::try_http_get(port, "/metrics"))
        .await
        .expect("metrics reader")
        .unwrap_or_default();
    let mut out: HashMap<String, (u64, u64)> = HashMap::new();
    for line in text.lines() {
        let (which, rest) = if let Some(r) = line.strip_prefix("federation_sync_reconciles_total{")
        {
            (0, r)
        } else if let Some(r) = line.strip_prefix("federation_sync_pending{") {
            (1, r)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let Some(cluster) = labels
            .strip_prefix("cluster=\"")
            .and_then(|l| l.strip_suffix('"'))
        else {
            continue;
        };
        let value: u64 = value.trim().parse().unwrap_or(0);
        let entry = out.entry(cluster.to_string()).or_default();
        if which == 0 {
            entry.0 = value;
        } else {
            entry.1 = value;
        }
    }
    out
}

/// As the server binaries (`federation-apiserver`, `local-clusters`) this process stands in for.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    fellowship_apimachinery::process::no_transparent_huge_pages();
    let clusters = env_number("FELLOWSHIP_BENCH_CLUSTERS", 10);
    let burst = env_number("FELLOWSHIP_BENCH_CONFIGMAPS", 10_000);
    let rate = env_number("FELLOWSHIP_BENCH_RATE", 100).max(1);
    let steady_seconds = env_number("FELLOWSHIP_BENCH_STEADY_SECONDS", 25);
    let federated = env_number("FELLOWSHIP_BENCH_FEDERATED", 30_000);
    let connections = env_number("FELLOWSHIP_BENCH_CONNECTIONS", 4).max(1);
    let limit = Duration::from_secs(env_number("FELLOWSHIP_BENCH_TIMEOUT", 900) as u64);

    let env = Env::start_with(clusters);
    let names: Vec<String> = env.cluster_names();
    println!(
        "propagation benchmark: {clusters} local member clusters and the federation API server in this process, the controller manager a child process; 2 cores"
    );
    let micros = |cpu: Duration, n: usize| cpu.as_secs_f64() * 1e6 / n.max(1) as f64;

    // Baseline: the same writes straight to an identical fleet, which then goes away.
    let total_copies = clusters * burst;
    let direct_names: Arc<Vec<String>> = Arc::new(
        (0..burst)
            .map(|i| format!("{PREFIX}direct-{i:06}"))
            .collect(),
    );
    let (direct, direct_cpu) = env.runtime.block_on(direct_writes(
        FleetConfig::numbered(clusters, &[]),
        direct_names,
        connections,
        |_, token, name| vec![(request(token, "POST", CONFIGMAPS, configmap(name)), 201)],
    ));
    println!(
        "baseline: {total_copies} ConfigMaps written directly ({burst} to each of {clusters} clusters, {connections} connections each) in {:.2} s: {:.0} objects/s, {:.0} us of CPU each (load client and servers)",
        direct.as_secs_f64(),
        total_copies as f64 / direct.as_secs_f64(),
        micros(direct_cpu, total_copies)
    );

    // Floor: the federation's own writes for as many objects, in a namespace that then goes.
    let fed = Arc::new(Target::new(
        env.federation_port,
        env.fleet.ca_pem.as_bytes(),
    ));
    let token = FEDERATION_TOKEN.to_string();
    let floor_cpu = env.runtime.block_on(async {
        let (ok, out) = env.kubectl("federation", &["create", "namespace", FLOOR]);
        assert!(ok, "{out}");
        let names: Arc<Vec<String>> =
            Arc::new((0..burst).map(|i| format!("floor-{i:06}")).collect());
        let cpu = cpu_time(None);
        federation_writes(
            fed.clone(),
            token.clone(),
            FLOOR,
            names,
            clusters,
            connections * clusters,
        )
        .await;
        cpu_time(None).saturating_sub(cpu)
    });
    let (ok, out) = env.kubectl(
        "federation",
        &["delete", "namespace", FLOOR, "--timeout=300s"],
    );
    assert!(ok, "{out}");
    let floor = (direct_cpu + floor_cpu).as_secs_f64() / direct_cpu.as_secs_f64();
    println!(
        "floor: the federation's own writes for {burst} objects (the create, two patches and an event each, as the contract has any controller make) took {:.2} s of CPU, {:.0} us an object; with the baseline's {:.2} s for the members' creates, propagating on these shared cores costs at least {floor:.2} times the baseline's CPU before any work of the controller's own (its watches, caches, decisions)",
        floor_cpu.as_secs_f64(),
        micros(floor_cpu, burst),
        direct_cpu.as_secs_f64(),
    );

    // Every cluster a member; the controller manager started once they are registered.
    for name in &names {
        env.join(name);
    }
    let (manager, metrics_port) = start_manager(&env, &[]);
    let ready: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "Ready")).collect();
    env.until_status(&ready);

    let copies = Arc::new(Copies::new(clusters));
    let mut peak = 0u64;
    // Each phase goes on after one that did not finish: what it measures is then printed
    // with what it missed.
    let total = env.runtime.block_on(async {
        for c in &env.fleet.clusters {
            tokio::spawn(observe(c.app.clone(), copies.clone()));
        }
        // Burst.
        let reconciles = |m: HashMap<String, (u64, u64)>| m.values().map(|v| v.0).sum::<u64>();
        let reconciled = reconciles(sync_metrics(metrics_port).await);
        let phase = Phase::start(&env, &manager).await;
        let names: Arc<Vec<String>> = Arc::new((0..burst).map(|i| format!("{PREFIX}burst-{i:06}")).collect());
        let started = Instant::now();
        create_all(fed.clone(), token.clone(), names, connections).await;
        let created = started.elapsed().as_secs_f64();
        println!(
            "burst: {burst} ConfigMaps created in the federation in {created:.2} s ({:.0}/s)",
            burst as f64 / created
        );
        let burst_done = copies.until_complete("burst", burst, limit).await;
        match burst_done {
            Some(done) => {
                let took = done.duration_since(started);
                let ratio = took.as_secs_f64() / direct.as_secs_f64();
                println!(
                    "  all {total_copies} member copies after {:.2} s: {:.0} copies/s",
                    took.as_secs_f64(),
                    total_copies as f64 / took.as_secs_f64()
                );
                println!(
                    "  ratio to direct writes: {ratio:.2} (target <= 1.5): {}",
                    verdict(ratio <= 1.5)
                );
            }
            None => println!("  ratio to direct writes: none, the copies never all arrived (target <= 1.5): MISSED"),
        }
        if let Some(quiet) = until_quiet(&env.federation, started, limit).await {
            println!(
                "  the federation quiet (propagation states and events written) {:.2} s after the first create",
                quiet.as_secs_f64()
            );
        }
        let figures = phase.end("burst").await;
        let reconciled = reconciles(sync_metrics(metrics_port).await) - reconciled;
        println!(
            "  per object created: {:.1} writes to the federation (its create included); controller-manager CPU {:.0} us and {:.2} reconciles per member copy",
            figures.federation_writes as f64 / burst.max(1) as f64,
            micros(figures.manager_cpu, total_copies),
            reconciled as f64 / total_copies.max(1) as f64
        );
        let cpu = figures.manager_cpu + figures.bench_cpu;
        println!(
            "  CPU of the burst, both processes: {:.2} s, {:.2} times the baseline's (the floor: {floor:.2})",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() / direct_cpu.as_secs_f64()
        );
        peak = peak.max(figures.peak);

        // Steady: each of `connections` writers takes every `connections`-th tick.
        let phase = Phase::start(&env, &manager).await;
        let count = rate * steady_seconds;
        let period = Duration::from_secs(1) / rate as u32;
        let begin = tokio::time::Instant::now() + Duration::from_millis(50);
        let writers: Vec<_> = (0..connections)
            .map(|w| {
                let (target, token) = (fed.clone(), token.clone());
                tokio::spawn(async move {
                    let mut conn = target.connect().await;
                    let mut tick = tokio::time::interval_at(
                        begin + period * w as u32,
                        period * connections as u32,
                    );
                    let mut acks = Vec::new();
                    for i in (w..count).step_by(connections) {
                        tick.tick().await;
                        let name = format!("{PREFIX}steady-{i:06}");
                        let req = request(&token, "POST", CONFIGMAPS, configmap(&name));
                        let status = send(&mut conn, req).await;
                        assert_eq!(status, 201, "creating {name} in the federation");
                        acks.push((name, Instant::now()));
                    }
                    acks
                })
            })
            .collect();
        let mut acks = Vec::new();
        for w in writers {
            acks.extend(w.await.expect("a steady writer panicked"));
        }
        let offered = phase.started.elapsed().as_secs_f64();
        let steady_done = copies.until_complete("steady", count, limit).await.is_some();
        let mut latencies: Vec<Duration> = acks
            .iter()
            .filter_map(|(name, ack)| Some(copies.completed(name)?.saturating_duration_since(*ack)))
            .collect();
        latencies.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        if let Some(max) = latencies.last() {
            let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1];
            let (p50, p99) = (at(0.50), at(0.99));
            println!(
                "steady: {count} creates at {rate}/s ({:.0}/s achieved): from a create's acknowledgement to its last member copy p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms{}",
                count as f64 / offered,
                ms(p50),
                ms(p99),
                ms(*max),
                if steady_done { String::new() } else { format!(" (of the {} that reached every cluster)", latencies.len()) }
            );
            println!(
                "  p99 under 100 ms: {}",
                verdict(steady_done && p99 < Duration::from_millis(100))
            );
        } else {
            println!("steady: {count} creates at {rate}/s: none reached every cluster; p99 under 100 ms: MISSED");
        }
        until_quiet(&env.federation, Instant::now(), limit).await;
        peak = peak.max(phase.end("steady").await.peak);

        // The federation brought to its full count, in sync, before the kill.
        let phase = Phase::start(&env, &manager).await;
        let existing = burst + count;
        let fill = federated.saturating_sub(existing);
        let names: Arc<Vec<String>> = Arc::new((0..fill).map(|i| format!("{PREFIX}fill-{i:06}")).collect());
        let started = Instant::now();
        create_all(fed.clone(), token.clone(), names, connections).await;
        let fill_done = copies.until_complete("fill", fill, limit).await.is_some();
        let synced = started.elapsed().as_secs_f64();
        let in_sync = burst_done.is_some()
            && steady_done
            && fill_done
            && until_reported(&env.federation, clusters, limit).await.is_some();
        let quiet = until_quiet(&env.federation, started, limit).await;
        println!(
            "fill: {fill} more created: {} federated objects x {clusters} clusters{}",
            existing + fill,
            if fill_done {
                format!(", every copy in {synced:.2} s")
            } else {
                String::new()
            }
        );
        match quiet.filter(|_| in_sync) {
            Some(quiet) => println!(
                "  every state recorded and the federation quiet {:.2} s after the first create",
                quiet.as_secs_f64()
            ),
            None => println!(
                "  not all in sync before the kill: the cold start below also converges what is missing"
            ),
        }
        let what = format!("holding {} x {clusters}", existing + fill);
        peak = peak.max(phase.end(&what).await.peak);
        existing + fill
    });
    drop(manager);

    // Cold start: a fresh controller manager over everything in sync.
    let started = Instant::now();
    let (manager, metrics_port) = start_manager(&env, &[]);
    let figures = env.runtime.block_on(async {
        let phase = Phase::start(&env, &manager).await;
        let mut all_started = None;
        loop {
            let m = sync_metrics(metrics_port).await;
            if all_started.is_none() && m.len() >= clusters {
                all_started = Some(started.elapsed());
            }
            let in_sync = m.len() >= clusters
                && m.values()
                    .all(|(done, pending)| *done >= total as u64 && *pending == 0);
            if in_sync {
                let took = started.elapsed();
                println!(
                    "cold start: {total} federated objects x {clusters} clusters verified in sync {:.2} s after the start (every cluster reporting after {:.2} s)",
                    took.as_secs_f64(),
                    all_started.unwrap_or(took).as_secs_f64()
                );
                println!(
                    "  cold start under 30 s: {}",
                    verdict(took < Duration::from_secs(30))
                );
                break;
            }
            if started.elapsed() > limit {
                println!(
                    "cold start: not verified in {:.0} s; the sync metrics (reconciles, pending) say {m:?}",
                    limit.as_secs_f64()
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        phase.end("cold start").await
    });
    peak = peak.max(figures.peak);
    let at_target = total >= 100_000 && clusters >= 10;
    println!(
        "controller-manager peak memory: {:.0} MiB with {total} objects x {clusters} clusters ({:.1} KiB per member copy)",
        mib(peak),
        peak as f64 / 1024.0 / (total * clusters) as f64
    );
    if at_target {
        println!(
            "  under 1 GiB with 100,000 x 10: {}",
            verdict((peak as f64) < GIB)
        );
    } else {
        println!(
            "  the target (under 1 GiB) is for 100,000 objects x 10 clusters: FELLOWSHIP_BENCH_FEDERATED=100000 measures it"
        );
    }
    drop(manager);
}
