//! The scheduling stage, for the objects whose replicas are spread (ReplicaSets and
//! Deployments, Jobs, HPAs): per object, not per member. It gathers what each selected
//! member's copy reports (and, for Pods that wait for room, how much room a cluster has),
//! asks the type's adapter for the shares, keeps them for the members' reconciles and tells
//! only the members whose share moved; then it sums what the members report into the
//! federated status and the [`REPLICAS`] annotation, written when they change.
//!
//! An object is looked at again when it changes, when a copy reports something new, when
//! the members change (a cluster turning Offline moves its replicas at once), and when time
//! alone changes an input (a Pod reaching the unschedulable threshold, an HPA leaving its
//! forbidden window).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fellowship_apimachinery::selector::LabelSelector;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, ResourceExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::queue::work_through;
use super::report::Text;
use super::watch::merge_patch;
use super::{Member, SyncController, share_print};
use crate::annotations::{HPA_TARGET_CLUSTERS, REPLICAS};
use crate::copies::{Copy, Key, key_of};
use crate::federatedtypes::{self, Candidate, Problem, ReplicaCounts, Share, Summary, Targets};
use crate::members::MEMBER_TIMEOUT;
use crate::selector::Selector;

/// How long a Pod must have been unschedulable for its cluster to count as full (spec
/// §4.4, §12).
pub const UNSCHEDULABLE: Duration = Duration::from_secs(60);

/// What the stage keeps.
#[derive(Default)]
pub(super) struct Stage {
    placed: Mutex<HashMap<Key, Arc<Placed>>>,
    /// By object and cluster, copies with fewer replicas ready than asked for.
    lagging: Mutex<HashMap<Key, BTreeMap<Text, Probe>>>,
    /// Objects changed in what their copies are made of since they were last planned.
    dirty: Mutex<HashSet<Key>>,
    /// When each object is to be looked at again.
    rechecks: Mutex<HashMap<Key, Instant>>,
    /// The target each HPA last named (kind and name).
    targets: Mutex<HashMap<Key, (String, String)>>,
    /// The last problem told of each object.
    problems: Mutex<HashMap<Key, Problem>>,
}

/// An object's shares, and the fingerprint of each cluster's copy for its share.
struct Placed {
    shares: BTreeMap<Text, Share>,
    prints: BTreeMap<Text, u64>,
}

/// A copy with fewer replicas ready than asked for: since when, and the room last found
/// for it (with the counts it was found at, and when to look at its Pods again).
struct Probe {
    since: Instant,
    found: Option<(ReplicaCounts, Option<i64>, Option<Instant>)>,
}

impl Stage {
    /// A cluster's share of an object, once planned.
    pub fn share(&self, key: &Key, cluster: &str) -> Option<Share> {
        self.placed
            .lock()
            .expect("not poisoned")
            .get(key)?
            .shares
            .get(cluster)
            .cloned()
    }

    /// Notes that an object changed in what its copies are made of: its next planning tells
    /// every member.
    pub fn changed(&self, key: &Key) {
        self.dirty.lock().expect("not poisoned").insert(key.clone());
    }

    fn forget(&self, key: &Key) {
        self.placed.lock().expect("not poisoned").remove(key);
        self.dirty.lock().expect("not poisoned").remove(key);
        self.lagging.lock().expect("not poisoned").remove(key);
        self.problems.lock().expect("not poisoned").remove(key);
        self.rechecks.lock().expect("not poisoned").remove(key);
        self.targets.lock().expect("not poisoned").remove(key);
    }
}

/// What a cluster's copy lacks room for: list its Pods, use what was found, or wait until
/// a Pod may have waited long enough.
enum Room {
    List,
    /// The room found, and when to look at the Pods again.
    Known(Option<i64>, Option<Instant>),
    Wait(Duration),
}

/// The sooner of two looks again.
fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl SyncController {
    /// The stage's worker: plans the objects sent to it, a few at a time.
    pub(super) async fn scheduler(
        self: Arc<Self>,
        again: mpsc::UnboundedSender<Key>,
        keys: mpsc::UnboundedReceiver<Key>,
    ) {
        let stage = again.clone();
        work_through(keys, again, "planning", |key| {
            let (this, again) = (self.clone(), stage.clone());
            async move { this.schedule(&key, &again).await.map(|()| true) }
        })
        .await;
    }

    /// Sends every spread object to the stage: the members changed.
    pub(super) fn replan_all(&self, stage: &mpsc::UnboundedSender<Key>) {
        for (i, t) in self.types.iter().enumerate() {
            if t.scheduling.is_some() {
                for o in self.federated_store(i).state() {
                    let _ = stage.send(key_of(i, &o.metadata));
                }
            }
        }
    }

    /// Whether a Ready cluster's member is starting for the first time: planning without
    /// what it holds would move replicas it runs, so it waits (the member's start sends
    /// everything to plan again).
    fn waiting_for_members(&self) -> bool {
        let ready = self.ready.lock().expect("not poisoned");
        let unstarted = self.unstarted.lock().expect("not poisoned");
        let starting = self.starting.lock().expect("not poisoned");
        starting
            .iter()
            .any(|c| ready.contains_key(c) && !unstarted.contains(c))
    }

    /// Plans one object and writes what it comes to.
    async fn schedule(&self, key: &Key, again: &mpsc::UnboundedSender<Key>) -> anyhow::Result<()> {
        let (index, ns, name) = key;
        let t = &self.types[*index];
        let Some(scheduling) = &t.scheduling else {
            return Ok(());
        };
        let live = self
            .federated(key)
            .filter(|o| o.metadata.deletion_timestamp.is_none());
        let Some(object) = live else {
            // Going: the finalizer sees to it; gone: nothing to keep.
            if self.federated(key).is_none() {
                self.stage.forget(key);
            }
            return Ok(());
        };
        if self.waiting_for_members() {
            return Ok(());
        }
        let changed = self.stage.dirty.lock().expect("not poisoned").remove(key);
        let mut members = self.members();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let selector = match Selector::of(object.metadata.annotations.as_ref()) {
            Ok(s) => s,
            Err(_) => {
                // Placed nowhere, nothing removed (spec §5): the members say so.
                if changed {
                    members.iter().for_each(|m| drop(m.keys.send(key.clone())));
                }
                return Ok(());
            }
        };
        // A same-named object the federation did not make is no copy of this one: what it
        // reports counts for nothing here.
        let selected: Vec<(&Arc<Member>, Option<Copy>)> = (members.iter())
            .filter(|m| selector.as_ref().is_none_or(|s| s.matches(&m.labels)))
            .map(|m| (m, m.copies[*index].get(ns, name).filter(|c| c.managed)))
            .collect();
        let (room, recheck) = if scheduling.reads_capacity() {
            self.room(key, &object, &selected).await
        } else {
            (BTreeMap::new(), None)
        };
        let before = self
            .stage
            .placed
            .lock()
            .expect("not poisoned")
            .get(key)
            .cloned();
        let candidates: Vec<Candidate> = (selected.iter())
            .map(|(m, copy)| Candidate {
                name: &m.name,
                summary: copy.as_ref().and_then(|c| c.summary.as_deref()),
                capacity: room.get(&m.name).copied(),
                planned: before.as_ref().and_then(|b| b.shares.get(&m.name)),
            })
            .collect();
        let now = jiff::Timestamp::now();
        let placement = scheduling.place(&object, &candidates, now);
        let shares: BTreeMap<Text, Share> = (selected.iter())
            .filter_map(|(m, _)| Some((m.name.clone(), placement.shares.get(&*m.name)?.clone())))
            .collect();

        // The shares, kept for the members; those whose share moved are told.
        let base = self.object_print(key, &object);
        let prints = (shares.iter())
            .map(|(c, s)| (c.clone(), share_print(base, s, true)))
            .collect();
        let placed = Arc::new(Placed { shares, prints });
        self.stage
            .placed
            .lock()
            .expect("not poisoned")
            .insert(key.clone(), placed.clone());
        for m in &members {
            let was = before.as_ref().and_then(|b| b.shares.get(&m.name));
            if changed || was != placed.shares.get(&m.name) {
                let _ = m.keys.send(key.clone());
            }
        }

        if let Some(after) = sooner(recheck, placement.recheck) {
            self.recheck(key, after, again);
        }

        // What the members report, summed.
        let views: Vec<federatedtypes::MemberState> = (placed.shares.iter())
            .map(|(cluster, share)| {
                let copy = selected
                    .iter()
                    .find(|(m, _)| m.name == *cluster)
                    .and_then(|(_, c)| c.as_ref());
                let in_step = match (copy, share) {
                    (copy, Share::None) => copy.is_none(),
                    (None, share) => !share.creates(),
                    (Some(c), _) => {
                        c.holds.is_some() && c.holds == placed.prints.get(cluster).copied()
                    }
                };
                federatedtypes::MemberState {
                    name: cluster,
                    share,
                    in_step,
                    summary: copy.and_then(|c| c.summary.as_deref()),
                }
            })
            .collect();
        // Placed, but no copy made yet: the members have nothing to say, and a status now
        // would be rewritten as soon as they do.
        let unmade = !views.is_empty() && views.iter().all(|m| m.summary.is_none());
        if !unmade {
            let status = scheduling.status(&object, &views, now);
            self.report_status(key, status, object.data.get("status"));
        }
        let view: BTreeMap<&str, Value> = (views.iter())
            .filter(|m| *m.share != Share::None)
            .map(|m| (m.name, scheduling.view(m.share, m.summary)))
            .collect();
        self.report_view(
            key,
            serde_json::to_string(&view)?,
            object.annotations().get(REPLICAS).map(String::as_str),
        );

        self.tell_problem(key, placement.problem).await?;
        self.set_targets(key, placement.targets.as_ref(), &placed.shares)
            .await
    }

    /// A Warning event for a problem not told yet.
    async fn tell_problem(&self, key: &Key, problem: Option<Problem>) -> anyhow::Result<()> {
        let new = {
            let mut problems = self.stage.problems.lock().expect("not poisoned");
            match problem {
                None => {
                    problems.remove(key);
                    None
                }
                Some(p) if problems.get(key) == Some(&p) => None,
                Some(p) => {
                    problems.insert(key.clone(), p.clone());
                    Some(p)
                }
            }
        };
        match new {
            Some(p) => self.event(key, true, p.reason, &p.message).await,
            None => Ok(()),
        }
    }

    /// Looks at `key` again after `after` (once: a look already due sooner covers it).
    fn recheck(&self, key: &Key, after: Duration, again: &mpsc::UnboundedSender<Key>) {
        let now = Instant::now();
        let at = now + after;
        {
            let mut rechecks = self.stage.rechecks.lock().expect("not poisoned");
            if rechecks.get(key).is_some_and(|t| now < *t && *t <= at) {
                return;
            }
            rechecks.insert(key.clone(), at);
        }
        let (key, again) = (key.clone(), again.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let _ = again.send(key);
        });
    }

    /// The room each cluster has for the object's replicas, where some of its Pods may have
    /// waited for a node too long (spec §4.4: replicas asked for less those Pods), and when
    /// to look again. A copy is looked into only once its replicas have lagged for the
    /// threshold, and again only when it reports something new: a rollout that completes in
    /// time costs no list of Pods.
    async fn room(
        &self,
        key: &Key,
        object: &DynamicObject,
        copies: &[(&Arc<Member>, Option<Copy>)],
    ) -> (BTreeMap<Text, i64>, Option<Duration>) {
        let now = Instant::now();
        let lagging: Vec<(&Arc<Member>, ReplicaCounts)> = (copies.iter())
            .filter_map(|(m, c)| match c.as_ref()?.summary.as_deref()? {
                Summary::Replicas(counts) if counts.wanted > counts.ready => {
                    Some((*m, counts.clone()))
                }
                _ => None,
            })
            .collect();
        let mut decided: Vec<(&Arc<Member>, ReplicaCounts, Room)> = Vec::new();
        {
            let mut all = self.stage.lagging.lock().expect("not poisoned");
            if lagging.is_empty() {
                all.remove(key);
                return (BTreeMap::new(), None);
            }
            let probes = all.entry(key.clone()).or_default();
            probes.retain(|cluster, _| lagging.iter().any(|(m, _)| m.name == *cluster));
            for (m, counts) in lagging {
                let probe = probes.entry(m.name.clone()).or_insert(Probe {
                    since: now,
                    found: None,
                });
                let due = probe.since + UNSCHEDULABLE;
                let room = match &probe.found {
                    _ if now < due => Room::Wait(due - now),
                    Some((at, room, relist)) if *at == counts && relist.is_none_or(|t| now < t) => {
                        Room::Known(*room, *relist)
                    }
                    _ => Room::List,
                };
                decided.push((m, counts, room));
            }
        }
        let selector = object
            .data
            .pointer("/spec/selector")
            .map(LabelSelector::from_object);
        let mut out = BTreeMap::new();
        let mut recheck: Option<Duration> = None;
        for (m, counts, room) in decided {
            let (room, relist) = match room {
                Room::Wait(d) => {
                    recheck = sooner(recheck, Some(d));
                    continue;
                }
                Room::Known(room, relist) => (room, relist),
                Room::List => {
                    let Some(Ok(selector)) = &selector else {
                        continue;
                    };
                    match unschedulable(m, &key.1, &selector.to_string()).await {
                        Ok((stuck, next)) => {
                            tracing::debug!(cluster = %m.name, ?key, stuck, ?next, "Pods waiting for room");
                            let room = (stuck > 0).then_some(counts.wanted - stuck);
                            let relist = next.map(|d| now + d);
                            let mut all = self.stage.lagging.lock().expect("not poisoned");
                            if let Some(p) = all.get_mut(key).and_then(|p| p.get_mut(&m.name)) {
                                p.found = Some((counts.clone(), room, relist));
                            }
                            (room, relist)
                        }
                        Err(e) => {
                            tracing::debug!(cluster = %m.name, ?key, error = %e, "listing Pods");
                            (None, None)
                        }
                    }
                }
            };
            if let Some(relist) = relist {
                recheck = sooner(recheck, Some(relist.saturating_duration_since(now)));
            }
            if let Some(room) = room {
                out.insert(m.name.clone(), room.max(0));
            }
        }
        (out, recheck)
    }

    /// Writes on an HPA's target which clusters' HPAs scale it (spec §4.6): those it
    /// placed now, and those it did not look at (not Ready now: their HPAs still scale their
    /// copies, which must not be idled meanwhile). A target it named before and no longer
    /// does is released.
    async fn set_targets(
        &self,
        key: &Key,
        targets: Option<&Targets>,
        placed: &BTreeMap<Text, Share>,
    ) -> anyhow::Result<()> {
        let named = targets.map(|t| (t.kind.clone(), t.name.clone()));
        let before = {
            let mut all = self.stage.targets.lock().expect("not poisoned");
            match &named {
                Some(n) => all.insert(key.clone(), n.clone()),
                None => all.remove(key),
            }
        };
        if let Some((kind, name)) = before.filter(|b| Some(b) != named.as_ref()) {
            self.mark_target(&key.1, &kind, &name, None).await?;
        }
        let Some(targets) = targets else {
            return Ok(());
        };
        let index = self
            .types
            .iter()
            .position(|t| t.resource.kind == targets.kind);
        let target =
            index.and_then(|i| self.federated(&(i, key.1.clone(), targets.name.as_str().into())));
        let listed = (target.as_ref())
            .and_then(|t| t.annotations().get(HPA_TARGET_CLUSTERS))
            .and_then(|text| federatedtypes::target_clusters(text).ok())
            .unwrap_or_default();
        let mut names: BTreeSet<String> = targets.clusters.iter().cloned().collect();
        names.extend(
            listed
                .into_iter()
                .filter(|c| !placed.contains_key(c.as_str())),
        );
        let list = json!({"Names": names}).to_string();
        self.mark_target(&key.1, &targets.kind, &targets.name, Some(list))
            .await
    }

    /// An HPA deleted with its member HPAs: its target is planned again.
    pub(super) async fn release_target(&self, hpa: &DynamicObject) -> anyhow::Result<()> {
        let is_hpa = (hpa.types.as_ref()).is_some_and(|t| t.kind == "HorizontalPodAutoscaler");
        let field = |f: &str| {
            hpa.data
                .pointer(&format!("/spec/scaleTargetRef/{f}"))?
                .as_str()
        };
        match (
            is_hpa,
            field("kind"),
            field("name"),
            &hpa.metadata.namespace,
        ) {
            (true, Some(kind), Some(name), Some(ns)) => {
                self.mark_target(ns, kind, name, None).await
            }
            _ => Ok(()),
        }
    }

    /// Sets the [`HPA_TARGET_CLUSTERS`] annotation of a federated ReplicaSet or Deployment
    /// to `list` (`None`: removes it), unless it says so already; a target missing from the
    /// federation is left alone.
    async fn mark_target(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
        list: Option<String>,
    ) -> anyhow::Result<()> {
        let Some(index) = self.types.iter().position(|t| t.resource.kind == kind) else {
            return Ok(());
        };
        let key: Key = (index, namespace.into(), name.into());
        let Some(target) = self.federated(&key) else {
            return Ok(());
        };
        if target.annotations().get(HPA_TARGET_CLUSTERS) == list.as_ref() {
            return Ok(());
        }
        let t = &self.types[index];
        let patch = json!({"metadata": {"annotations": {HPA_TARGET_CLUSTERS: list}}});
        match merge_patch(
            &self.federation,
            &t.resource,
            t.namespaced,
            &key,
            None,
            &patch,
        )
        .await
        {
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            r => r.map(|_| ()).map_err(Into::into),
        }
    }
}

/// How many of a member's Pods matching `selector` have been unschedulable longer than the
/// threshold, and when the next of the others will have been.
async fn unschedulable(
    m: &Member,
    namespace: &str,
    selector: &str,
) -> anyhow::Result<(i64, Option<Duration>)> {
    let pods: Api<Pod> = Api::namespaced(m.client.clone(), namespace);
    let list = tokio::time::timeout(
        MEMBER_TIMEOUT,
        pods.list(&ListParams::default().labels(selector)),
    )
    .await??;
    let now = jiff::Timestamp::now();
    let threshold = jiff::SignedDuration::try_from(UNSCHEDULABLE).expect("a short duration");
    let mut stuck = 0;
    let mut next: Option<Duration> = None;
    for pod in list.items {
        let Some(status) = pod.status else { continue };
        if status.phase.as_deref() == Some("Running") {
            continue;
        }
        let waiting = (status.conditions.iter().flatten())
            .find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
            .and_then(|c| {
                c.last_transition_time
                    .as_ref()
                    .map(|t| now.duration_since(t.0))
            });
        match waiting {
            Some(waited) if waited > threshold => stuck += 1,
            Some(waited) => {
                let left = Duration::try_from(threshold - waited).unwrap_or_default()
                    + Duration::from_millis(100);
                next = sooner(next, Some(left));
            }
            None => {}
        }
    }
    Ok((stuck, next))
}
