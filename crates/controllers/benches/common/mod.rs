//! What the controller manager's benchmarks share: the load client's writes, the
//! servers' stores followed in process, and each phase's CPU, writes and memory.

#![allow(dead_code)] // each benchmark uses its own part of this

#[path = "../../tests/support/mod.rs"]
pub mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fellowship_apimachinery::ResourceKind;
use fellowship_apiserver::App;
use fellowship_localcluster::{Fleet, FleetConfig};
use fellowship_storage::{Error as StoreError, EventKind, KeyValue, ListOptions};
use fellowship_testkit::https::{Target, configmap, request, send};
use fellowship_testkit::{cpu_time, memory, mib, reset_peak_memory};
use futures::StreamExt;
use http_body_util::Full;
use hyper::Request;
use support::{Env, Manager};

pub const NAMESPACE: &str = "default";
pub const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
/// Every federated ConfigMap's name starts so; anything else in a member is not counted.
pub const PREFIX: &str = "fed-";
/// A wait for copies that sees none arrive for this long gives up: the controller manager
/// has stopped propagating, and waiting the full timeout would only hide it.
pub const STALL: Duration = Duration::from_secs(60);

/// Creates `names` as ConfigMaps on one server over `connections` connections.
pub async fn create_all(
    target: Arc<Target>,
    token: String,
    names: Arc<Vec<String>>,
    connections: usize,
) {
    write_all(target, names, connections, move |name| {
        vec![(request(&token, "POST", CONFIGMAPS, configmap(name)), 201)]
    })
    .await;
}

/// The member copies seen so far: for each name, how many clusters hold it and when the
/// last of them got it.
pub struct Copies {
    clusters: usize,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    names: HashMap<String, (usize, Instant)>,
    /// By phase, the part of a name after [`PREFIX`] and before the next `-`.
    phases: HashMap<String, Progress>,
}

#[derive(Clone, Copy, Default)]
pub struct Progress {
    pub copies: usize,
    /// Names every cluster holds, and when the latest of them became so.
    pub complete: usize,
    pub last: Option<Instant>,
}

fn phase_of(name: &str) -> &str {
    name.strip_prefix(PREFIX)
        .and_then(|n| n.split('-').next())
        .unwrap_or_default()
}

impl Copies {
    /// Copies of names each in `clusters` clusters.
    pub fn new(clusters: usize) -> Copies {
        Copies {
            clusters,
            seen: Mutex::new(Seen::default()),
        }
    }

    pub fn add(&self, name: &str, at: Instant) {
        let mut seen = self.seen.lock().expect("not poisoned");
        let entry = seen.names.entry(name.to_string()).or_insert((0, at));
        entry.0 += 1;
        entry.1 = at;
        let complete = entry.0 == self.clusters;
        let phase = seen.phases.entry(phase_of(name).to_string()).or_default();
        phase.copies += 1;
        if complete {
            phase.complete += 1;
            phase.last = Some(at);
        }
    }

    pub fn progress(&self, phase: &str) -> Progress {
        let seen = self.seen.lock().expect("not poisoned");
        seen.phases.get(phase).copied().unwrap_or_default()
    }

    /// When the last copy of `name` arrived, if every cluster holds it.
    pub fn completed(&self, name: &str) -> Option<Instant> {
        let seen = self.seen.lock().expect("not poisoned");
        seen.names
            .get(name)
            .filter(|(n, _)| *n == self.clusters)
            .map(|(_, at)| *at)
    }

    /// Waits until `names` objects of `phase` are in every cluster; when the last of them
    /// got there. `None` (with what was seen) after `limit`, or once no copy has arrived
    /// for [`STALL`].
    pub async fn until_complete(
        &self,
        phase: &str,
        names: usize,
        limit: Duration,
    ) -> Option<Instant> {
        let started = Instant::now();
        let mut told = started;
        let (mut before, mut moved) = (usize::MAX, started);
        loop {
            let Progress {
                copies,
                complete,
                last,
            } = self.progress(phase);
            if complete >= names {
                return Some(last.unwrap_or(started));
            }
            if copies != before {
                (before, moved) = (copies, Instant::now());
            }
            if told.elapsed() >= Duration::from_secs(10) {
                told = Instant::now();
                eprintln!(
                    "  ... {:.0} s: {copies} copies seen, {complete} of {names} objects in every cluster",
                    started.elapsed().as_secs_f64()
                );
            }
            let stalled = moved.elapsed() > STALL;
            if stalled || started.elapsed() > limit {
                println!(
                    "{phase}: gave up after {:.0} s{}: {complete} of {names} objects in every cluster ({copies} copies)",
                    started.elapsed().as_secs_f64(),
                    if stalled {
                        ", no new copy for a minute"
                    } else {
                        ""
                    }
                );
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Follows one member's ConfigMaps in its store, adding each new federated one to `copies`.
pub async fn observe(app: Arc<App>, copies: Arc<Copies>) {
    let configmaps = kind(&app, "", "v1", "configmaps");
    let mut known: HashSet<Arc<str>> = HashSet::new();
    follow_store(app, configmaps, NAMESPACE, move |kv, at| {
        if name_of(kv).starts_with(PREFIX) && known.insert(kv.key.clone()) {
            copies.add(name_of(kv), at);
        }
    })
    .await;
}

pub fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}

/// Sends, for each of `names`, the requests `requests` makes of it, one after another and
/// each answered with the status it names, over `connections` connections to one server,
/// each taking every `connections`-th name in turn.
pub async fn write_all(
    target: Arc<Target>,
    names: Arc<Vec<String>>,
    connections: usize,
    requests: impl Fn(&str) -> Vec<(Request<Full<Bytes>>, u16)> + Send + Sync + 'static,
) {
    let requests = Arc::new(requests);
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (target, names, requests) = (target.clone(), names.clone(), requests.clone());
            tokio::spawn(async move {
                let mut conn = target.connect().await;
                for name in names.iter().skip(c).step_by(connections) {
                    for (req, want) in requests(name) {
                        let status = send(&mut conn, req).await;
                        assert_eq!(status, want, "writing {name} on port {}", target.port);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a writer panicked");
    }
}

/// Writes, for each of `names`, the requests `requests` makes of it for a cluster (its
/// index and token), straight to every cluster of a fresh fleet of `config` (which then
/// goes), `connections` per cluster: how long the writes took and the CPU they cost (load
/// client and servers).
pub async fn direct_writes(
    config: FleetConfig,
    names: Arc<Vec<String>>,
    connections: usize,
    requests: impl Fn(usize, &str, &str) -> Vec<(Request<Full<Bytes>>, u16)>
    + Send
    + Sync
    + Clone
    + 'static,
) -> (Duration, Duration) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let fleet = Fleet::start(config, dir.path(), None)
        .await
        .expect("the baseline fleet");
    let cpu = cpu_time(None);
    let started = Instant::now();
    let writers: Vec<_> = (fleet.clusters.iter().enumerate())
        .map(|(i, c)| {
            let target = Arc::new(Target::new(c.port, fleet.ca_pem.as_bytes()));
            let (token, requests) = (c.token.clone(), requests.clone());
            let each = move |name: &str| requests(i, &token, name);
            tokio::spawn(write_all(target, names.clone(), connections, each))
        })
        .collect();
    for w in writers {
        w.await.expect("a cluster's writers panicked");
    }
    let took = started.elapsed();
    let cpu = cpu_time(None).saturating_sub(cpu);
    fleet.stop();
    (took, cpu)
}

/// The resource of `plural` a server serves, in its core or `apps` group.
pub fn kind(app: &App, group: &str, version: &str, plural: &str) -> Arc<ResourceKind> {
    app.surface
        .registry
        .get(group, version, plural)
        .expect("the server serves the resource")
        .clone()
}

/// The objects of `kind` in `namespace` of a server's store, as stored, and the revision
/// read at.
pub async fn stored(app: &App, kind: &ResourceKind, namespace: &str) -> (Vec<KeyValue>, u64) {
    let prefix = kind.key(namespace, "");
    let mut options = ListOptions {
        limit: Some(5000),
        ..Default::default()
    };
    let mut items = Vec::new();
    loop {
        let page = app
            .rest
            .store
            .list(&prefix, options.clone())
            .await
            .expect("list");
        items.extend(page.items);
        match page.continue_token {
            Some(token) => options.continue_token = Some(token),
            None => return (items, page.revision),
        }
    }
}

/// Follows the objects of `kind` in `namespace` of a server's store for as long as the task
/// runs, calling `seen` with each as it is written (created or changed), and when it was
/// seen. A watch dropped for falling behind resumes from a fresh list, each object listed
/// seen again (dated now, so a little late).
pub async fn follow_store(
    app: Arc<App>,
    kind: Arc<ResourceKind>,
    namespace: &'static str,
    mut seen: impl FnMut(&KeyValue, Instant),
) {
    let store = app.rest.store.clone();
    let prefix = kind.key(namespace, "");
    let mut after = store.current_revision().await.expect("a server's revision");
    loop {
        match store.watch(&prefix, after).await {
            Ok(mut events) => {
                while let Some(event) = events.next().await {
                    match event {
                        Ok(e) if e.kind != EventKind::Deleted => seen(&e.kv, Instant::now()),
                        Ok(_) => {}
                        Err(StoreError::TooOld { .. }) => break,
                        Err(e) => panic!("a server's watch failed: {e}"),
                    }
                }
            }
            Err(StoreError::TooOld { .. }) => {}
            Err(e) => panic!("a server's watch failed: {e}"),
        }
        let (items, revision) = stored(&app, &kind, namespace).await;
        for kv in &items {
            seen(kv, Instant::now());
        }
        after = revision;
    }
}

pub fn name_of(kv: &KeyValue) -> &str {
    kv.key.rsplit('/').next().unwrap_or_default()
}

/// Waits until the federation's store has taken no write for a second: the controller
/// manager has finished what the last phase gave it, its status reports included. How
/// long after `since` the last write came; `None` after `limit`.
pub async fn until_quiet(federation: &App, since: Instant, limit: Duration) -> Option<Duration> {
    let store = &federation.rest.store;
    let mut last = store.current_revision().await.expect("revision");
    let mut changed = Instant::now();
    while changed.elapsed() < Duration::from_secs(1) {
        if since.elapsed() > limit {
            println!("gave up waiting for the federation to go quiet");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = store.current_revision().await.expect("revision");
        if now != last {
            (last, changed) = (now, Instant::now());
        }
    }
    Some(changed.duration_since(since))
}

/// Writes so far: the federation's store revision and the sum of the members'.
pub async fn revisions(env: &Env) -> (u64, u64) {
    let mut members = 0;
    for c in &env.fleet.clusters {
        members += c.app.rest.store.current_revision().await.expect("revision");
    }
    let federation = env.federation.rest.store.current_revision().await;
    (federation.expect("revision"), members)
}

/// One phase's CPU, writes and controller-manager memory, from its start.
pub struct Phase<'a> {
    env: &'a Env,
    pid: u32,
    pub started: Instant,
    manager_cpu: Duration,
    bench_cpu: Duration,
    revisions: (u64, u64),
}

/// What a phase cost.
pub struct Figures {
    /// The controller manager's peak resident memory in the phase.
    pub peak: u64,
    pub manager_cpu: Duration,
    /// This process's CPU in the phase: servers, load, watches.
    pub bench_cpu: Duration,
    pub federation_writes: u64,
}

impl<'a> Phase<'a> {
    pub async fn start(env: &'a Env, manager: &Manager) -> Phase<'a> {
        let pid = manager.0.id();
        reset_peak_memory(Some(pid));
        Phase {
            env,
            pid,
            started: Instant::now(),
            manager_cpu: cpu_time(Some(pid)),
            bench_cpu: cpu_time(None),
            revisions: revisions(env).await,
        }
    }

    /// Prints the phase's figures.
    pub async fn end(&self, what: &str) -> Figures {
        let took = self.started.elapsed().as_secs_f64();
        let share = |d: Duration| d.as_secs_f64() / took * 100.0;
        let (rss, peak) = memory(Some(self.pid));
        let manager_cpu = cpu_time(Some(self.pid)).saturating_sub(self.manager_cpu);
        let bench_cpu = cpu_time(None).saturating_sub(self.bench_cpu);
        let (federation, members) = revisions(self.env).await;
        let federation_writes = federation - self.revisions.0;
        println!(
            "  {what}: controller-manager {:.0} MiB resident, peak {:.0} MiB; CPU over {took:.1} s: controller-manager {:.0}%, this process (servers, load, watches) {:.0}% of one core; writes: {federation_writes} to the federation, {} to the members",
            mib(rss),
            mib(peak),
            share(manager_cpu),
            share(bench_cpu),
            members - self.revisions.1,
        );
        Figures {
            peak,
            manager_cpu,
            bench_cpu,
            federation_writes,
        }
    }
}

/// The controller manager against the federation, serving its metrics on a port of its
/// own, with `flags` besides.
pub fn start_manager(env: &Env, flags: &[&str]) -> (Manager, u16) {
    let port = support::free_port();
    let mut all = vec![format!("--port={port}"), "--address=127.0.0.1".to_string()];
    all.extend(flags.iter().map(|f| f.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    (support::manager(env, &all), port)
}
