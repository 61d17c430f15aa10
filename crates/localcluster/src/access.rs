//! In-process access to one cluster's objects for its simulated control loops: reads from
//! a cache fed by the store's events (or the store), writes through the same REST layer as HTTP requests (validation, admission,
//! resourceVersion checks, managedFields), without the HTTP.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use fellowship_apimachinery::{ApiError, ResourceKind};
use fellowship_apiserver::App;
use fellowship_apiserver::objects::present;
use fellowship_apiserver::reply::Reply;
use fellowship_apiserver::rest::{Query, Target};
use fellowship_storage::ListOptions;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::Value;

/// The resources the control loops use, looked up once.
pub struct Kinds {
    pub namespaces: Arc<ResourceKind>,
    pub nodes: Arc<ResourceKind>,
    pub pods: Arc<ResourceKind>,
    pub services: Arc<ResourceKind>,
    pub endpoints: Arc<ResourceKind>,
    pub endpoint_slices: Arc<ResourceKind>,
    pub service_accounts: Arc<ResourceKind>,
    pub secrets: Arc<ResourceKind>,
    pub deployments: Arc<ResourceKind>,
    pub replica_sets: Arc<ResourceKind>,
    pub daemon_sets: Arc<ResourceKind>,
    pub jobs: Arc<ResourceKind>,
    pub hpas: Arc<ResourceKind>,
}

impl Kinds {
    /// The kind stored under a key prefix.
    pub fn by_storage(&self, storage: &str) -> Option<&Arc<ResourceKind>> {
        [
            &self.namespaces,
            &self.nodes,
            &self.pods,
            &self.services,
            &self.endpoints,
            &self.endpoint_slices,
            &self.service_accounts,
            &self.secrets,
            &self.deployments,
            &self.replica_sets,
            &self.daemon_sets,
            &self.jobs,
            &self.hpas,
        ]
        .into_iter()
        .find(|k| k.storage == storage)
    }
}

/// The objects the control loops read most, kept in memory from the store's events (as
/// informers keep them), indexed by controller. Writes are published before they return,
/// so a loop that takes in pending events before each reconcile reads its own writes.
#[derive(Default)]
pub struct Cache {
    objects: HashMap<String, BTreeMap<(String, String), Arc<Value>>>,
    /// (storage, namespace, controller kind, controller name) → names.
    controlled: HashMap<(String, String, String, String), BTreeSet<String>>,
    /// What the Pods bound to each node ask for: the scheduler's view, kept as Pods change.
    node_usage: HashMap<String, Usage>,
}

/// Pods, CPU millicores and memory bytes on a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub pods: i64,
    pub cpu: i64,
    pub memory: i64,
}

/// The node a Pod occupies and what it asks for, if it holds room on one.
fn occupies(pod: &Value) -> Option<(&str, Usage)> {
    let node = pod.pointer("/spec/nodeName")?.as_str()?;
    if crate::controllers::is_terminated(pod) {
        return None;
    }
    let (cpu, memory) = crate::controllers::requests(pod);
    Some((
        node,
        Usage {
            pods: 1,
            cpu,
            memory,
        },
    ))
}

/// What the cache holds, by storage prefix.
pub const CACHED: &[&str] = &[
    "minions",
    "pods",
    "replicasets",
    "deployments",
    "daemonsets",
    "jobs",
    "services",
    "serviceaccounts",
    "horizontalpodautoscalers",
];

/// The kind and name of an object's controller (its owner reference with `controller: true`).
pub fn controller(object: &Value) -> Option<(&str, &str)> {
    let r = object
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)?;
    Some((r["kind"].as_str()?, r["name"].as_str()?))
}

impl Cache {
    /// Records an object's new state; `None` when it was deleted.
    pub fn apply(&mut self, storage: &str, namespace: &str, name: &str, object: Option<Value>) {
        let objects = self.objects.entry(storage.to_string()).or_default();
        let key = (namespace.to_string(), name.to_string());
        if storage == "pods" {
            let before = objects.get(&key).and_then(|o| occupies(o));
            if let Some((node, u)) = before {
                let n = self.node_usage.entry(node.to_string()).or_default();
                n.pods -= u.pods;
                n.cpu -= u.cpu;
                n.memory -= u.memory;
            }
            if let Some((node, u)) = object.as_ref().and_then(occupies) {
                let n = self.node_usage.entry(node.to_string()).or_default();
                n.pods += u.pods;
                n.cpu += u.cpu;
                n.memory += u.memory;
            }
        }
        if let Some((kind, owner)) = objects.get(&key).and_then(|o| controller(o)) {
            let index = (
                storage.to_string(),
                namespace.to_string(),
                kind.to_string(),
                owner.to_string(),
            );
            if let Some(set) = self.controlled.get_mut(&index) {
                set.remove(name);
                if set.is_empty() {
                    self.controlled.remove(&index);
                }
            }
        }
        match object {
            Some(mut o) => {
                // The loops never read field ownership, and a write's managedFields are the
                // server's anyway: leaving them out halves what is kept and copied.
                if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("managedFields");
                }
                if let Some((kind, owner)) = controller(&o) {
                    self.controlled
                        .entry((
                            storage.to_string(),
                            namespace.to_string(),
                            kind.to_string(),
                            owner.to_string(),
                        ))
                        .or_default()
                        .insert(name.to_string());
                }
                objects.insert(key, Arc::new(o));
            }
            None => {
                objects.remove(&key);
            }
        }
    }
}

pub struct Access {
    pub app: Arc<App>,
    pub kinds: Kinds,
    pub cache: Mutex<Cache>,
    /// The control loops' client rate limit, as kube-controller-manager's `--kube-api-qps`
    /// and `--kube-api-burst` bound its writes; none when unlimited.
    limiter: Option<DefaultDirectRateLimiter>,
}

impl Access {
    /// Access for the control loops of `app`'s cluster, writing at most `qps` objects a
    /// second after a burst of `burst` (0: unlimited).
    pub fn new(app: Arc<App>, qps: u32, burst: u32) -> anyhow::Result<Access> {
        let find = |group: &str, version: &str, plural: &str| {
            app.surface
                .registry
                .get(group, version, plural)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("the member registry lacks {plural}"))
        };
        let kinds = Kinds {
            namespaces: find("", "v1", "namespaces")?,
            nodes: find("", "v1", "nodes")?,
            pods: find("", "v1", "pods")?,
            services: find("", "v1", "services")?,
            endpoints: find("", "v1", "endpoints")?,
            endpoint_slices: find("discovery.k8s.io", "v1", "endpointslices")?,
            service_accounts: find("", "v1", "serviceaccounts")?,
            secrets: find("", "v1", "secrets")?,
            deployments: find("apps", "v1", "deployments")?,
            replica_sets: find("apps", "v1", "replicasets")?,
            daemon_sets: find("apps", "v1", "daemonsets")?,
            jobs: find("batch", "v1", "jobs")?,
            hpas: find("autoscaling", "v2", "horizontalpodautoscalers")?,
        };
        let limiter = NonZeroU32::new(qps).map(|qps| {
            let burst = NonZeroU32::new(burst).unwrap_or(qps);
            RateLimiter::direct(Quota::per_second(qps).allow_burst(burst))
        });
        Ok(Access {
            app,
            kinds,
            cache: Mutex::new(Cache::default()),
            limiter,
        })
    }

    /// Waits for the rate limit to let one more write through.
    async fn admit(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
    }

    fn cached(kind: &ResourceKind) -> bool {
        CACHED.contains(&kind.storage)
    }

    /// What the Pods bound to `node` ask for.
    pub fn node_usage(&self, node: &str) -> Usage {
        let cache = self.cache.lock().expect("not poisoned");
        cache.node_usage.get(node).copied().unwrap_or_default()
    }

    /// Looks at every cached object of `kind` in `namespace` (all when empty) without
    /// copying it.
    pub fn for_each(&self, kind: &ResourceKind, namespace: &str, mut f: impl FnMut(&Value)) {
        let cache = self.cache.lock().expect("not poisoned");
        for ((ns, _), o) in cache.objects.get(kind.storage).into_iter().flatten() {
            if namespace.is_empty() || ns == namespace {
                f(o);
            }
        }
    }

    /// What `kind`'s object `name` controls among `dependents`, from the cache.
    pub fn controlled(
        &self,
        dependents: &ResourceKind,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> Vec<Value> {
        let cache = self.cache.lock().expect("not poisoned");
        let index = (
            dependents.storage.to_string(),
            namespace.to_string(),
            kind.to_string(),
            name.to_string(),
        );
        let Some(names) = cache.controlled.get(&index) else {
            return Vec::new();
        };
        let objects = &cache.objects[dependents.storage];
        names
            .iter()
            .filter_map(|n| objects.get(&(namespace.to_string(), n.clone())))
            .map(|o| (**o).clone())
            .collect()
    }

    /// The objects of `kind` in `namespace` (every namespace when empty).
    pub async fn list(&self, kind: &ResourceKind, namespace: &str) -> Result<Vec<Value>, ApiError> {
        if Self::cached(kind) {
            let cache = self.cache.lock().expect("not poisoned");
            return Ok(cache
                .objects
                .get(kind.storage)
                .map(|m| {
                    m.iter()
                        .filter(|((ns, _), _)| namespace.is_empty() || ns == namespace)
                        .map(|(_, o)| (**o).clone())
                        .collect()
                })
                .unwrap_or_default());
        }
        let page = self
            .app
            .rest
            .store
            .list(&kind.key(namespace, ""), ListOptions::default())
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        page.items.iter().map(|kv| present(kv, kind)).collect()
    }

    pub async fn get(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        if Self::cached(kind) {
            let cache = self.cache.lock().expect("not poisoned");
            return Ok(cache
                .objects
                .get(kind.storage)
                .and_then(|m| m.get(&(namespace.to_string(), name.to_string())))
                .map(|o| (**o).clone()));
        }
        let kv = self
            .app
            .rest
            .store
            .get(&kind.key(namespace, name))
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        kv.map(|kv| present(&kv, kind)).transpose()
    }

    fn query(manager: &str) -> Query {
        HashMap::from([("fieldManager".to_string(), manager.to_string())])
    }

    pub async fn create(
        &self,
        kind: &Arc<ResourceKind>,
        namespace: &str,
        manager: &str,
        object: &Value,
    ) -> Result<Option<Value>, ApiError> {
        self.admit().await;
        let t = target(kind, namespace, "", None);
        let reply = self
            .app
            .rest
            .create_object(&t, &Self::query(manager), object.clone())
            .await?;
        Ok(object_of(reply))
    }

    /// Replaces `object` (its resourceVersion a precondition), or its status.
    pub async fn update(
        &self,
        kind: &Arc<ResourceKind>,
        object: &Value,
        status: bool,
        manager: &str,
    ) -> Result<Option<Value>, ApiError> {
        let namespace = fellowship_apimachinery::meta::namespace(object).to_string();
        let name = fellowship_apimachinery::meta::name(object).to_string();
        self.admit().await;
        let sub = status.then_some("status");
        let t = target(kind, &namespace, &name, sub);
        let reply = self
            .app
            .rest
            .update_object(&t, &Self::query(manager), object.clone())
            .await?;
        Ok(object_of(reply))
    }

    /// Deletes in the background (dependents go after); a missing object is no error.
    pub async fn delete(
        &self,
        kind: &Arc<ResourceKind>,
        namespace: &str,
        name: &str,
        manager: &str,
    ) -> Result<(), ApiError> {
        self.admit().await;
        let t = target(kind, namespace, name, None);
        match self.app.rest.delete(&t, &Self::query(manager), b"").await {
            Err(e) if e.code == 404 => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

fn object_of(reply: Reply) -> Option<Value> {
    match reply {
        Reply::Object { object, .. } => Some(object),
        _ => None,
    }
}

fn target(
    kind: &Arc<ResourceKind>,
    namespace: &str,
    name: &str,
    subresource: Option<&str>,
) -> Target {
    Target {
        kind: kind.clone(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        subresource: subresource.map(String::from),
    }
}
