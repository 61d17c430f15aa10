//! Propagation of federated objects (spec §4.3, §5, §6): every object of the federated
//! types goes, as the federation holds it, to the Ready member clusters its cluster-selector
//! annotation selects, stays in step there (a copy edited or deleted in a member is put
//! back), and leaves the clusters no longer selected.
//!
//! Each member cluster has its own worker, queue and caches, so a slow or offline member
//! delays no other; a member that turns Ready is brought up to date at once. Copies carry a
//! marker annotation: a same-named object Fellowship did not create is left alone. Deletion
//! follows §6: federated objects carry the `orphan` and delete-from-underlying-clusters
//! finalizers; a cascading delete removes the member copies (in every registered cluster,
//! waiting for those not Ready), an orphaning one leaves them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{Hash as _, Hasher as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::core::Request;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource as _, ResourceExt as _};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::cluster::cluster_resource;
use crate::copies::{Copies, Copy, Judge, Key, Raw, key_of};
use crate::members;
use crate::metrics::Metrics;
use crate::selector::Selector;

/// On every member copy: what Fellowship created and may change or delete.
pub const MANAGED: &str = "federation.fellowship.io/managed";
/// On every federated object: its state in each cluster, as JSON (`{"gondor": "Synced"}`).
pub const PROPAGATION: &str = "federation.fellowship.io/propagation";
/// Set to `"true"` on a federated object to take over same-named objects in the members
/// that Fellowship did not create (they are left alone otherwise).
pub const ADOPT: &str = "federation.fellowship.io/adopt";
pub const DELETE_FROM_CLUSTERS: &str = "federation.kubernetes.io/delete-from-underlying-clusters";
pub const ORPHAN: &str = "orphan";

/// For the types named (by plural), how many of their objects are reconciled at once in
/// each member, where not [`CONCURRENCY`] (`--concurrent-service-syncs` and the like).
pub type Concurrency = BTreeMap<String, usize>;

/// The namespaces every cluster makes for itself.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];
/// How long a member cluster may take to list what it holds before its start is retried.
const MEMBER_START: Duration = Duration::from_secs(120);
/// How long a failed or unfinished reconcile waits before it runs again.
const RETRY: Duration = Duration::from_secs(1);
/// Reconciles running at once per member, and of each type: enough to keep a member's API
/// busy while each waits for its round trip. A type given another limit ([`Concurrency`])
/// keeps to it, and a limit above this one raises the member's total to it.
const CONCURRENCY: usize = 16;
/// How long state changes gather before they are written, so that an object reaching ten
/// clusters gets one annotation write and one event, not ten.
const PUBLISH_BATCH: Duration = Duration::from_millis(100);

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The federated types and whether each is namespaced; seed-era `extensions/v1beta1`
/// objects are read through their current versions, so they reach members as those.
pub fn types() -> Vec<(ApiResource, bool)> {
    vec![
        (resource("", "v1", "Namespace", "namespaces"), false),
        (resource("", "v1", "ConfigMap", "configmaps"), true),
        (resource("", "v1", "Secret", "secrets"), true),
        (resource("", "v1", "Service", "services"), true),
        (resource("apps", "v1", "DaemonSet", "daemonsets"), true),
        (resource("apps", "v1", "Deployment", "deployments"), true),
        (resource("apps", "v1", "ReplicaSet", "replicasets"), true),
        (resource("batch", "v1", "Job", "jobs"), true),
        (
            resource(
                "autoscaling",
                "v2",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
            ),
            true,
        ),
        (
            resource("networking.k8s.io", "v1", "Ingress", "ingresses"),
            true,
        ),
    ]
}

/// The types to propagate: those `--controllers` leaves on whose resource the federation
/// API serves (spec §4.2: a missing resource skips its controller with a warning, unless
/// the controller was asked for by name).
pub async fn enabled_types(
    federation: &Client,
    controllers: &crate::options::Controllers,
) -> anyhow::Result<Vec<(ApiResource, bool)>> {
    let mut served: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut out = Vec::new();
    for (ar, namespaced) in types() {
        let asked = controllers.get(&ar.plural).copied();
        if asked == Some(false) {
            tracing::info!(controller = %ar.plural, "turned off by --controllers");
            continue;
        }
        if !served.contains_key(&ar.api_version) {
            let resources = if ar.group.is_empty() {
                federation.list_core_api_resources(&ar.version).await
            } else {
                federation.list_api_group_resources(&ar.api_version).await
            };
            let names = match resources {
                Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
                Err(kube::Error::Api(e)) if e.code == 404 => BTreeSet::new(),
                Err(e) => {
                    anyhow::bail!("discovering {} in the federation API: {e}", ar.api_version)
                }
            };
            served.insert(ar.api_version.clone(), names);
        }
        if served[&ar.api_version].contains(&ar.plural) {
            out.push((ar, namespaced));
        } else if asked == Some(true) {
            anyhow::bail!(
                "--controllers asks for {} but the federation API does not serve {}/{}",
                ar.plural,
                ar.api_version,
                ar.plural
            );
        } else {
            tracing::warn!(controller = %ar.plural, api = %ar.api_version, "the federation API does not serve this resource; its controller is off");
        }
    }
    Ok(out)
}

fn api(client: &Client, ar: &ApiResource, namespaced: bool, namespace: &str) -> Api<DynamicObject> {
    if namespaced {
        Api::namespaced_with(client.clone(), namespace, ar)
    } else {
        Api::all_with(client.clone(), ar)
    }
}

/// A merge patch of a federated object; the reply is read for its version only.
async fn merge_patch(
    client: &Client,
    ar: &ApiResource,
    namespaced: bool,
    (_, ns, name): &Key,
    patch: &Value,
) -> Result<Written, kube::Error> {
    let url = DynamicObject::url_path(ar, namespaced.then_some(&**ns));
    let request = Request::new(url)
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .map_err(kube::Error::BuildRequest)?;
    client.request::<Written>(request).await
}

fn object_ref(ar: &ApiResource, namespace: &str, name: &str) -> ObjectRef<DynamicObject> {
    let r = ObjectRef::new_with(name, ar.clone());
    if namespace.is_empty() {
        r
    } else {
        r.within(namespace)
    }
}

/// Runs a reflector into a new store, sending the key of every object it sees. A relisting
/// (after a watch fell too far behind) replaces the store's contents only when it is
/// complete, so the keys it brings, and those of objects it no longer has, are sent then:
/// reconciled earlier, they would find the old contents, and an object created meanwhile
/// would look gone.
fn follow(
    client: &Client,
    ar: &ApiResource,
    index: usize,
    keys: mpsc::UnboundedSender<Key>,
) -> (Store<DynamicObject>, JoinHandle<()>) {
    let writer = reflector::store::Writer::new(ar.clone());
    let store = writer.as_reader();
    let stream = watcher(
        Api::<DynamicObject>::all_with(client.clone(), ar),
        watcher::Config::default(),
    )
    .default_backoff();
    let held = store.clone();
    let task = tokio::spawn(async move {
        // managedFields are never read here and are often the bulk of an object.
        let stream = stream.modify(|o| o.managed_fields_mut().clear());
        let mut events = reflector::reflector(writer, stream).boxed();
        let key = |o: &DynamicObject| key_of(index, &o.metadata);
        let mut listing: Vec<Key> = Vec::new();
        // What the store held when a relisting began: those not listed again were deleted
        // while the watch was down, and no event says so.
        let mut before: HashSet<Key> = HashSet::new();
        while let Some(event) = events.next().await {
            let ready: Vec<Key> = match event {
                Ok(watcher::Event::Init) => {
                    listing.clear();
                    before = held.state().iter().map(|o| key(o)).collect();
                    Vec::new()
                }
                Ok(watcher::Event::InitApply(o)) => {
                    let k = key(&o);
                    before.remove(&k);
                    listing.push(k);
                    Vec::new()
                }
                Ok(watcher::Event::InitDone) => {
                    listing.extend(before.drain());
                    std::mem::take(&mut listing)
                }
                Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => vec![key(&o)],
                Err(_) => Vec::new(),
            };
            for k in ready {
                if keys.send(k).is_err() {
                    return;
                }
            }
        }
    });
    (store, task)
}

/// What a write's reply says that matters here: the version it made. (The rest of the
/// object is skipped unread.)
#[derive(serde::Deserialize)]
struct Written {
    metadata: WrittenMeta,
}

#[derive(serde::Deserialize)]
struct WrittenMeta {
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
}

/// A member copy as this controller writes it: its JSON text, and which version of it this
/// is (a hash of the text).
pub struct Desired {
    pub text: Vec<u8>,
    pub print: u64,
}

/// A member copy's metadata, as [`Desired`] writes it (fields in the order JSON objects
/// keep theirs, so the text is the same as the object's).
#[derive(serde::Serialize)]
struct CopyMeta<'a> {
    annotations: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a BTreeMap<String, String>>,
    name: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
}

/// One top-level field of a member copy.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Part<'a> {
    Text(&'a str),
    Value(&'a Value),
    Meta(CopyMeta<'a>),
}

impl Desired {
    /// What a member copy of `object` is made of: name, namespace, labels, annotations (and
    /// the marker), and everything but metadata and status. Written straight from the
    /// federated object (each member's reconcile makes one; no copy of the object is built).
    pub fn of(object: &DynamicObject) -> Desired {
        let mut out: BTreeMap<&str, Part> = BTreeMap::new();
        if let Some(t) = &object.types {
            out.insert("apiVersion", Part::Text(&t.api_version));
            out.insert("kind", Part::Text(&t.kind));
        }
        for (k, v) in object.data.as_object().into_iter().flatten() {
            if !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind") {
                out.insert(k, Part::Value(v));
            }
        }
        let meta = &object.metadata;
        let mut annotations: BTreeMap<&str, &str> = meta
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| {
                // Each member's deployment controller writes its own revision: copying the
                // federated one (there when it was copied from a cluster) would fight it
                // (spec §4.3).
                !matches!(
                    k.as_str(),
                    PROPAGATION | ADOPT | "deployment.kubernetes.io/revision"
                )
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        annotations.insert(MANAGED, "true");
        let metadata = CopyMeta {
            annotations,
            labels: meta.labels.as_ref(),
            name: &meta.name,
            namespace: meta.namespace.as_deref(),
        };
        out.insert("metadata", Part::Meta(metadata));
        let text = serde_json::to_vec(&out).expect("JSON values serialize");
        let mut h = std::hash::DefaultHasher::new();
        text.hash(&mut h);
        Desired {
            text,
            print: h.finish(),
        }
    }

    /// The copy as a JSON value, to compare with what a member holds.
    pub fn object(&self) -> Value {
        serde_json::from_slice(&self.text).expect("written as JSON above")
    }
}

/// Whether `have` holds everything `want` says: fields members fill in themselves (a
/// Service's cluster IP and node ports, defaults, annotations their controllers add) are
/// no reason to write.
pub fn covers(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w.iter().all(|(k, wv)| {
            h.get(k).is_some_and(|hv| covers(hv, wv)) || (wv.is_null() && h.get(k).is_none())
        }),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(h, w)| covers(h, w))
        }
        (h, w) => h == w,
    }
}

/// `have` with `want` written over it (maps merged, everything else replaced).
fn merge(have: &mut Value, want: &Value) {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => {
            for (k, wv) in w {
                match h.get_mut(k) {
                    Some(hv) if hv.is_object() && wv.is_object() => merge(hv, wv),
                    _ => {
                        h.insert(k.clone(), wv.clone());
                    }
                }
            }
        }
        (h, w) => *h = w.clone(),
    }
}

/// A member cluster being kept in step: its clients, what it holds, its worker.
struct Member {
    labels: BTreeMap<String, String>,
    client: Client,
    /// Reads and writes copies (watches and deletes go through `client`).
    writer: members::Writer,
    copies: Vec<Arc<Copies>>,
    keys: mpsc::UnboundedSender<Key>,
    /// Its watches and worker, which stop with it.
    tasks: Mutex<Vec<AbortOnDrop>>,
}

pub struct SyncController {
    pub federation: Client,
    pub host: Client,
    pub namespace: String,
    types: Vec<(ApiResource, bool)>,
    /// By type index, its reconciles at once per member.
    concurrency: Vec<usize>,
    metrics: Arc<Metrics>,
    federated: Mutex<Vec<Store<DynamicObject>>>,
    members: Mutex<HashMap<String, Arc<Member>>>,
    /// Clusters whose member is being started.
    starting: Mutex<BTreeSet<String>>,
    /// The Ready clusters and their labels, as last seen: a member whose cluster left or
    /// changed while it was starting is not kept.
    ready: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// The last state known of each object in each cluster (seeded from the object's
    /// annotation, so a restart rewrites nothing that did not change).
    states: Mutex<HashMap<Key, States>>,
    /// What each federated object's copies are made of, and which object it is, as last
    /// sent to the members.
    fingerprints: Mutex<HashMap<Key, Fingerprint>>,
    /// State changes not yet written, by object; the publisher batches them.
    unpublished: Mutex<BTreeMap<Key, Vec<(Text, Text)>>>,
    publish: Notify,
}

/// What a federated object's copies are made of, and which object it is.
#[derive(Clone, Copy, PartialEq)]
struct Fingerprint {
    /// [`Desired::print`].
    print: u64,
    /// It takes over same-named objects ([`ADOPT`]).
    adopt: bool,
    /// A hash of its uid.
    uid: u64,
}

/// A cluster name or an object's state in a cluster.
type Text = Arc<str>;

/// An object's state in each cluster. A million of these strings (100,000 objects in 10
/// clusters) would be a million allocations: each member's name and the states every
/// object may have are shared.
type States = BTreeMap<Text, Text>;

/// A state as [`States`] keeps it: the common ones shared, any other (a failure's message,
/// what an annotation said) the object's own.
fn state_text(state: String) -> Text {
    static COMMON: std::sync::LazyLock<[Text; 2]> =
        std::sync::LazyLock::new(|| ["Synced".into(), "NotSelected".into()]);
    match COMMON.iter().find(|t| ***t == *state) {
        Some(t) => t.clone(),
        None => state.into(),
    }
}

/// Whether a member turned a request away for now (throttled or unavailable): retried
/// without reporting a failure, as kube's clients retry these themselves.
fn busy(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<kube::Error>(), Some(kube::Error::Api(s)) if matches!(s.code, 429 | 503 | 504))
}

/// A reconcile to run again without reporting a failure: the cache has not caught up.
#[derive(Debug)]
struct LookAgain;

impl std::fmt::Display for LookAgain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the member's cache has not caught up")
    }
}

impl std::error::Error for LookAgain {}

impl SyncController {
    /// A controller for `types` (a selection of [`types()`]).
    pub fn new(
        federation: Client,
        host: Client,
        namespace: String,
        types: Vec<(ApiResource, bool)>,
        concurrency: &Concurrency,
        metrics: Arc<Metrics>,
    ) -> Arc<SyncController> {
        let concurrency = (types.iter())
            .map(|(ar, _)| concurrency.get(&ar.plural).copied().unwrap_or(CONCURRENCY))
            .collect();
        Arc::new(SyncController {
            concurrency,
            federation,
            host,
            namespace,
            types,
            metrics,
            federated: Mutex::new(Vec::new()),
            members: Mutex::new(HashMap::new()),
            starting: Mutex::new(BTreeSet::new()),
            ready: Mutex::new(BTreeMap::new()),
            states: Mutex::new(HashMap::new()),
            fingerprints: Mutex::new(HashMap::new()),
            unpublished: Mutex::new(BTreeMap::new()),
            publish: Notify::new(),
        })
    }

    fn federated_store(&self, index: usize) -> Store<DynamicObject> {
        self.federated.lock().expect("not poisoned")[index].clone()
    }

    fn federated(&self, (index, ns, name): &Key) -> Option<Arc<DynamicObject>> {
        let (ar, _) = &self.types[*index];
        self.federated_store(*index).get(&object_ref(ar, ns, name))
    }

    /// Runs until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let publisher = tokio::spawn(self.clone().publisher());
        let _stop_publisher = AbortOnDrop(publisher);
        // Federated objects whose finalizers are to be seen to, for the finalizer worker.
        let (finalize, finalize_rx) = mpsc::unbounded_channel::<Key>();
        let finalizer = tokio::spawn(self.clone().finalizer(finalize.clone(), finalize_rx));
        let _stop_finalizer = AbortOnDrop(finalizer);
        // These reflectors run as long as the process: their tasks are not kept.
        let (fed_tx, mut fed_rx) = mpsc::unbounded_channel::<Key>();
        for (i, (ar, _)) in self.types.iter().enumerate() {
            let (store, _) = follow(&self.federation, ar, i, fed_tx.clone());
            self.federated.lock().expect("not poisoned").push(store);
        }
        for i in 0..self.types.len() {
            let _ = self.federated_store(i).wait_until_ready().await;
        }
        let (cluster_tx, mut cluster_rx) = mpsc::unbounded_channel::<Key>();
        let (clusters, _) = follow(
            &self.federation,
            &cluster_resource(),
            usize::MAX,
            cluster_tx,
        );
        let _ = clusters.wait_until_ready().await;
        self.clusters_changed(&clusters);
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                Some(key) = fed_rx.recv() => {
                    if self.changed_for_members(&key) {
                        let members: Vec<Arc<Member>> = self.members.lock().expect("not poisoned").values().cloned().collect();
                        for m in members {
                            let _ = m.keys.send(key.clone());
                        }
                    }
                    let _ = finalize.send(key);
                }
                Some(_) = cluster_rx.recv() => self.clusters_changed(&clusters),
                _ = tick.tick() => self.clusters_changed(&clusters),
            }
        }
    }

    /// Whether a federated object changed in what its copies are made of (its finalizers
    /// or propagation state alone do not): the members look again only then. An object
    /// gone, or another one under its name (deleted and created again), also drops the
    /// states known of it: they are not the new object's to keep from being reported.
    fn changed_for_members(&self, key: &Key) -> bool {
        let fingerprint = self.federated(key).map(|o| {
            let adopt = o.annotations().get(ADOPT).is_some_and(|v| v == "true");
            let mut uid = std::hash::DefaultHasher::new();
            o.metadata.uid.hash(&mut uid);
            Fingerprint {
                print: Desired::of(&o).print,
                adopt,
                uid: uid.finish(),
            }
        });
        let mut seen = self.fingerprints.lock().expect("not poisoned");
        let before = match fingerprint {
            Some(f) => seen.insert(key.clone(), f),
            None => seen.remove(key),
        };
        drop(seen);
        if before.is_some_and(|b| Some(b.uid) != fingerprint.map(|f| f.uid)) {
            self.states.lock().expect("not poisoned").remove(key);
            self.unpublished.lock().expect("not poisoned").remove(key);
        }
        fingerprint.is_none() || before != fingerprint
    }

    /// Starts keeping the Ready clusters in step, stops for the others.
    fn clusters_changed(self: &Arc<Self>, clusters: &Store<DynamicObject>) {
        let mut ready: BTreeMap<String, Value> = BTreeMap::new();
        for c in clusters.state() {
            let v = serde_json::to_value(&*c).unwrap_or_default();
            let is_ready = v
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
            if is_ready {
                ready.insert(c.metadata.name.clone().unwrap_or_default(), v);
            }
        }
        let labels_of: BTreeMap<String, BTreeMap<String, String>> = ready
            .iter()
            .map(|(name, c)| {
                let labels = serde_json::from_value(c["metadata"]["labels"].clone());
                (name.clone(), labels.unwrap_or_default())
            })
            .collect();
        *self.ready.lock().expect("not poisoned") = labels_of.clone();
        let known: BTreeSet<String> = self
            .members
            .lock()
            .expect("not poisoned")
            .keys()
            .cloned()
            .collect();
        for gone in known.iter().filter(|n| !ready.contains_key(*n)) {
            tracing::info!(cluster = %gone, "stopped propagating to a cluster that is not Ready");
            self.members.lock().expect("not poisoned").remove(gone);
        }
        for (name, cluster) in ready {
            let labels = labels_of[&name].clone();
            let existing = self
                .members
                .lock()
                .expect("not poisoned")
                .get(&name)
                .cloned();
            match existing {
                // Labels moved: what is selected may have changed.
                Some(m) if m.labels != labels => {
                    self.members.lock().expect("not poisoned").remove(&name);
                }
                Some(_) => continue,
                None => {}
            }
            // Each member starts on its own (it lists all its copies first), so that one
            // slow to answer delays neither the others nor the federation's events; one
            // that does not finish is tried again.
            if !self
                .starting
                .lock()
                .expect("not poisoned")
                .insert(name.clone())
            {
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                let start = this.start_member(&name, &cluster, labels);
                match tokio::time::timeout(MEMBER_START, start).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(cluster = %name, error = %e, "cannot propagate to cluster")
                    }
                    Err(_) => {
                        tracing::warn!(cluster = %name, "listing the cluster's objects took too long; trying again")
                    }
                }
                this.starting.lock().expect("not poisoned").remove(&name);
            });
        }
    }

    async fn start_member(
        self: &Arc<Self>,
        name: &str,
        cluster: &Value,
        labels: BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let secret = members::secret(&self.host, &self.namespace, cluster).await?;
        let (client, writer) = members::clients(cluster, secret.as_ref()).await?;
        let (tx, rx) = mpsc::unbounded_channel::<Key>();
        let weak_self = Arc::downgrade(self);
        let judge: Judge = Arc::new(move |key: &Key, copy: &Raw| {
            weak_self.upgrade().and_then(|this| this.judge(key, copy))
        });
        let mut copies = Vec::new();
        let mut tasks = Vec::new();
        for (i, (ar, _)) in self.types.iter().enumerate() {
            let held = Arc::new(Copies::default());
            let follow =
                held.clone()
                    .follow(client.clone(), ar.clone(), i, tx.clone(), judge.clone());
            tasks.push(AbortOnDrop(tokio::spawn(follow)));
            copies.push(held);
        }
        // A member just (re)started knows its copies once its first listings are in.
        for held in &copies {
            held.ready().await;
        }
        let member = Arc::new(Member {
            labels,
            client,
            writer,
            copies,
            keys: tx.clone(),
            tasks: Mutex::new(tasks),
        });
        let this = self.clone();
        let weak = Arc::downgrade(&member);
        let cluster_name = name.to_string();
        let worker = tokio::spawn(async move { this.work(cluster_name, weak, rx).await });
        member
            .tasks
            .lock()
            .expect("not poisoned")
            .push(AbortOnDrop(worker));
        // A member in the map is told of every change from now on; everything federated is
        // looked at for it after that, so no change made meanwhile is missed. Its cluster
        // must still be Ready as it was (unjoined meanwhile, it would be written to until
        // the next look at the clusters).
        {
            let ready = self.ready.lock().expect("not poisoned");
            if ready.get(name) != Some(&member.labels) {
                tracing::info!(cluster = %name, "the cluster changed while its member started; not kept");
                return Ok(());
            }
            self.members
                .lock()
                .expect("not poisoned")
                .insert(name.to_string(), member);
        }
        for i in 0..self.types.len() {
            for o in self.federated_store(i).state() {
                let _ = tx.send(key_of(i, &o.metadata));
            }
        }
        tracing::info!(cluster = %name, "propagating to cluster");
        Ok(())
    }

    /// One member's worker: reconciles the keys sent to it, retrying those that fail.
    async fn work(
        self: Arc<Self>,
        cluster: String,
        member: std::sync::Weak<Member>,
        keys: mpsc::UnboundedReceiver<Key>,
    ) {
        let Some(again) = member.upgrade().map(|m| m.keys.clone()) else {
            return;
        };
        let metrics = self.metrics.clone();
        let limits = self.concurrency.clone();
        let cluster: Text = cluster.into();
        let name = cluster.clone();
        let handle = move |key: Key| {
            let m = member.upgrade()?;
            let (this, cluster) = (self.clone(), cluster.clone());
            Some(Box::pin(async move {
                let result = this.reconcile(&m, &key).await;
                this.metrics.sync_reconciled(&cluster);
                match result {
                    Ok(Some(state)) => this.report(&cluster, &key, state),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(%cluster, ?key, error = %e, "reconcile failed; retrying");
                        if !e.is::<LookAgain>() && !busy(&e) {
                            this.report(&cluster, &key, format!("Failed: {e:#}"));
                        }
                        return Next::Retry;
                    }
                }
                Next::Done
            }) as BoxFuture<'static, Next>)
        };
        drain(keys, again, limits, handle, |n| {
            metrics.sync_pending(&name, n)
        })
        .await;
    }

    /// Brings one object in one member in step; its state there, to report.
    async fn reconcile(&self, m: &Member, key: &Key) -> anyhow::Result<Option<String>> {
        let (index, ns, name) = key;
        let (ar, namespaced) = &self.types[*index];
        // Every cluster has these of its own, and they are no one's to take over or
        // delete: nothing to propagate, nothing to report.
        if ar.plural == "namespaces" && SYSTEM_NAMESPACES.contains(&&**name) {
            return Ok(None);
        }
        let Some(object) = self.federated(key) else {
            return Ok(None);
        };
        if object.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let copies = &m.copies[*index];
        let copy = copies.get(ns, name);
        let annotations = object.metadata.annotations.as_ref();
        let selected = match Selector::of(annotations) {
            Ok(s) => s.is_none_or(|s| s.matches(&m.labels)),
            // Nowhere, and nothing removed (spec §5).
            Err(e) => return Ok(Some(format!("InvalidSelector: {e}"))),
        };
        let adopt = annotations
            .and_then(|a| a.get(ADOPT))
            .is_some_and(|v| v == "true");
        let Desired { text, print } = Desired::of(&object);
        // Writes a copy, and records what the member then holds.
        let write = |request| async {
            let writing = copies.begin(ns, name);
            let made = m.writer.send::<Written>(request).await;
            let copy = made.as_ref().ok().map(|made| Copy {
                managed: true,
                resource_version: made.metadata.resource_version.as_str().into(),
                holds: Some(print),
            });
            if writing.finish(copy) {
                let _ = m.keys.send(key.clone());
            }
            made
        };
        let request = Request::new(DynamicObject::url_path(ar, namespaced.then_some(&**ns)));
        let state = match (selected, copy) {
            (false, Some(c)) if c.managed => {
                api(&m.client, ar, *namespaced, ns)
                    .delete(name, &DeleteParams::background())
                    .await
                    .map(|_| ())
                    .or_else(not_found)?;
                "NotSelected"
            }
            (false, _) => "NotSelected",
            (true, None) => {
                let create = request.create(&PostParams::default(), text)?;
                match write(create).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => return Err(LookAgain.into()),
                    Err(e) => return Err(e.into()),
                }
                "Synced"
            }
            (true, Some(c)) if !c.managed && !adopt => {
                "Conflict: a same-named object the federation did not create is there; left alone"
            }
            (true, Some(c)) if c.managed && c.holds == Some(print) => "Synced",
            (true, Some(_)) => {
                // Not known to hold this version: read it, and write only what differs.
                let read = request.get(name, &Default::default())?;
                let have: Value = match m.writer.send::<Value>(read).await {
                    Ok(v) => v,
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        copies.remove(ns, name);
                        return Err(LookAgain.into());
                    }
                    Err(e) => return Err(e.into()),
                };
                let want = Desired { text, print }.object();
                if covers(&have, &want) {
                    let read = have.pointer("/metadata/resourceVersion");
                    copies.holds(ns, name, read.and_then(Value::as_str).unwrap_or(""), print);
                } else {
                    let mut next = have;
                    merge(&mut next, &want);
                    let replace = request.replace(
                        name,
                        &PostParams::default(),
                        serde_json::to_vec(&next)?,
                    )?;
                    write(replace).await?;
                }
                "Synced"
            }
        };
        Ok(Some(state.to_string()))
    }

    /// Which desired copy `copy`, as a member reports it, holds (spec §4.3 equivalence,
    /// with what members fill in themselves left out).
    fn judge(&self, key: &Key, copy: &Raw) -> Option<u64> {
        let want = Desired::of(&*self.federated(key)?);
        covers(&copy.object()?, &want.object()).then_some(want.print)
    }

    /// Records an object's state in a cluster; changes are written on the federated object
    /// (the [`PROPAGATION`] annotation, which `kubectl describe` and `get -o yaml` show)
    /// with events, by the publisher.
    fn report(&self, cluster: &Text, key: &Key, state: String) {
        let state = state_text(state);
        {
            let mut states = self.states.lock().expect("not poisoned");
            let entry = states.entry(key.clone()).or_insert_with(|| {
                let annotation = self.federated(key).and_then(|o| {
                    serde_json::from_str::<BTreeMap<String, String>>(
                        o.annotations().get(PROPAGATION)?,
                    )
                    .ok()
                });
                annotation
                    .into_iter()
                    .flatten()
                    .map(|(c, s)| (Text::from(c), state_text(s)))
                    .collect()
            });
            if entry.get(cluster) == Some(&state) {
                return;
            }
            entry.insert(cluster.clone(), state.clone());
        }
        self.unpublished
            .lock()
            .expect("not poisoned")
            .entry(key.clone())
            .or_default()
            .push((cluster.clone(), state));
        self.publish.notify_one();
    }

    /// Writes the state changes reported, in batches, a few objects at a time. Those the
    /// federation API did not take (restarting, unreachable) are written once it answers
    /// again, with whatever was reported meanwhile: the states are known as reported and
    /// would otherwise never be written.
    async fn publisher(self: Arc<Self>) {
        loop {
            self.publish.notified().await;
            tokio::time::sleep(PUBLISH_BATCH).await;
            let batch = std::mem::take(&mut *self.unpublished.lock().expect("not poisoned"));
            let failed = Mutex::new(Vec::new());
            futures::stream::iter(batch)
                .for_each_concurrent(16, |(key, changes)| {
                    let (this, failed) = (self.clone(), &failed);
                    async move {
                        if let Err(e) = this.publish(&key, &changes).await {
                            tracing::debug!(?key, error = %e, "reporting propagation state");
                            failed.lock().expect("not poisoned").push((key, changes));
                        }
                    }
                })
                .await;
            let failed = failed.into_inner().expect("not poisoned");
            if failed.is_empty() {
                continue;
            }
            {
                let mut unpublished = self.unpublished.lock().expect("not poisoned");
                for (key, mut changes) in failed {
                    changes.extend(unpublished.remove(&key).unwrap_or_default());
                    unpublished.insert(key, changes);
                }
            }
            tokio::time::sleep(RETRY).await;
            self.publish.notify_one();
        }
    }

    /// One object's annotation, and an event per distinct new state naming its clusters; an
    /// error only when the annotation was not written.
    async fn publish(&self, key: &Key, changes: &[(Text, Text)]) -> anyhow::Result<()> {
        let (index, ns, name) = key;
        let (ar, namespaced) = &self.types[*index];
        let Some(all) = self.states.lock().expect("not poisoned").get(key).cloned() else {
            return Ok(());
        };
        let annotation: BTreeMap<&str, &str> = all.iter().map(|(c, s)| (&**c, &**s)).collect();
        let patch = json!({"metadata": {"annotations": {PROPAGATION: serde_json::to_string(&annotation)?}}});
        match merge_patch(&self.federation, ar, *namespaced, key, &patch).await {
            // Gone meanwhile: nothing to say about it.
            Err(kube::Error::Api(e)) if e.code == 404 => {
                self.states.lock().expect("not poisoned").remove(key);
                return Ok(());
            }
            r => r?,
        };
        let uid = self.federated(key).and_then(|o| o.metadata.uid.clone());
        let mut by_state: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (cluster, state) in changes {
            // Only the latest state of each cluster is news.
            if all.get(cluster) == Some(state) {
                by_state.entry(&**state).or_default().push(&**cluster);
            }
        }
        let (ns, name) = (&**ns, &**name);
        let namespace = if ns.is_empty() { "default" } else { ns };
        let events = Request::new(format!("/api/v1/namespaces/{namespace}/events"));
        for (state, mut clusters) in by_state {
            clusters.sort_unstable();
            clusters.dedup();
            let reason = state.split(':').next().unwrap_or(state);
            let now = fellowship_apimachinery::meta::now();
            let which = if clusters.len() == 1 {
                "cluster"
            } else {
                "clusters"
            };
            let event = serde_json::to_vec(&json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": format!("{name}."), "namespace": namespace},
                "involvedObject": {"apiVersion": ar.api_version, "kind": ar.kind, "name": name, "namespace": ns, "uid": uid},
                "reason": reason,
                "message": format!("{which} {}: {state}", clusters.join(", ")),
                "type": if matches!(reason, "Synced" | "NotSelected") { "Normal" } else { "Warning" },
                "source": {"component": "federation-controller-manager"},
                "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            }))?;
            let create = events.create(&PostParams::default(), event)?;
            // Events are told once: one the federation turns away is not sent again (the
            // state is in the annotation, which is).
            if let Err(e) = self.federation.request::<Written>(create).await {
                tracing::debug!(?key, error = %e, "recording an event");
            }
        }
        Ok(())
    }

    /// The finalizer worker: sees to the §6 finalizers of each federated object sent to it
    /// (added to a live one; on deletion, the member copies removed unless orphaned, then
    /// the finalizers), a few at a time, retrying until the object needs nothing more.
    async fn finalizer(
        self: Arc<Self>,
        again: mpsc::UnboundedSender<Key>,
        keys: mpsc::UnboundedReceiver<Key>,
    ) {
        let handle = |key: Key| {
            let this = self.clone();
            Some(Box::pin(async move {
                match this.finalize_once(&key).await {
                    Ok(true) => Next::Done,
                    Ok(false) => Next::Retry,
                    Err(e) => {
                        tracing::debug!(?key, error = %e, "finalizing");
                        Next::Retry
                    }
                }
            }) as BoxFuture<'static, Next>)
        };
        drain(keys, again, Vec::new(), handle, |_| {}).await;
    }

    /// Whether the object needs nothing more.
    async fn finalize_once(&self, key: &Key) -> anyhow::Result<bool> {
        let (index, ns, name) = key;
        let (ar, namespaced) = &self.types[*index];
        let Some(object) = self.federated(key) else {
            self.states.lock().expect("not poisoned").remove(key);
            return Ok(true);
        };
        let have = object.finalizers().to_vec();
        // A merge patch: the propagation-state annotation may change meanwhile.
        let write = |list: Vec<String>| async move {
            let patch = json!({"metadata": {"finalizers": list}});
            merge_patch(&self.federation, ar, *namespaced, key, &patch)
                .await
                .map(|_| ())
        };
        if object.metadata.deletion_timestamp.is_none() {
            if have.iter().any(|f| f == DELETE_FROM_CLUSTERS) && have.iter().any(|f| f == ORPHAN) {
                return Ok(true);
            }
            let mut list: BTreeSet<String> = have.into_iter().collect();
            list.insert(DELETE_FROM_CLUSTERS.into());
            list.insert(ORPHAN.into());
            write(list.into_iter().collect()).await?;
            return Ok(true);
        }
        if !have.iter().any(|f| f == DELETE_FROM_CLUSTERS) {
            return Ok(true);
        }
        if !have.iter().any(|f| f == ORPHAN) {
            // Cascade: the Ready members' copies go now; the object stays until every
            // registered cluster has been Ready to be cleared.
            let members: Vec<Arc<Member>> = self
                .members
                .lock()
                .expect("not poisoned")
                .values()
                .cloned()
                .collect();
            let mut waiting = false;
            for m in &members {
                // A copy being created now is deleted once it is there.
                if m.copies[*index].is_writing(ns, name) {
                    waiting = true;
                    continue;
                }
                if m.copies[*index].get(ns, name).is_some_and(|c| c.managed) {
                    waiting = true;
                    api(&m.client, ar, *namespaced, ns)
                        .delete(name, &DeleteParams::background())
                        .await
                        .map(|_| ())
                        .or_else(not_found)?;
                }
            }
            if waiting {
                return Ok(false);
            }
            let registered =
                Api::<DynamicObject>::all_with(self.federation.clone(), &cluster_resource())
                    .list(&Default::default())
                    .await?
                    .items
                    .len();
            if members.len() < registered {
                anyhow::bail!("waiting for every cluster to be Ready to delete {name} from it");
            }
        }
        let kept: Vec<String> = have
            .into_iter()
            .filter(|f| f != DELETE_FROM_CLUSTERS && f != ORPHAN)
            .collect();
        write(kept).await?;
        Ok(true)
    }
}

/// What a handled key asks for next.
enum Next {
    Done,
    Retry,
}

/// Handles the keys sent on `keys`, at most `limits[t]` of type `t` at a time (else
/// [`CONCURRENCY`]; in all, the largest of those), and never one key twice at once (a key
/// sent again while it is handled is handled once more afterwards); a key whose handling
/// asks to retry is sent on `again` after [`RETRY`]. The keys of a type run in the order
/// they came, the types taking turns. Each waiting key is one entry however often it was
/// sent, so a backlog costs a key each, not a task each. `waiting` is told how many keys
/// are queued, running or retrying. Ends when `keys` closes or `handle` has nothing to run
/// them with.
async fn drain(
    mut keys: mpsc::UnboundedReceiver<Key>,
    again: mpsc::UnboundedSender<Key>,
    limits: Vec<usize>,
    mut handle: impl FnMut(Key) -> Option<BoxFuture<'static, Next>>,
    mut waiting: impl FnMut(usize),
) {
    let limit = |t: usize| limits.get(t).copied().unwrap_or(CONCURRENCY);
    let at_once = limits.iter().copied().fold(CONCURRENCY, usize::max);
    // By type: the keys waiting for their turn, and how many run.
    let mut queues: Vec<VecDeque<Key>> = Vec::new();
    let mut runs: Vec<usize> = Vec::new();
    let mut turn = 0;
    // The keys in `queues` or `after_run`.
    let mut queued: HashSet<Key> = HashSet::new();
    // Keys whose turn came while they were running: first in line once that run ends.
    let mut after_run: HashSet<Key> = HashSet::new();
    let mut running: HashSet<Key> = HashSet::new();
    let mut inflight: FuturesUnordered<BoxFuture<'static, (Key, Next)>> = FuturesUnordered::new();
    let retrying = Arc::new(AtomicUsize::new(0));
    loop {
        while inflight.len() < at_once {
            let Some(key) = next_key(&mut queues, &runs, limit, &mut turn) else {
                break;
            };
            if running.contains(&key) {
                after_run.insert(key);
                continue;
            }
            let Some(run) = handle(key.clone()) else {
                return;
            };
            queued.remove(&key);
            running.insert(key.clone());
            runs[key.0] += 1;
            inflight.push(Box::pin(async move { (key, run.await) }));
        }
        waiting(queued.len() + inflight.len() + retrying.load(Ordering::Relaxed));
        tokio::select! {
            k = keys.recv() => match k {
                Some(k) => {
                    let mut next = Some(k);
                    while let Some(k) = next {
                        if queued.insert(k.clone()) {
                            if queues.len() <= k.0 {
                                queues.resize_with(k.0 + 1, VecDeque::new);
                                runs.resize(k.0 + 1, 0);
                            }
                            queues[k.0].push_back(k);
                        }
                        next = keys.try_recv().ok();
                    }
                }
                None => return,
            },
            Some((key, next)) = inflight.next(), if !inflight.is_empty() => {
                running.remove(&key);
                runs[key.0] -= 1;
                if after_run.remove(&key) {
                    queues[key.0].push_front(key.clone());
                }
                if let Next::Retry = next {
                    let (tx, retrying) = (again.clone(), retrying.clone());
                    retrying.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        tokio::time::sleep(RETRY).await;
                        retrying.fetch_sub(1, Ordering::Relaxed);
                        let _ = tx.send(key);
                    });
                }
            }
        }
    }
}

/// The next key to run: the oldest of the first type from `turn` on that has keys waiting
/// and runs fewer than its limit; the type after it is first next time.
fn next_key(
    queues: &mut [VecDeque<Key>],
    runs: &[usize],
    limit: impl Fn(usize) -> usize,
    turn: &mut usize,
) -> Option<Key> {
    let types = queues.len();
    let t = (0..types)
        .map(|i| (*turn + i) % types)
        .find(|&t| runs[t] < limit(t) && !queues[t].is_empty())?;
    *turn = (t + 1) % types;
    queues[t].pop_front()
}

/// Stops a task when its owner goes.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn not_found(e: kube::Error) -> Result<(), kube::Error> {
    match e {
        kube::Error::Api(s) if s.code == 404 => Ok(()),
        e => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_queued_key_runs_once_at_a_time_and_a_retry_comes_back() {
        let key = |name: &str| -> Key { (0, "n".into(), name.into()) };
        let (tx, rx) = mpsc::unbounded_channel();
        // Sent three times before the worker looks: one entry, run once.
        for k in ["a", "a", "a", "r"] {
            tx.send(key(k)).unwrap();
        }
        let runs: Arc<Mutex<Vec<String>>> = Arc::default();
        let running: Arc<Mutex<HashSet<Key>>> = Arc::default();
        let release = Arc::new(Notify::new());
        let handle = {
            let (runs, running, release) = (runs.clone(), running.clone(), release.clone());
            move |k: Key| {
                let (runs, running, release) = (runs.clone(), running.clone(), release.clone());
                Some(Box::pin(async move {
                    assert!(
                        running.lock().unwrap().insert(k.clone()),
                        "{k:?} ran twice at once"
                    );
                    let first = {
                        let mut runs = runs.lock().unwrap();
                        runs.push(k.2.to_string());
                        runs.iter().filter(|r| **r == *k.2).count() == 1
                    };
                    if &*k.2 == "a" && first {
                        release.notified().await;
                    }
                    running.lock().unwrap().remove(&k);
                    if &*k.2 == "r" && first {
                        Next::Retry
                    } else {
                        Next::Done
                    }
                }) as BoxFuture<'static, Next>)
            }
        };
        let worker = tokio::spawn(drain(rx, tx.clone(), Vec::new(), handle, |_| {}));
        let count = |name: &str| runs.lock().unwrap().iter().filter(|r| *r == name).count();
        while count("a") == 0 {
            tokio::task::yield_now().await;
        }
        // Sent again while it runs: it runs once more, after.
        tx.send(key("a")).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(count("a"), 1);
        release.notify_one();
        let deadline = tokio::time::Instant::now() + RETRY * 5;
        while (count("a"), count("r")) != (2, 2) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                runs.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        worker.abort();
    }

    #[tokio::test]
    async fn a_type_at_its_limit_waits_while_other_types_go_ahead() {
        let (tx, rx) = mpsc::unbounded_channel();
        // Type 0 may run one at a time: its second key waits behind the first, held.
        let keys = [(0, "a"), (0, "b"), (1, "c"), (1, "d"), (2, "e"), (2, "f")];
        for (t, name) in keys {
            tx.send((t, "n".into(), name.into())).unwrap();
        }
        // The keys in the order they were started.
        let started: Arc<Mutex<Vec<String>>> = Arc::default();
        let release = Arc::new(Notify::new());
        let handle = {
            let (started, release) = (started.clone(), release.clone());
            move |k: Key| {
                started.lock().unwrap().push(k.2.to_string());
                let release = release.clone();
                Some(Box::pin(async move {
                    if &*k.2 == "a" {
                        release.notified().await;
                    }
                    Next::Done
                }) as BoxFuture<'static, Next>)
            }
        };
        let worker = tokio::spawn(drain(rx, tx.clone(), vec![1], handle, |_| {}));
        let until = async |count: usize| {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while started.lock().unwrap().len() < count {
                assert!(tokio::time::Instant::now() < deadline, "{started:?}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            started.lock().unwrap().clone()
        };
        until(5).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The types take turns; type 0, at its limit, is passed over.
        assert_eq!(until(5).await, ["a", "c", "e", "d", "f"]);
        release.notify_one();
        assert_eq!(until(6).await[5], "b");
        worker.abort();
    }

    #[test]
    fn copies_and_what_counts_as_in_step() {
        let fed: DynamicObject = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "9", "finalizers": ["orphan"], "labels": {"a": "b"}},
            "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}, "status": {"loadBalancer": {}}}))
        .unwrap();
        let want = Desired::of(&fed).object();
        assert_eq!(
            want["metadata"],
            json!({"name": "web", "namespace": "default", "labels": {"a": "b"}, "annotations": {MANAGED: "true"}})
        );
        assert!(want.get("status").is_none());
        // The member filled in a cluster IP, a node port and an annotation: in step.
        let mut member = want.clone();
        member["spec"]["clusterIP"] = json!("10.96.0.10");
        member["spec"]["ports"][0]["nodePort"] = json!(30001);
        member["metadata"]["annotations"]["added"] = json!("by member");
        assert!(covers(&member, &want));
        // Someone changed the port in the member: not in step; the merge puts it back and
        // keeps what the member owns.
        member["spec"]["ports"][0]["port"] = json!(81);
        assert!(!covers(&member, &want));
        merge(&mut member, &want);
        assert!(covers(&member, &want));
        assert_eq!(member["spec"]["clusterIP"], "10.96.0.10");
    }
}
