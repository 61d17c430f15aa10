//! The propagation engine (spec §4.3, §5, §6): every object of the federated types goes, as
//! the federation holds it, to the Ready member clusters its cluster-selector annotation
//! selects, stays in step there (a copy edited or deleted in a member is put back), and
//! leaves the clusters no longer selected. Objects whose replicas are spread get a share
//! per cluster from the scheduling stage first ([`schedule`]).
//!
//! Each member cluster has its own worker, queue and caches, so a slow or offline member
//! delays no other; a member that turns Ready is brought up to date at once. Copies carry a
//! marker annotation: a same-named object Fellowship did not create is left alone. Deletion
//! follows §6: federated objects carry the `orphan` and delete-from-underlying-clusters
//! finalizers; a cascading delete removes the member copies (in every registered cluster,
//! waiting for those not Ready), an orphaning one leaves them.
//!
//! Files: `fleet` starts and stops members, `queue` is the work queue, `watch` reads the
//! federation, `desired` says what a copy is, `schedule` plans shares and sums statuses,
//! `report` writes what the federation is told, `finalize` sees to deletion.

mod desired;
mod finalize;
mod fleet;
mod queue;
mod report;
mod schedule;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hasher as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use kube::api::{DeleteParams, DynamicObject, PostParams};
use kube::core::Request;
use kube::runtime::reflector::Store;
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub use desired::{Desired, covers};
use fleet::Member;
use queue::{AbortOnDrop, CONCURRENCY, Next, drain};
use report::{Reporter, Text};
use watch::{Written, follow};

use crate::annotations::ADOPT;
use crate::cluster::cluster_resource;
use crate::copies::{Copy, Judgement, Key, Raw};
use crate::federatedtypes::{FederatedType, Share, object_ref};
use crate::metrics::Metrics;
use crate::selector::Selector;

/// For the types named (by plural), how many of their objects are reconciled at once in
/// each member, where not [`CONCURRENCY`] (`--concurrent-service-syncs` and the like).
pub type Concurrency = BTreeMap<String, usize>;

/// The namespaces every cluster makes for itself.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

pub struct SyncController {
    pub federation: Client,
    pub host: Client,
    pub namespace: String,
    types: Vec<FederatedType>,
    /// By type index, its reconciles at once per member.
    concurrency: Vec<usize>,
    metrics: Arc<Metrics>,
    federated: Mutex<Vec<Store<DynamicObject>>>,
    members: Mutex<HashMap<String, Arc<Member>>>,
    /// Clusters whose member is being started.
    starting: Mutex<BTreeSet<String>>,
    /// Ready clusters whose member did not start at its last try: planning does not wait
    /// for them.
    unstarted: Mutex<BTreeSet<String>>,
    /// The Ready clusters and their labels, as last seen: a member whose cluster left or
    /// changed while it was starting is not kept.
    ready: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// What each federated object's copies are made of, and which object it is, as last
    /// sent to the members, with a hash of the resourceVersion it was seen at.
    fingerprints: Mutex<HashMap<Key, (Fingerprint, u64)>>,
    reporter: Reporter,
    stage: schedule::Stage,
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

/// The print of a copy shaped for `share` (`exists`: over a copy there), from the print
/// of the object's copy as it is. Only some copies are shaped otherwise once made: an
/// autoscaled one (its replicas are its HPA's then) and a Job's (its completions cannot
/// change).
fn share_print(object: u64, share: &Share, exists: bool) -> u64 {
    let made = exists && matches!(share, Share::Autoscaled | Share::Job { .. });
    hash(&(object, share, made))
}

fn hash(value: &impl std::hash::Hash) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

fn not_found(e: kube::Error) -> Result<(), kube::Error> {
    match e {
        kube::Error::Api(s) if s.code == 404 => Ok(()),
        e => Err(e),
    }
}

impl SyncController {
    /// A controller for `types` (a selection of [`federatedtypes::all`]).
    ///
    /// [`federatedtypes::all`]: crate::federatedtypes::all
    pub fn new(
        federation: Client,
        host: Client,
        namespace: String,
        types: Vec<FederatedType>,
        concurrency: &Concurrency,
        metrics: Arc<Metrics>,
    ) -> Arc<SyncController> {
        let concurrency = (types.iter())
            .map(|t| {
                concurrency
                    .get(&t.resource.plural)
                    .copied()
                    .unwrap_or(CONCURRENCY)
            })
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
            unstarted: Mutex::new(BTreeSet::new()),
            ready: Mutex::new(BTreeMap::new()),
            fingerprints: Mutex::new(HashMap::new()),
            reporter: Reporter::default(),
            stage: schedule::Stage::default(),
        })
    }

    fn federated_store(&self, index: usize) -> Store<DynamicObject> {
        self.federated.lock().expect("not poisoned")[index].clone()
    }

    fn federated(&self, (index, ns, name): &Key) -> Option<Arc<DynamicObject>> {
        let ar = &self.types[*index].resource;
        self.federated_store(*index).get(&object_ref(ar, ns, name))
    }

    fn members(&self) -> Vec<Arc<Member>> {
        self.members
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Runs until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let publisher = tokio::spawn(self.clone().publisher());
        let _stop_publisher = AbortOnDrop(publisher);
        // Federated objects whose finalizers are to be seen to, for the finalizer worker.
        let (finalize, finalize_rx) = mpsc::unbounded_channel::<Key>();
        let finalizer = tokio::spawn(self.clone().finalizer(finalize.clone(), finalize_rx));
        let _stop_finalizer = AbortOnDrop(finalizer);
        // Spread objects to plan, for the scheduling stage.
        let (stage, stage_rx) = mpsc::unbounded_channel::<Key>();
        let scheduler = tokio::spawn(self.clone().scheduler(stage.clone(), stage_rx));
        let _stop_scheduler = AbortOnDrop(scheduler);
        // These reflectors run as long as the process: their tasks are not kept.
        let (fed_tx, mut fed_rx) = mpsc::unbounded_channel::<Key>();
        for (i, t) in self.types.iter().enumerate() {
            let (store, _) = follow(&self.federation, &t.resource, i, fed_tx.clone());
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
        self.clusters_changed(&clusters, &stage);
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                Some(key) = fed_rx.recv() => {
                    // What its copies are made of changed (its finalizers, states or status
                    // alone do not: most events are of this controller's own writes).
                    if self.changed_for_members(&key) {
                        if self.types[key.0].scheduling.is_some() {
                            // Its shares first; the stage tells the members.
                            self.stage.changed(&key);
                            let _ = stage.send(key.clone());
                        } else {
                            for m in self.members() {
                                let _ = m.keys.send(key.clone());
                            }
                        }
                    }
                    let _ = finalize.send(key);
                }
                Some(_) = cluster_rx.recv() => self.clusters_changed(&clusters, &stage),
                _ = tick.tick() => self.clusters_changed(&clusters, &stage),
            }
        }
    }

    /// Whether a federated object changed in what its copies are made of (its finalizers
    /// or propagation state alone do not): the members look again only then. An object
    /// gone, or another one under its name (deleted and created again), also drops the
    /// states known of it: they are not the new object's to keep from being reported.
    fn changed_for_members(&self, key: &Key) -> bool {
        let seen_at = self.federated(key).map(|o| {
            let adopt = o.annotations().get(ADOPT).is_some_and(|v| v == "true");
            let fingerprint = Fingerprint {
                print: Desired::of(&o).print,
                adopt,
                uid: hash(&o.metadata.uid),
            };
            (fingerprint, hash(&o.metadata.resource_version))
        });
        let fingerprint = seen_at.map(|(f, _)| f);
        let mut seen = self.fingerprints.lock().expect("not poisoned");
        let before = match seen_at {
            Some(f) => seen.insert(key.clone(), f),
            None => seen.remove(key),
        }
        .map(|(f, _)| f);
        drop(seen);
        if before.is_some_and(|b| Some(b.uid) != fingerprint.map(|f| f.uid)) {
            self.reporter.forget(key);
        }
        fingerprint.is_none() || before != fingerprint
    }

    /// One member's worker: reconciles the keys sent to it, retrying those that fail.
    async fn work(
        self: Arc<Self>,
        cluster: Text,
        member: std::sync::Weak<Member>,
        keys: mpsc::UnboundedReceiver<Key>,
    ) {
        let Some(again) = member.upgrade().map(|m| m.keys.clone()) else {
            return;
        };
        let metrics = self.metrics.clone();
        let limits = self.concurrency.clone();
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

    /// The spec of a member copy of `object` shaped for its share, for a spread type.
    fn shaped(
        &self,
        t: &FederatedType,
        object: &DynamicObject,
        share: Option<&Share>,
        exists: bool,
    ) -> Option<Value> {
        let (share, scheduling) = (share?, t.scheduling.as_ref()?);
        let mut spec = object
            .data
            .get("spec")
            .cloned()
            .unwrap_or_else(|| json!({}));
        scheduling.shape(&mut spec, share, exists);
        Some(spec)
    }

    /// The print of the copy of `object` as it is: its fingerprint's, when that was taken of
    /// this version of it (the usual case), else made anew.
    fn object_print(&self, key: &Key, object: &DynamicObject) -> u64 {
        let version = hash(&object.metadata.resource_version);
        let fingerprints = self.fingerprints.lock().expect("not poisoned");
        match fingerprints.get(key) {
            Some((f, v)) if *v == version => f.print,
            _ => {
                drop(fingerprints);
                Desired::of(object).print
            }
        }
    }

    /// The member copy of `object` for type `t`: as the object is, or shaped for a share
    /// (with the shaped spec).
    fn desired(
        &self,
        key: &Key,
        t: &FederatedType,
        object: &DynamicObject,
        share: Option<&Share>,
        exists: bool,
    ) -> (Desired, Option<Value>) {
        match (share, self.shaped(t, object, share, exists)) {
            (Some(share), Some(spec)) => {
                let print = share_print(self.object_print(key, object), share, exists);
                (Desired::shaped(object, &spec, print), Some(spec))
            }
            _ => (Desired::of(object), None),
        }
    }

    /// Brings one object in one member in step; its state there, to report.
    async fn reconcile(&self, m: &Member, key: &Key) -> anyhow::Result<Option<String>> {
        let (index, ns, name) = key;
        let t = &self.types[*index];
        // Every cluster has these of its own, and they are no one's to take over or
        // delete: nothing to propagate, nothing to report.
        if t.resource.plural == "namespaces" && SYSTEM_NAMESPACES.contains(&&**name) {
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
        // A spread object's share here, once the stage has planned it (it sends the key
        // again then).
        let share = match (&t.scheduling, selected) {
            (Some(_), true) => match self.stage.share(key, &m.name) {
                Some(share) => Some(share),
                None => return Ok(None),
            },
            _ => None,
        };
        let adopt = annotations
            .and_then(|a| a.get(ADOPT))
            .is_some_and(|v| v == "true");
        let remove = async || {
            t.api(&m.client, ns)
                .delete(name, &DeleteParams::background())
                .await
                .map(|_| ())
                .or_else(not_found)
        };
        let placed = share.as_ref().is_none_or(|s| match copy {
            Some(_) => *s != Share::None,
            None => s.creates(),
        });
        let (Desired { text, print }, spec) =
            self.desired(key, t, &object, share.as_ref(), copy.is_some());
        // Writes a copy, and records what the member then holds.
        let write = |request, summary: Option<Arc<crate::federatedtypes::Summary>>| async {
            let writing = copies.begin(ns, name);
            let made = m.writer.send::<Written>(request).await;
            let copy = made.as_ref().ok().map(|made| Copy {
                managed: true,
                resource_version: made.metadata.resource_version.as_str().into(),
                holds: Some(print),
                summary: summary.map(|s| Arc::new(s.written(made.metadata.generation))),
            });
            if writing.finish(copy) {
                let _ = m.keys.send(key.clone());
            }
            made
        };
        let request = Request::new(DynamicObject::url_path(
            &t.resource,
            t.namespaced.then_some(&**ns),
        ));
        let state = match (selected, copy) {
            (false, Some(c)) if c.managed => {
                remove().await?;
                "NotSelected"
            }
            (false, _) => "NotSelected",
            (true, Some(c)) if !placed && c.managed => {
                remove().await?;
                "NotScheduled"
            }
            (true, None) if !placed => "NotScheduled",
            (true, None) => {
                // What a new copy reports: nothing yet, at the generation it is made with.
                let summary =
                    (t.scheduling.as_ref()).map(|s| Arc::new(s.summarize(&json!({"spec": spec}))));
                let create = request.create(&PostParams::default(), text)?;
                match write(create, summary).await {
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
                    copies.holds(
                        ns,
                        name,
                        read.and_then(Value::as_str).unwrap_or(""),
                        print,
                        &have,
                    );
                } else {
                    let mut next = have;
                    desired::merge(&mut next, &want);
                    let replace = request.replace(
                        name,
                        &PostParams::default(),
                        serde_json::to_vec(&next)?,
                    )?;
                    let summary = (t.scheduling.as_ref()).map(|s| Arc::new(s.summarize(&next)));
                    write(replace, summary).await?;
                }
                "Synced"
            }
        };
        Ok(Some(state.to_string()))
    }

    /// Which desired copy `copy`, as `cluster` reports it, holds (spec §4.3 equivalence,
    /// with what members fill in themselves left out), and what it reports.
    fn judge(&self, cluster: &str, key: &Key, copy: &Raw) -> Judgement {
        let t = &self.types[key.0];
        let (Some(object), Some(copy)) = (self.federated(key), copy.object()) else {
            return Judgement::default();
        };
        let summary = (t.scheduling.as_ref()).map(|s| Arc::new(s.summarize(&copy)));
        let share = match t.scheduling {
            Some(_) => match self.stage.share(key, cluster) {
                Some(share) => Some(share),
                None => {
                    return Judgement {
                        holds: None,
                        summary,
                    };
                }
            },
            None => None,
        };
        let (want, _) = self.desired(key, t, &object, share.as_ref(), true);
        let holds = covers(&copy, &want.object()).then_some(want.print);
        Judgement { holds, summary }
    }
}
