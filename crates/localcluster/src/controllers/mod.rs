//! The simulated control plane of one local cluster: what kube-controller-manager, the
//! scheduler and the kubelets of a real cluster do, reduced to the signals the federation
//! reads. One task per cluster follows the cluster's store and reconciles what changed, in
//! process, writing through the same REST layer as clients.

mod accounts;
mod daemonsets;
mod deployments;
mod hpa;
mod jobs;
mod nodes;
mod pods;
mod replicasets;
mod services;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

use fellowship_apimachinery::{ApiError, ResourceKind, meta};
use fellowship_apiserver::auth::TokenTable;
use fellowship_storage::{Event, EventKind};
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::access::{Access, CACHED};
use crate::config::{ClusterConfig, Simulation};
use fellowship_apiserver::objects::present;

/// The control loops, by what they reconcile, in the order pending work is done: Pods
/// before what owns them, owners before what summarises them, so that a burst of changes
/// settles in one status write per object rather than one per step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Loop {
    Pod,
    ReplicaSet,
    DaemonSet,
    Job,
    Deployment,
    /// The Services of a namespace (name empty) or one Service: addresses and endpoints.
    Service,
    Hpa,
    Namespace,
    ServiceAccount,
}

type Work = (Loop, String, String);

/// One cluster's simulated control plane.
pub struct Controllers {
    pub access: Access,
    pub config: ClusterConfig,
    /// The cluster's position in its fleet: it spreads node and load-balancer addresses.
    pub index: usize,
    pub simulation: Simulation,
    /// Service-account tokens the cluster's server accepts.
    pub tokens: Arc<TokenTable>,
    /// Written into service-account token Secrets as `ca.crt`.
    pub ca_pem: String,
    /// Pod addresses are handed out in order from 10.244.0.2.
    pub next_pod_ip: std::sync::atomic::AtomicU32,
}

/// Where the workloads are stored: what their loops follow, and nothing else does.
const WORKLOADS: [&str; 6] = [
    "pods",
    "replicasets",
    "deployments",
    "daemonsets",
    "jobs",
    "horizontalpodautoscalers",
];

/// How often pending work is looked at again without an event: Pods waiting for room,
/// HPAs following their targets.
const RESYNC_PENDING: Duration = Duration::from_secs(2);
/// How often everything is looked at again.
const RESYNC_ALL: Duration = Duration::from_secs(30);

/// Field managers, as the components of a real cluster name themselves.
const CONTROLLER_MANAGER: &str = "kube-controller-manager";

#[derive(Default)]
struct Queue {
    now: BTreeSet<Work>,
    later: BinaryHeap<Reverse<(Instant, Work)>>,
}

impl Queue {
    fn add(&mut self, l: Loop, namespace: &str, name: &str) {
        self.now
            .insert((l, namespace.to_string(), name.to_string()));
    }

    fn after(&mut self, delay: Duration, work: Work) {
        self.later.push(Reverse((Instant::now() + delay, work)));
    }

    fn due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.later.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, work)) = self.later.pop().expect("peeked");
            self.now.insert(work);
        }
    }

    fn next_deadline(&self) -> Instant {
        self.later
            .peek()
            .map_or_else(|| Instant::now() + RESYNC_ALL, |Reverse((at, _))| *at)
    }
}

impl Controllers {
    /// Runs until the task is dropped, starting over after a store error.
    pub async fn run(self: Arc<Self>) {
        loop {
            if let Err(e) = self.follow().await {
                tracing::warn!(cluster = %self.config.name, error = %e, "control loops interrupted; restarting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn follow(&self) -> Result<(), ApiError> {
        nodes::ensure(self).await?;
        let store = &self.access.app.rest.store;
        let unavailable = |e: fellowship_storage::Error| ApiError::unavailable(e.to_string());
        let from = store.current_revision().await.map_err(unavailable)?;
        self.fill_cache(from).await?;
        let mut events = store.watch("/", from).await.map_err(unavailable)?;
        let mut queue = Queue::default();
        self.everything(&mut queue).await?;
        let mut pending = tokio::time::interval(RESYNC_PENDING);
        let mut all = tokio::time::interval(RESYNC_ALL);
        loop {
            queue.due();
            while let Some(work) = queue.now.pop_first() {
                if let Err(e) = self.reconcile(&work, &mut queue).await {
                    // A conflict means someone wrote first: look again soon.
                    let delay = if e.code == 409 {
                        Duration::from_millis(20)
                    } else {
                        tracing::debug!(cluster = %self.config.name, ?work, error = %e, "reconcile failed");
                        Duration::from_secs(1)
                    };
                    queue.after(delay, work);
                }
                // Take in what happened meanwhile, so that bursts are handled together.
                while let Some(Some(e)) = events.next().now_or_never() {
                    self.observe(e.map_err(unavailable)?, &mut queue);
                }
            }
            tokio::select! {
                e = events.next() => match e {
                    Some(e) => self.observe(e.map_err(unavailable)?, &mut queue),
                    None => return Ok(()),
                },
                _ = tokio::time::sleep_until(queue.next_deadline()) => {}
                _ = pending.tick() => self.pending(&mut queue).await?,
                _ = all.tick() => self.everything(&mut queue).await?,
            }
        }
    }

    /// The cached kinds as of `revision`, from which the watch then continues.
    async fn fill_cache(&self, revision: fellowship_storage::Revision) -> Result<(), ApiError> {
        let store = &self.access.app.rest.store;
        let mut fresh = crate::access::Cache::default();
        for storage in CACHED {
            let kind = self
                .access
                .kinds
                .by_storage(storage)
                .expect("every cached kind is known");
            let options = fellowship_storage::ListOptions {
                revision: Some(revision),
                ..Default::default()
            };
            let page = store
                .list(&kind.key("", ""), options)
                .await
                .map_err(|e| ApiError::unavailable(e.to_string()))?;
            for kv in &page.items {
                let o = present(kv, kind)?;
                fresh.apply(
                    storage,
                    meta::namespace(&o),
                    meta::name(&o),
                    Some(o.clone()),
                );
            }
        }
        *self.access.cache.lock().expect("not poisoned") = fresh;
        Ok(())
    }

    /// The work an event calls for.
    fn observe(&self, event: Event, queue: &mut Queue) {
        let key = event.kv.key.trim_start_matches('/');
        let mut parts = key.splitn(3, '/');
        let storage = parts.next().unwrap_or("");
        let (namespace, name) = match (parts.next(), parts.next()) {
            (Some(a), Some(b)) => (a, b),
            (Some(a), None) => ("", a),
            _ => return,
        };
        // Only what the loops follow is parsed: ConfigMaps and the like pass by, and
        // workloads when they do not run.
        let followed = CACHED.contains(&storage) || matches!(storage, "secrets" | "namespaces");
        if !followed || (!self.simulation.workloads && WORKLOADS.contains(&storage)) {
            return;
        }
        let kv = match event.kind {
            EventKind::Deleted => event.prev.as_ref(),
            _ => Some(&event.kv),
        };
        let kind = self.access.kinds.by_storage(storage);
        // Parsed once: for the cache (as presented) and for what the event calls for.
        let object: Value = match (kv, kind) {
            (Some(kv), Some(kind)) => present(kv, kind).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        if CACHED.contains(&storage) {
            let now = (event.kind != EventKind::Deleted).then(|| object.clone());
            self.access
                .cache
                .lock()
                .expect("not poisoned")
                .apply(storage, namespace, name, now);
        }
        match storage {
            "namespaces" => queue.add(Loop::Namespace, "", name),
            "serviceaccounts" => queue.add(Loop::ServiceAccount, namespace, name),
            "secrets" => {
                accounts::track_token(self, &event.kind, &object, namespace);
                if let Some(account) = accounts::token_owner(&object) {
                    queue.add(Loop::ServiceAccount, namespace, account);
                }
            }
            "deployments" => queue.add(Loop::Deployment, namespace, name),
            "replicasets" => {
                queue.add(Loop::ReplicaSet, namespace, name);
                if let Some(owner) = controller_of(&object, "Deployment") {
                    queue.add(Loop::Deployment, namespace, owner);
                }
            }
            "daemonsets" => queue.add(Loop::DaemonSet, namespace, name),
            "jobs" => queue.add(Loop::Job, namespace, name),
            "pods" => {
                queue.add(Loop::Pod, namespace, name);
                for (kind, l) in [
                    ("ReplicaSet", Loop::ReplicaSet),
                    ("DaemonSet", Loop::DaemonSet),
                    ("Job", Loop::Job),
                ] {
                    if let Some(owner) = controller_of(&object, kind) {
                        queue.add(l, namespace, owner);
                    }
                }
                queue.add(Loop::Service, namespace, "");
            }
            "services" => queue.add(Loop::Service, namespace, name),
            "horizontalpodautoscalers" => queue.add(Loop::Hpa, namespace, name),
            _ => {}
        }
    }

    /// Pods waiting for a node, and HPAs, whose inputs change without events of their own.
    async fn pending(&self, queue: &mut Queue) -> Result<(), ApiError> {
        let k = &self.access.kinds;
        self.access.for_each(&k.pods, "", |pod| {
            if pod.pointer("/spec/nodeName").is_none() {
                queue.add(Loop::Pod, meta::namespace(pod), meta::name(pod));
            }
        });
        self.access.for_each(&k.hpas, "", |hpa| {
            queue.add(Loop::Hpa, meta::namespace(hpa), meta::name(hpa));
        });
        Ok(())
    }

    async fn everything(&self, queue: &mut Queue) -> Result<(), ApiError> {
        let k = &self.access.kinds;
        let loops: [(&Arc<ResourceKind>, Loop); 9] = [
            (&k.namespaces, Loop::Namespace),
            (&k.service_accounts, Loop::ServiceAccount),
            (&k.deployments, Loop::Deployment),
            (&k.replica_sets, Loop::ReplicaSet),
            (&k.daemon_sets, Loop::DaemonSet),
            (&k.jobs, Loop::Job),
            (&k.pods, Loop::Pod),
            (&k.services, Loop::Service),
            (&k.hpas, Loop::Hpa),
        ];
        for (kind, l) in loops {
            if CACHED.contains(&kind.storage) {
                self.access.for_each(kind, "", |o| {
                    queue.add(l, meta::namespace(o), meta::name(o));
                });
            } else {
                for o in self.access.list(kind, "").await? {
                    queue.add(l, meta::namespace(&o), meta::name(&o));
                }
            }
        }
        for secret in self.access.list(&k.secrets, "").await? {
            accounts::track_token(self, &EventKind::Added, &secret, meta::namespace(&secret));
        }
        Ok(())
    }

    async fn reconcile(
        &self,
        (l, namespace, name): &Work,
        queue: &mut Queue,
    ) -> Result<(), ApiError> {
        let workload = matches!(
            l,
            Loop::Pod
                | Loop::ReplicaSet
                | Loop::DaemonSet
                | Loop::Job
                | Loop::Deployment
                | Loop::Hpa
        );
        if workload && !self.simulation.workloads {
            return Ok(());
        }
        match l {
            Loop::Namespace => accounts::namespace(self, name).await,
            Loop::ServiceAccount => accounts::service_account(self, namespace, name).await,
            Loop::Deployment => {
                if let Some(wake) = deployments::reconcile(self, namespace, name).await? {
                    queue.after(wake, (Loop::Deployment, namespace.clone(), name.clone()));
                }
                Ok(())
            }
            Loop::ReplicaSet => replicasets::reconcile(self, namespace, name).await,
            Loop::DaemonSet => daemonsets::reconcile(self, namespace, name).await,
            Loop::Job => jobs::reconcile(self, namespace, name).await,
            Loop::Pod => {
                if let Some(wake) = pods::reconcile(self, namespace, name).await? {
                    queue.after(wake, (Loop::Pod, namespace.clone(), name.clone()));
                }
                Ok(())
            }
            Loop::Service if name.is_empty() => services::namespace(self, namespace).await,
            Loop::Service => services::reconcile(self, namespace, name).await,
            Loop::Hpa => hpa::reconcile(self, namespace, name).await,
        }
    }
}

/// The name of `object`'s controller, if it is of `kind`.
fn controller_of<'a>(object: &'a Value, kind: &str) -> Option<&'a str> {
    crate::access::controller(object)
        .filter(|(k, _)| *k == kind)
        .map(|(_, name)| name)
}

/// Whether `object` is controlled by `owner` (same uid).
fn controlled_by(object: &Value, owner: &Value) -> bool {
    let uid = meta::meta_str(owner, "uid");
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r["controller"] == true && r["uid"] == uid)
        })
}

/// Whether `object` names a controller of `kind` called `name`, whatever its uid: what an
/// owner that is gone, or was replaced, leaves behind.
fn names_controller(object: &Value, kind: &str, name: &str) -> bool {
    controller_of(object, kind) == Some(name)
}

/// The owner reference a controller puts on what it creates.
fn owner_reference(owner: &Value) -> Value {
    json!([{
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta::name(owner),
        "uid": meta::meta_str(owner, "uid"),
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

pub(crate) use pods::requests;

pub(crate) fn is_terminated(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn int(object: &Value, pointer: &str, default: i64) -> i64 {
    object
        .pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or(default)
}

/// Writes `status` if it differs from the object's, ignoring timestamps that would make
/// every write a change.
async fn write_status(
    c: &Controllers,
    kind: &Arc<ResourceKind>,
    object: &Value,
    status: Value,
) -> Result<(), ApiError> {
    let current = object.get("status").cloned().unwrap_or(json!({}));
    if without_times(&current) == without_times(&status) {
        return Ok(());
    }
    let mut next = object.clone();
    next["status"] = keep_times(&current, status);
    c.access
        .update(kind, &next, true, CONTROLLER_MANAGER)
        .await?;
    Ok(())
}

const TIME_FIELDS: &[&str] = &[
    "lastTransitionTime",
    "lastUpdateTime",
    "lastProbeTime",
    "lastHeartbeatTime",
];

fn without_times(status: &Value) -> Value {
    let mut s = status.clone();
    if let Some(conditions) = s.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in conditions.iter_mut().filter_map(Value::as_object_mut) {
            for f in TIME_FIELDS {
                c.remove(*f);
            }
        }
    }
    s
}

/// A condition whose status did not change keeps its transition time.
fn keep_times(old: &Value, mut new: Value) -> Value {
    let old_conditions = old.get("conditions").and_then(Value::as_array);
    if let (Some(old_conditions), Some(conditions)) = (
        old_conditions,
        new.get_mut("conditions").and_then(Value::as_array_mut),
    ) {
        for c in conditions.iter_mut() {
            if let Some(o) = old_conditions
                .iter()
                .find(|o| o["type"] == c["type"] && o["status"] == c["status"])
                && let Some(t) = o.get("lastTransitionTime")
            {
                c["lastTransitionTime"] = t.clone();
            }
        }
    }
    new
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastTransitionTime": meta::now(),
    })
}

/// What `owner` controls among `dependents`.
fn controlled(c: &Controllers, dependents: &ResourceKind, owner: &Value) -> Vec<Value> {
    let kind = owner["kind"].as_str().unwrap_or("");
    c.access
        .controlled(dependents, meta::namespace(owner), kind, meta::name(owner))
        .into_iter()
        .filter(|d| controlled_by(d, owner))
        .collect()
}

/// The Pods of `owner`: those it controls, not being deleted.
fn owned_pods(c: &Controllers, owner: &Value) -> Vec<Value> {
    controlled(c, &c.access.kinds.pods, owner)
        .into_iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect()
}

/// An owner deleted with `propagationPolicy=Orphan` keeps the `orphan` finalizer until its
/// dependents no longer name it; then it goes and they stay, as the garbage collector
/// orphans. Whether the owner is being deleted (nothing else to do for it then).
async fn release_if_deleting(
    c: &Controllers,
    owners: &Arc<ResourceKind>,
    owner: &Value,
    dependents: &Arc<ResourceKind>,
) -> Result<bool, ApiError> {
    if owner.pointer("/metadata/deletionTimestamp").is_none() {
        return Ok(false);
    }
    let finalizers = meta::finalizers(owner);
    if !finalizers.iter().any(|f| f == "orphan") {
        return Ok(true);
    }
    let uid = meta::meta_str(owner, "uid");
    for mut d in controlled(c, dependents, owner) {
        if let Some(m) = d.get_mut("metadata").and_then(Value::as_object_mut) {
            let refs = m.get_mut("ownerReferences").and_then(Value::as_array_mut);
            if let Some(refs) = refs {
                refs.retain(|r| r["uid"] != uid);
                // An empty list is left out, as kube-apiserver shows it.
                if refs.is_empty() {
                    m.remove("ownerReferences");
                }
            }
        }
        c.access
            .update(dependents, &d, false, "garbage-collector")
            .await?;
    }
    let mut released = owner.clone();
    released["metadata"]["finalizers"] = json!(
        finalizers
            .iter()
            .filter(|f| *f != "orphan")
            .collect::<Vec<_>>()
    );
    c.access
        .update(owners, &released, false, "garbage-collector")
        .await?;
    Ok(true)
}

/// Removes what a vanished owner (or an earlier one of the same name) controlled, as the
/// garbage collector does for background deletion.
async fn collect_garbage(
    c: &Controllers,
    dependents: &Arc<ResourceKind>,
    namespace: &str,
    owner_kind: &str,
    owner_name: &str,
    owner: Option<&Value>,
) -> Result<(), ApiError> {
    let named = if CACHED.contains(&dependents.storage) {
        c.access
            .controlled(dependents, namespace, owner_kind, owner_name)
    } else {
        c.access.list(dependents, namespace).await?
    };
    for d in named {
        let orphaned = names_controller(&d, owner_kind, owner_name)
            && owner.is_none_or(|o| !controlled_by(&d, o));
        if orphaned {
            c.access
                .delete(dependents, namespace, meta::name(&d), "garbage-collector")
                .await?;
        }
    }
    Ok(())
}

/// A Pod of `owner` from its template.
fn pod_from_template(owner: &Value) -> Value {
    let template = owner
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    let labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("{}-", meta::name(owner)),
            "namespace": meta::namespace(owner),
            "labels": labels,
            "ownerReferences": owner_reference(owner),
        },
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    });
    if let Some(a) = template.pointer("/metadata/annotations") {
        pod["metadata"]["annotations"] = a.clone();
    }
    pod
}
