//! What the federation is told of its objects: each one's state in each cluster (the
//! [`PROPAGATION`] annotation, and an event per change of state), the shares and replicas
//! of a spread one (the [`REPLICAS`] annotation) and its status. Written by one publisher in
//! batches: an object reaching ten clusters gets one write and one event, not ten.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::ResourceExt as _;
use kube::api::PostParams;
use kube::core::Request;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::SyncController;
use super::queue::RETRY;
use super::watch::{Written, merge_patch};
use crate::annotations::{PROPAGATION, REPLICAS};
use crate::copies::Key;

/// How long changes gather before they are written.
const PUBLISH_BATCH: Duration = Duration::from_millis(100);

/// A cluster name or an object's state in a cluster.
pub type Text = Arc<str>;

/// An object's state in each cluster. A million of these strings (100,000 objects in 10
/// clusters) would be a million allocations: each member's name and the states every
/// object may have are shared.
type States = BTreeMap<Text, Text>;

/// The states a member reconcile reports that are no failure.
const CALM: [&str; 3] = ["Synced", "NotSelected", "NotScheduled"];

/// A state as [`States`] keeps it: the common ones shared, any other (a failure's message,
/// what an annotation said) the object's own.
fn state_text(state: String) -> Text {
    static COMMON: std::sync::LazyLock<[Text; 3]> =
        std::sync::LazyLock::new(|| CALM.map(Text::from));
    match COMMON.iter().find(|t| ***t == *state) {
        Some(t) => t.clone(),
        None => state.into(),
    }
}

/// What is to be written of one object.
#[derive(Default)]
struct Pending {
    /// States that changed, in the order they did.
    changes: Vec<(Text, Text)>,
    /// Its [`REPLICAS`] annotation changed.
    view: bool,
    /// Its status, as it is to be.
    status: Option<Value>,
}

impl Pending {
    /// This and what came after it.
    fn then(mut self, later: Pending) -> Pending {
        self.changes.extend(later.changes);
        self.view |= later.view;
        self.status = later.status.or(self.status);
        self
    }
}

/// What the publisher works from.
#[derive(Default)]
pub(super) struct Reporter {
    /// The last state known of each object in each cluster (seeded from the object's
    /// annotation, so a restart rewrites nothing that did not change).
    states: Mutex<HashMap<Key, States>>,
    /// The [`REPLICAS`] annotation of each spread object, as last made.
    views: Mutex<HashMap<Key, String>>,
    /// The status of each spread object, as last reported.
    statuses: Mutex<HashMap<Key, Value>>,
    /// What is not written yet, by object; the publisher batches it.
    unpublished: Mutex<BTreeMap<Key, Pending>>,
    publish: Notify,
}

impl Reporter {
    /// Drops what is known of an object (gone, or another under its name).
    pub fn forget(&self, key: &Key) {
        self.states.lock().expect("not poisoned").remove(key);
        self.views.lock().expect("not poisoned").remove(key);
        self.statuses.lock().expect("not poisoned").remove(key);
        self.unpublished.lock().expect("not poisoned").remove(key);
    }

    fn pend(&self, key: &Key, change: impl FnOnce(&mut Pending)) {
        change(
            self.unpublished
                .lock()
                .expect("not poisoned")
                .entry(key.clone())
                .or_default(),
        );
        self.publish.notify_one();
    }
}

/// Whether `have` is `next`, a null in `next` saying "absent".
fn same(have: Option<&Value>, next: &Value) -> bool {
    match (have, next) {
        (have, Value::Null) => have.is_none_or(Value::is_null),
        (Some(Value::Object(h)), Value::Object(n)) => {
            n.iter().all(|(k, v)| same(h.get(k), v))
                && h.keys().all(|k| n.get(k).is_some_and(|v| !v.is_null()))
        }
        (Some(Value::Array(h)), Value::Array(n)) => {
            h.len() == n.len() && h.iter().zip(n).all(|(h, n)| same(Some(h), n))
        }
        (have, next) => have == Some(next),
    }
}

/// Whether a status differs from `next` in a field `next` sets (others are not this
/// controller's).
fn differs(current: Option<&Value>, next: &Value) -> bool {
    let fields = next.as_object().into_iter().flatten();
    !fields
        .into_iter()
        .all(|(k, v)| same(current.and_then(|c| c.get(k)), v))
}

impl SyncController {
    /// Records an object's state in a cluster; changes are written on the federated object
    /// (the [`PROPAGATION`] annotation, which `kubectl describe` and `get -o yaml` show)
    /// with events, by the publisher.
    pub(super) fn report(&self, cluster: &Text, key: &Key, state: String) {
        let state = state_text(state);
        {
            let mut states = self.reporter.states.lock().expect("not poisoned");
            let entry = states.entry(key.clone()).or_insert_with(|| {
                let annotation = self.federated(key).and_then(|o| {
                    serde_json::from_str::<BTreeMap<String, String>>(
                        o.annotations().get(PROPAGATION)?,
                    )
                    .ok()
                });
                (annotation.into_iter().flatten())
                    .map(|(c, s)| (Text::from(c), state_text(s)))
                    .collect()
            });
            if entry.get(cluster) == Some(&state) {
                return;
            }
            entry.insert(cluster.clone(), state.clone());
        }
        self.reporter
            .pend(key, |p| p.changes.push((cluster.clone(), state)));
    }

    /// Records a spread object's [`REPLICAS`] annotation, written if it changed.
    pub(super) fn report_view(&self, key: &Key, view: String, written: Option<&str>) {
        let mut views = self.reporter.views.lock().expect("not poisoned");
        let last = views.get(key).map(String::as_str).or(written);
        if last == Some(view.as_str()) {
            return;
        }
        views.insert(key.clone(), view);
        drop(views);
        self.reporter.pend(key, |p| p.view = true);
    }

    /// Records a spread object's status, written through `/status` if it differs from the
    /// last one reported (else from the one `stored`): a status reported but not written
    /// yet is not the one stored.
    pub(super) fn report_status(&self, key: &Key, status: Value, stored: Option<&Value>) {
        let mut statuses = self.reporter.statuses.lock().expect("not poisoned");
        if !differs(statuses.get(key).or(stored), &status) {
            return;
        }
        statuses.insert(key.clone(), status.clone());
        drop(statuses);
        self.reporter.pend(key, |p| p.status = Some(status));
    }

    /// Writes what was reported, in batches, a few objects at a time. What the federation
    /// API did not take (restarting, unreachable) is written once it answers again, with
    /// whatever was reported meanwhile: it is known as reported and would otherwise never
    /// be written.
    pub(super) async fn publisher(self: Arc<Self>) {
        let reporter = &self.reporter;
        loop {
            reporter.publish.notified().await;
            tokio::time::sleep(PUBLISH_BATCH).await;
            let batch = std::mem::take(&mut *reporter.unpublished.lock().expect("not poisoned"));
            let failed = Mutex::new(Vec::new());
            futures::stream::iter(batch)
                .for_each_concurrent(16, |(key, pending)| {
                    let (this, failed) = (self.clone(), &failed);
                    async move {
                        if let Err(e) = this.publish(&key, &pending).await {
                            tracing::debug!(?key, error = %e, "reporting on a federated object");
                            failed.lock().expect("not poisoned").push((key, pending));
                        }
                    }
                })
                .await;
            let failed = failed.into_inner().expect("not poisoned");
            if failed.is_empty() {
                continue;
            }
            {
                let mut unpublished = reporter.unpublished.lock().expect("not poisoned");
                for (key, pending) in failed {
                    let later = unpublished.remove(&key).unwrap_or_default();
                    unpublished.insert(key, pending.then(later));
                }
            }
            tokio::time::sleep(RETRY).await;
            reporter.publish.notify_one();
        }
    }

    /// One object's annotations and status, and an event per distinct new state naming its
    /// clusters; an error only when something was not written.
    async fn publish(&self, key: &Key, pending: &Pending) -> anyhow::Result<()> {
        let t = &self.types[key.0];
        let (ar, namespaced) = (&t.resource, t.namespaced);
        let states = self
            .reporter
            .states
            .lock()
            .expect("not poisoned")
            .get(key)
            .cloned();
        let view = (pending.view)
            .then(|| {
                self.reporter
                    .views
                    .lock()
                    .expect("not poisoned")
                    .get(key)
                    .cloned()
            })
            .flatten();
        let mut annotations = serde_json::Map::new();
        if let Some(all) = states.as_ref().filter(|_| !pending.changes.is_empty()) {
            let annotation: BTreeMap<&str, &str> = all.iter().map(|(c, s)| (&**c, &**s)).collect();
            annotations.insert(
                PROPAGATION.into(),
                json!(serde_json::to_string(&annotation)?),
            );
        }
        if let Some(view) = view {
            annotations.insert(REPLICAS.into(), json!(view));
        }
        let gone = |r: Result<Written, kube::Error>| match r {
            // Gone meanwhile: nothing to say about it.
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(true),
            r => r.map(|_| false),
        };
        if !annotations.is_empty() {
            let patch = json!({"metadata": {"annotations": annotations}});
            if gone(merge_patch(&self.federation, ar, namespaced, key, None, &patch).await)? {
                self.reporter.forget(key);
                return Ok(());
            }
        }
        if let Some(status) = &pending.status {
            let patch = json!({"status": status});
            if gone(
                merge_patch(
                    &self.federation,
                    ar,
                    namespaced,
                    key,
                    Some("status"),
                    &patch,
                )
                .await,
            )? {
                self.reporter.forget(key);
                return Ok(());
            }
        }
        let Some(all) = states else { return Ok(()) };
        let mut by_state: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (cluster, state) in &pending.changes {
            // Only the latest state of each cluster is news.
            if all.get(cluster) == Some(state) {
                by_state.entry(&**state).or_default().push(&**cluster);
            }
        }
        for (state, mut clusters) in by_state {
            clusters.sort_unstable();
            clusters.dedup();
            let reason = state.split(':').next().unwrap_or(state);
            let which = if clusters.len() == 1 {
                "cluster"
            } else {
                "clusters"
            };
            let message = format!("{which} {}: {state}", clusters.join(", "));
            self.event(key, !CALM.contains(&reason), reason, &message)
                .await?;
        }
        Ok(())
    }

    /// Records an event on a federated object. Events are told once: one the federation
    /// turns away is not sent again (what it says is in the object, which is).
    pub(super) async fn event(
        &self,
        key: &Key,
        warning: bool,
        reason: &str,
        message: &str,
    ) -> anyhow::Result<()> {
        let (index, ns, name) = key;
        let ar = &self.types[*index].resource;
        let uid = self.federated(key).and_then(|o| o.metadata.uid.clone());
        let (ns, name) = (&**ns, &**name);
        let namespace = if ns.is_empty() { "default" } else { ns };
        let now = fellowship_apimachinery::meta::now();
        let event = serde_json::to_vec(&json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": format!("{name}."), "namespace": namespace},
            "involvedObject": {"apiVersion": ar.api_version, "kind": ar.kind, "name": name, "namespace": ns, "uid": uid},
            "reason": reason,
            "message": message,
            "type": if warning { "Warning" } else { "Normal" },
            "source": {"component": "federation-controller-manager"},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }))?;
        let create = Request::new(format!("/api/v1/namespaces/{namespace}/events"))
            .create(&PostParams::default(), event)?;
        if let Err(e) = self.federation.request::<Written>(create).await {
            tracing::debug!(?key, error = %e, "recording an event");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_differs_only_in_what_this_controller_writes() {
        let cases = [
            // (stored, next, differs)
            (json!(null), json!({"replicas": null}), false),
            (json!({"replicas": 3}), json!({"replicas": 3}), false),
            (json!({"replicas": 3}), json!({"replicas": 4}), true),
            (json!({"replicas": 3}), json!({"replicas": null}), true),
            // A field others write is theirs.
            (
                json!({"replicas": 3, "collisionCount": 1}),
                json!({"replicas": 3}),
                false,
            ),
            // Within a field, null is absent and anything else counts.
            (
                json!({"c": [{"x": 1}]}),
                json!({"c": [{"x": 1, "y": null}]}),
                false,
            ),
            (
                json!({"c": [{"x": 1, "z": 2}]}),
                json!({"c": [{"x": 1}]}),
                true,
            ),
            (
                json!({"c": [{"x": 1}]}),
                json!({"c": [{"x": 1}, {"x": 2}]}),
                true,
            ),
        ];
        for (stored, next, want) in cases {
            let stored = Some(&stored).filter(|s| !s.is_null());
            assert_eq!(differs(stored, &next), want, "{stored:?} {next}");
        }
    }
}
