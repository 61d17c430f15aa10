//! The federated types (spec §4.2), one row each, and what differs between them. Most are
//! copied to the members as they are; those whose replicas are spread over the clusters
//! (ReplicaSets and Deployments, Jobs, HPAs) have a [`Scheduling`] adapter, one file each,
//! that says each cluster's share, shapes each member's copy for it and sums the members'
//! status into the federated object's. Adapters decide; the sync engine does the I/O.

mod hpa;
mod job;
mod replicas;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::planner::Preferences;

pub use hpa::Counts as HpaCounts;
pub use job::Counts as JobCounts;
pub use replicas::{Counts as ReplicaCounts, target_clusters};

/// Settings of the adapters that the controller manager's flags give.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// A member HPA that scaled less than this long ago keeps its min and max
    /// (`--hpa-scale-forbidden-window`, spec §4.6).
    pub hpa_scale_forbidden_window: Duration,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            hpa_scale_forbidden_window: Duration::from_secs(120),
        }
    }
}

/// A federated type: its resource and, if its replicas are spread, how.
pub struct FederatedType {
    pub resource: ApiResource,
    pub namespaced: bool,
    pub scheduling: Option<Arc<dyn Scheduling>>,
}

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

/// Every federated type. Seed-era `extensions/v1beta1` objects are read through their
/// current versions, so they reach members as those.
#[rustfmt::skip] // one type a line reads as a table
pub fn all(tuning: &Tuning) -> Vec<FederatedType> {
    let t = |r: ApiResource, namespaced: bool, scheduling: Option<Arc<dyn Scheduling>>| FederatedType { resource: r, namespaced, scheduling };
    vec![
        t(resource("", "v1", "Namespace", "namespaces"), false, None),
        t(resource("", "v1", "ConfigMap", "configmaps"), true, None),
        t(resource("", "v1", "Secret", "secrets"), true, None),
        t(resource("", "v1", "Service", "services"), true, None),
        t(resource("apps", "v1", "DaemonSet", "daemonsets"), true, None),
        t(resource("apps", "v1", "Deployment", "deployments"), true, Some(Arc::new(replicas::Replicas::deployments()))),
        t(resource("apps", "v1", "ReplicaSet", "replicasets"), true, Some(Arc::new(replicas::Replicas::replica_sets()))),
        t(resource("batch", "v1", "Job", "jobs"), true, Some(Arc::new(job::Jobs))),
        t(resource("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"), true, Some(Arc::new(hpa::Hpas::new(tuning)))),
        t(resource("networking.k8s.io", "v1", "Ingress", "ingresses"), true, None),
    ]
}

/// Every federated type's resource and whether it is namespaced.
pub fn resources() -> Vec<(ApiResource, bool)> {
    all(&Tuning::default())
        .into_iter()
        .map(|t| (t.resource, t.namespaced))
        .collect()
}

/// The types to propagate: those `--controllers` leaves on whose resource the federation
/// API serves (spec §4.2: a missing resource skips its controller with a warning, unless
/// the controller was asked for by name).
pub async fn enabled(
    federation: &Client,
    controllers: &crate::options::Controllers,
    tuning: &Tuning,
) -> anyhow::Result<Vec<FederatedType>> {
    let mut served: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut out = Vec::new();
    for t in all(tuning) {
        let ar = &t.resource;
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
            out.push(t);
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

impl FederatedType {
    /// The objects of this type in `namespace` (all of them for a cluster-scoped type).
    pub fn api(&self, client: &Client, namespace: &str) -> Api<DynamicObject> {
        if self.namespaced {
            Api::namespaced_with(client.clone(), namespace, &self.resource)
        } else {
            Api::all_with(client.clone(), &self.resource)
        }
    }
}

pub fn object_ref(ar: &ApiResource, namespace: &str, name: &str) -> ObjectRef<DynamicObject> {
    let r = ObjectRef::new_with(name, ar.clone());
    if namespace.is_empty() {
        r
    } else {
        r.within(namespace)
    }
}

/// One cluster's part of a federated object.
#[derive(Clone, Debug, PartialEq, Hash)]
pub enum Share {
    /// `spec.replicas` of a ReplicaSet or Deployment (a copy is made even for 0, as v1 did:
    /// the cluster is in the plan, and an HPA there may scale it).
    Replicas(i64),
    /// A cluster left out while an HPA controls the object: kept at 0 where a copy is,
    /// none made.
    Idle,
    /// The member's own HPA sets `spec.replicas` (0 when the copy is made).
    Autoscaled,
    /// A Job's part; a copy is made only where it runs something.
    Job {
        parallelism: i64,
        completions: Option<i64>,
    },
    /// An HPA's min and max.
    Hpa { min: i64, max: i64 },
    /// Nothing here: a copy there is deleted.
    None,
}

impl Share {
    /// Whether a member without a copy gets one.
    pub fn creates(&self) -> bool {
        match self {
            Share::Replicas(_) | Share::Autoscaled | Share::Hpa { .. } => true,
            Share::Job {
                parallelism,
                completions,
            } => *parallelism > 0 && completions.is_none_or(|c| c > 0),
            Share::Idle | Share::None => false,
        }
    }
}

/// What a member copy of a spread type reports, kept per copy in place of the copy.
#[derive(Clone, Debug, PartialEq)]
pub enum Summary {
    Replicas(ReplicaCounts),
    Job(JobCounts),
    Hpa(HpaCounts),
}

impl Summary {
    /// What a copy reports once this controller wrote it at `generation`: the same status,
    /// at the new generation.
    pub fn written(&self, generation: Option<i64>) -> Summary {
        match (self, generation) {
            (Summary::Replicas(c), Some(generation)) => Summary::Replicas(ReplicaCounts {
                generation,
                ..c.clone()
            }),
            _ => self.clone(),
        }
    }
}

/// A selected Ready cluster, as planning sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub name: &'a str,
    /// What its copy reports, if it has one.
    pub summary: Option<&'a Summary>,
    /// Its share as last planned: what it was asked for, while its copy has not said yet.
    pub planned: Option<&'a Share>,
    /// Replicas it can run, where Pods of this object have waited for room too long.
    pub capacity: Option<i64>,
}

/// The shares of a federated object, and what planning found along the way.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    pub shares: BTreeMap<String, Share>,
    /// The object asks for something that cannot be done as asked (invalid preferences): a
    /// Warning event says so, and the default was used.
    pub problem: Option<Problem>,
    /// Look again after this long: the inputs change with time alone.
    pub recheck: Option<Duration>,
    /// An HPA's target, and the clusters whose member HPAs scale it.
    pub targets: Option<Targets>,
}

/// What planning could not do as the object asks: the reason and message of a Warning event.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// The federated object an HPA scales and the clusters it is in (spec §4.6).
#[derive(Clone, Debug, PartialEq)]
pub struct Targets {
    pub kind: String,
    pub name: String,
    pub clusters: Vec<String>,
}

/// One cluster of a placement, for the federated status.
#[derive(Clone, Copy, Debug)]
pub struct MemberState<'a> {
    pub name: &'a str,
    pub share: &'a Share,
    /// Its copy holds the federated object as this share makes it.
    pub in_step: bool,
    pub summary: Option<&'a Summary>,
}

/// What differs for a type whose replicas are spread over the clusters.
pub trait Scheduling: Send + Sync {
    /// What a member copy reports that planning and the federated status read.
    fn summarize(&self, copy: &Value) -> Summary;
    /// Each selected cluster's share of `object` (`now` for what depends on time).
    fn place(
        &self,
        object: &DynamicObject,
        clusters: &[Candidate],
        now: jiff::Timestamp,
    ) -> Placement;
    /// A member copy's spec for its share; `exists`: the member has a copy.
    fn shape(&self, spec: &mut Value, share: &Share, exists: bool);
    /// The federated object's status, from its members' (`now` for new conditions).
    fn status(
        &self,
        object: &DynamicObject,
        members: &[MemberState],
        now: jiff::Timestamp,
    ) -> Value;
    /// One cluster's entry in the [`REPLICAS`](crate::annotations::REPLICAS) annotation.
    fn view(&self, share: &Share, summary: Option<&Summary>) -> Value;
    /// Whether planning reads the capacity of clusters whose Pods wait for room.
    fn reads_capacity(&self) -> bool {
        false
    }
}

/// Clusters of which nothing is known but their names (the adapters' tests).
#[cfg(test)]
fn candidates<'a>(names: &[&'a str]) -> Vec<Candidate<'a>> {
    let named = |name| Candidate {
        name,
        summary: None,
        capacity: None,
        planned: None,
    };
    names.iter().copied().map(named).collect()
}

/// The preferences in `annotation` of `object`, the default where absent, and where
/// invalid, with the problem to tell.
fn preferences(object: &DynamicObject, annotation: &str) -> (Preferences, Option<Problem>) {
    match Preferences::of(object.metadata.annotations.as_ref(), annotation) {
        Ok(p) => (p.unwrap_or_default(), None),
        Err(e) => {
            let message = format!("{e}; the default preferences are used");
            let problem = Problem {
                reason: "InvalidPreferences",
                message,
            };
            (Preferences::default(), Some(problem))
        }
    }
}

/// The planner's key of an object: `namespace/name`.
fn key(object: &DynamicObject) -> String {
    let meta = &object.metadata;
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// An integer at `pointer`, else `default`.
fn int(value: &Value, pointer: &str, default: i64) -> i64 {
    value
        .pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or(default)
}

/// A timestamp at `pointer`.
fn time(value: &Value, pointer: &str) -> Option<jiff::Timestamp> {
    value.pointer(pointer)?.as_str()?.parse().ok()
}

/// A time as Kubernetes writes it (whole seconds, UTC).
fn stamp(t: jiff::Timestamp) -> Value {
    json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// The condition of `kind` in a status, if there.
fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// A condition, keeping the times of the same one in `before` (same type, status and
/// reason): a status rewritten with nothing new is the same status.
fn new_condition(
    before: &Value,
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> Value {
    let status = if status { "True" } else { "False" };
    let kept = condition(before, kind).filter(|c| c["status"] == status && c["reason"] == reason);
    let at = |field: &str| {
        kept.and_then(|c| c.get(field))
            .cloned()
            .unwrap_or_else(|| stamp(now))
    };
    json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": at("lastUpdateTime"),
        "lastTransitionTime": at("lastTransitionTime"),
    })
}

/// Counts as kube-controller-manager writes them: zeros left out (`omitempty`), so the
/// merge patch that writes a status removes a count that fell to zero.
fn omit_zeros(pairs: &[(&str, i64)]) -> serde_json::Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), if *v == 0 { Value::Null } else { json!(v) }))
        .collect()
}
