//! The cluster controller (spec §1.1): every monitor period, and at once for a Cluster that
//! is new or whose spec changed, each member is probed with `GET /healthz` using the
//! credentials the federation holds for it, and the Cluster's status written: `Ready`, or
//! `NotReady`/`NotOffline`, or `Offline`; zones and region from the member's node labels.
//!
//! Better than the original: a client whose credentials could not be built is tried again
//! at every probe (the original gave up until restarted), and says why in the status; probes
//! run side by side with a time limit each, so one slow member delays no other.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::http::Request;
use fellowship_apimachinery::meta;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::members::{self, MEMBER_TIMEOUT};
use crate::metrics::Metrics;

const ZONE: &str = "failure-domain.beta.kubernetes.io/zone";
const REGION: &str = "failure-domain.beta.kubernetes.io/region";

pub fn cluster_resource() -> ApiResource {
    ApiResource {
        group: "federation".into(),
        version: "v1beta1".into(),
        api_version: "federation/v1beta1".into(),
        kind: "Cluster".into(),
        plural: "clusters".into(),
    }
}

pub struct ClusterController {
    pub federation: Client,
    pub host: Client,
    /// Where the members' credential Secrets are, in the host cluster.
    pub namespace: String,
    pub period: Duration,
    pub metrics: Arc<Metrics>,
}

/// What a probe found.
#[derive(Debug, PartialEq)]
pub enum Health {
    /// `/healthz` answered `ok`.
    Ready,
    /// It answered something else.
    NotReady,
    /// No answer.
    Unreachable,
    /// No client could be built (its Secret is missing or unusable), with why.
    NoCredentials(String),
}

fn condition(kind: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": kind, "status": status, "reason": reason, "message": message, "lastProbeTime": now, "lastTransitionTime": now})
}

/// The conditions of spec §1.1 for a probe's result.
pub fn conditions(health: &Health, now: &str) -> Vec<Value> {
    match health {
        Health::Ready => vec![condition(
            "Ready",
            "True",
            "ClusterReady",
            "/healthz responded with ok",
            now,
        )],
        Health::NotReady => vec![
            condition(
                "Ready",
                "False",
                "ClusterNotReady",
                "/healthz responded without ok",
                now,
            ),
            condition(
                "Offline",
                "False",
                "ClusterReachable",
                "cluster is reachable",
                now,
            ),
        ],
        Health::Unreachable => vec![condition(
            "Offline",
            "True",
            "ClusterNotReachable",
            "cluster is not reachable",
            now,
        )],
        Health::NoCredentials(why) => vec![condition(
            "Offline",
            "True",
            "ClusterCredentialsUnavailable",
            why,
            now,
        )],
    }
}

/// Transition times stay when the (type, status) list is the same as before (case-blind, in
/// order), as the original compares them.
pub fn keep_transitions(old: Option<&Value>, mut new: Vec<Value>) -> Vec<Value> {
    let key = |c: &Value| {
        (
            c["type"].as_str().unwrap_or("").to_ascii_lowercase(),
            c["status"].as_str().unwrap_or("").to_ascii_lowercase(),
        )
    };
    let Some(old) = old.and_then(Value::as_array) else {
        return new;
    };
    let same = old.len() == new.len() && old.iter().zip(&new).all(|(o, n)| key(o) == key(n));
    if same {
        for (o, n) in old.iter().zip(new.iter_mut()) {
            if let Some(t) = o.get("lastTransitionTime") {
                n["lastTransitionTime"] = t.clone();
            }
        }
    }
    new
}

/// Zones (sorted, unique) and region from the nodes' labels; none unless every node has a
/// zone, as the original reads them.
pub fn topology(nodes: &[Node]) -> Option<(Vec<String>, String)> {
    let label = |n: &Node, key: &str| n.metadata.labels.as_ref().and_then(|l| l.get(key)).cloned();
    let zones: Option<BTreeSet<String>> = nodes.iter().map(|n| label(n, ZONE)).collect();
    let zones = zones.filter(|z| !z.is_empty())?;
    let region = nodes
        .first()
        .and_then(|n| label(n, REGION))
        .unwrap_or_default();
    Some((zones.into_iter().collect(), region))
}

impl ClusterController {
    /// Runs until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let api: Api<DynamicObject> = Api::all_with(self.federation.clone(), &cluster_resource());
        let changed = Arc::new(Notify::new());
        tokio::spawn(watch_specs(api.clone(), changed.clone()));
        loop {
            self.probe_all(&api).await;
            tokio::select! {
                _ = tokio::time::sleep(self.period) => {}
                _ = changed.notified() => {}
            }
        }
    }

    async fn probe_all(&self, api: &Api<DynamicObject>) {
        let clusters = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(error = %e, "listing clusters");
                return;
            }
        };
        let names: Vec<String> = clusters
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        self.metrics.retain(&names);
        futures::future::join_all(clusters.into_iter().map(|c| self.probe(api, c))).await;
    }

    /// Probes one member and writes what it found.
    async fn probe(&self, api: &Api<DynamicObject>, cluster: DynamicObject) {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let object = serde_json::to_value(&cluster).unwrap_or_default();
        let (health, topology) = self.health(&object).await;
        tracing::debug!(cluster = %name, ?health, "probed");
        self.metrics.probed(&name, &health);
        let now = meta::now();
        let mut status = json!({"conditions": keep_transitions(object.pointer("/status/conditions"), conditions(&health, &now))});
        if let Some((zones, region)) = topology {
            status["zones"] = json!(zones);
            if !region.is_empty() {
                status["region"] = json!(region);
            }
        }
        let mut next = object;
        next["status"] = status;
        let next: DynamicObject = match serde_json::from_value(next) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(cluster = %name, error = %e, "cluster status");
                return;
            }
        };
        if let Err(e) = api
            .replace_status(&name, &PostParams::default(), &next)
            .await
        {
            tracing::warn!(cluster = %name, error = %e, "writing cluster status");
        }
    }

    async fn health(&self, cluster: &Value) -> (Health, Option<(Vec<String>, String)>) {
        let client = match members::secret(&self.host, &self.namespace, cluster).await {
            Ok(secret) => members::client(cluster, secret.as_ref()).await,
            Err(e) => Err(e),
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => return (Health::NoCredentials(format!("{e:#}")), None),
        };
        let request = Request::get("/healthz")
            .body(Vec::new())
            .expect("a valid request");
        let answer = tokio::time::timeout(MEMBER_TIMEOUT, client.request_text(request)).await;
        match answer {
            Ok(Ok(body)) if body.trim().eq_ignore_ascii_case("ok") => {
                let nodes: Api<Node> = Api::all(client);
                let listed =
                    tokio::time::timeout(MEMBER_TIMEOUT, nodes.list(&ListParams::default())).await;
                let topology = match listed {
                    Ok(Ok(list)) => topology(&list.items),
                    _ => None,
                };
                (Health::Ready, topology)
            }
            Ok(Ok(_)) => (Health::NotReady, None),
            _ => (Health::Unreachable, None),
        }
    }
}

/// Wakes the prober when a Cluster is added (a name seen before counts again when it is a
/// new object: unjoined and joined again) or its spec changes (its generation moves); its
/// own status writes do not.
async fn watch_specs(api: Api<DynamicObject>, changed: Arc<Notify>) {
    let mut seen: BTreeMap<String, (Option<String>, Option<i64>)> = BTreeMap::new();
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .boxed();
    loop {
        match events.try_next().await {
            Ok(Some(c)) => {
                let name = c.metadata.name.clone().unwrap_or_default();
                let version = (c.metadata.uid.clone(), c.metadata.generation);
                if seen.insert(name, version.clone()) != Some(version) {
                    changed.notify_one();
                }
            }
            Ok(None) => return,
            Err(e) => tracing::debug!(error = %e, "cluster watch"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_and_transitions() {
        let first = conditions(&Health::Ready, "t1");
        assert_eq!(first[0]["type"], "Ready");
        let again = keep_transitions(Some(&json!(first)), conditions(&Health::Ready, "t2"));
        assert_eq!(again[0]["lastTransitionTime"], "t1");
        assert_eq!(again[0]["lastProbeTime"], "t2");
        let down = keep_transitions(Some(&json!(again)), conditions(&Health::Unreachable, "t3"));
        assert_eq!(down[0]["type"], "Offline");
        assert_eq!(down[0]["lastTransitionTime"], "t3");
        let not_ready = conditions(&Health::NotReady, "t4");
        let kinds: Vec<&str> = not_ready
            .iter()
            .map(|c| c["status"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["False", "False"]);
    }

    #[test]
    fn zones_need_every_node_labelled() {
        let node = |zone: Option<&str>, region: &str| {
            let mut labels = std::collections::BTreeMap::new();
            if let Some(z) = zone {
                labels.insert(ZONE.to_string(), z.to_string());
            }
            labels.insert(REGION.to_string(), region.to_string());
            Node {
                metadata: kube::api::ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                },
                ..Default::default()
            }
        };
        let nodes = [
            node(Some("b"), "r"),
            node(Some("a"), "r"),
            node(Some("b"), "r"),
        ];
        assert_eq!(
            topology(&nodes),
            Some((vec!["a".into(), "b".into()], "r".into()))
        );
        assert_eq!(topology(&[node(Some("a"), "r"), node(None, "r")]), None);
    }
}
