//! HorizontalPodAutoscalers (spec §4.6): the federated HPA's `minReplicas` and
//! `maxReplicas` shared out among member HPAs, moving max (then min) toward the clusters
//! whose HPAs need more, away from those that use less, and into clusters that have none
//! yet; the federated target (a ReplicaSet or Deployment) is told which clusters' HPAs
//! scale it, so its own planning leaves their replicas to them (§4.4).
//!
//! v1's algorithm, with its order made deterministic (it walked Go maps, in random order:
//! here clusters go by name) and its loops bounded (a pass that changes nothing ends one).
//! Better than the original: no Ready cluster is a clear state on the HPA (an
//! `AbleToScale` condition saying so) rather than a division by zero; max taken back never
//! falls below a cluster's min, and a cluster whose max falls to 0 loses its HPA, instead
//! of getting an invalid one; a cluster away (not Ready) stays on the target's list, so
//! that its copy is not idled meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::{
    Candidate, MemberState, Placement, Problem, Scheduling, Share, Summary, Targets, Tuning, int,
    new_condition, stamp, time,
};

/// What a member HPA reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    pub min: Option<i64>,
    pub max: i64,
    pub current: i64,
    pub desired: i64,
    pub last_scale: Option<jiff::Timestamp>,
    /// Average CPU utilisation of its Pods, percent of their requests.
    pub cpu: Option<i64>,
}

/// What a copy reports, if it is a HPA's.
fn counts(summary: Option<&Summary>) -> Option<&Counts> {
    match summary {
        Some(Summary::Hpa(c)) => Some(c),
        _ => None,
    }
}

pub struct Hpas {
    window: jiff::SignedDuration,
}

impl Hpas {
    pub fn new(tuning: &Tuning) -> Hpas {
        Hpas {
            window: forbidden(tuning.hpa_scale_forbidden_window),
        }
    }
}

/// The forbidden window as a span of time (a window too long to say is as good as ever).
fn forbidden(window: Duration) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(window).unwrap_or(jiff::SignedDuration::MAX)
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Nums {
    min: i64,
    max: i64,
}

/// How a member HPA stands, for moving replicas about.
struct Judged<'a> {
    counts: &'a Counts,
    window: jiff::SignedDuration,
    now: jiff::Timestamp,
}

impl Judged<'_> {
    /// It has not scaled yet: nothing is known of its needs.
    fn pristine(&self) -> bool {
        self.counts.last_scale.is_none() && self.counts.desired == 0
    }

    /// It last scaled longer ago than the forbidden window.
    fn scaleable(&self) -> bool {
        self.counts.last_scale.is_some_and(|t| {
            t.saturating_add(self.window)
                .is_ok_and(|until| until <= self.now)
        })
    }

    fn max_reducible(&self) -> bool {
        let c = self.counts;
        if c.min.is_some_and(|min| c.max - 1 < min) {
            return false;
        }
        self.pristine()
            || (self.scaleable()
                && (c.desired < c.current || (c.desired == c.current && c.desired < c.max)))
    }

    fn min_reducible(&self) -> bool {
        let c = self.counts;
        let min = c.min.unwrap_or(0);
        (self.pristine() && c.min.is_some() && min > 1 && min <= c.max)
            || (self.scaleable()
                && c.min.is_some()
                && min > 1
                && c.desired == c.current
                && c.current == min)
    }

    fn max_needed(&self) -> bool {
        let c = self.counts;
        self.scaleable() && c.current == c.desired && c.current == c.max
    }

    fn min_increasable(&self) -> bool {
        let c = self.counts;
        self.scaleable() && c.min.is_some_and(|min| min < c.max && c.desired > min)
    }
}

/// Each cluster's min and max (`None`: no HPA there), from the requested totals and the
/// member HPAs there are (spec §4.6).
fn schedule(
    requested: Nums,
    clusters: &[(&str, Option<&Counts>)],
    window: jiff::SignedDuration,
    now: jiff::Timestamp,
) -> BTreeMap<String, Option<Nums>> {
    let n = clusters.len() as i64;
    if n == 0 {
        return BTreeMap::new();
    }
    // What a cluster without an HPA gets at a time.
    let step = Nums {
        min: (requested.min / n).max(1),
        max: (requested.max / n).max(2),
    };
    let judged: BTreeMap<&str, Judged> = (clusters.iter())
        .filter_map(|(name, c)| {
            Some((
                *name,
                Judged {
                    counts: (*c)?,
                    window,
                    now,
                },
            ))
        })
        .collect();
    // Pass 1: what the member HPAs have, and which can give some up.
    let mut available_min: BTreeSet<String> = BTreeSet::new();
    let mut available_max: BTreeSet<String> = BTreeSet::new();
    let mut no_hpa: BTreeSet<String> = BTreeSet::new();
    let mut state: BTreeMap<String, Option<Nums>> = BTreeMap::new();
    let mut existing = Nums::default();
    for (name, counts) in clusters {
        let Some(c) = counts else {
            no_hpa.insert(name.to_string());
            state.insert(name.to_string(), None);
            continue;
        };
        let j = &judged[name];
        if j.max_reducible() {
            available_max.insert(name.to_string());
        }
        if j.min_reducible() {
            available_min.insert(name.to_string());
        }
        let nums = Nums {
            min: c.min.unwrap_or(0),
            max: c.max,
        };
        existing.min += nums.min;
        existing.max += nums.max;
        state.insert(name.to_string(), Some(nums));
    }
    let mut remaining = Nums {
        min: requested.min - existing.min,
        max: requested.max - existing.max,
    };
    // Pass 2: less requested than the members have: take it back, first from those that
    // can spare it, then from any.
    if remaining.min < 0 {
        reduce(
            -remaining.min,
            &mut available_min,
            &mut state,
            |r| r.min > 1,
            |r| r.min > 0,
            |r| r.min -= 1,
        );
        remaining.min = 0;
    }
    if remaining.max < 0 {
        // Better than v1, whose test let max fall below min: an invalid HPA.
        let can = |r: &Nums| r.max > r.min.max(1);
        reduce(
            -remaining.max,
            &mut available_max,
            &mut state,
            can,
            can,
            |r| r.max -= 1,
        );
        remaining.max = 0;
    }
    // Pass 3: max, then min to the clusters that got max. First to the HPAs that need more,
    // taking one from each HPA that can spare it; what those can spare goes next to the
    // clusters without an HPA; then what was requested beyond the members' totals, a step
    // at a time, to the clusters without an HPA, else to all. What is spared and wanted
    // nowhere stays where it is (v1 moved it between clusters in random order).
    let names: Vec<String> = state.keys().cloned().collect();
    let receivers: Vec<String> = if no_hpa.is_empty() {
        names.clone()
    } else {
        no_hpa.iter().cloned().collect()
    };
    let mut new_max = remaining.max;
    for name in &names {
        if !judged.get(name.as_str()).is_some_and(|j| j.max_needed()) {
            continue;
        }
        if let Some(from) = available_max.pop_first() {
            bump(&mut state, &from, |r| r.max -= 1);
        } else if new_max > 0 {
            new_max -= 1;
        } else {
            break;
        }
        bump(&mut state, name, |r| r.max += 1);
    }
    if no_hpa.is_empty() {
        available_max.clear();
    }
    while new_max > 0 || !available_max.is_empty() {
        for name in &receivers {
            let r = state
                .get_mut(name)
                .expect("a known cluster")
                .get_or_insert_with(Nums::default);
            if let Some(from) = available_max.pop_first() {
                r.max += 1;
                bump(&mut state, &from, |r| r.max -= 1);
            } else if new_max > 0 {
                let add = new_max.min(step.max);
                r.max += add;
                new_max -= add;
            } else {
                break;
            }
        }
    }
    let mut new_min = remaining.min;
    for name in &names {
        if state[name].is_some()
            && judged
                .get(name.as_str())
                .is_some_and(|j| j.min_increasable())
            && let Some(from) = available_min.pop_first()
        {
            bump(&mut state, &from, |r| r.min -= 1);
            bump(&mut state, name, |r| r.min += 1);
        }
    }
    if no_hpa.is_empty() {
        available_min.clear();
    }
    while new_min > 0 || !available_min.is_empty() {
        let mut moved = false;
        for name in &receivers {
            let Some(r) = state[name] else { continue };
            let spared = available_min.first().cloned();
            let add = if spared.is_some() {
                1
            } else {
                new_min.min(step.min)
            };
            if add == 0 {
                break;
            }
            if r.max - add < r.min {
                continue;
            }
            match spared {
                Some(from) => {
                    available_min.remove(&from);
                    bump(&mut state, &from, |r| r.min -= 1);
                }
                None => new_min -= add,
            }
            bump(&mut state, name, |r| r.min += add);
            moved = true;
        }
        if !moved {
            break;
        }
    }
    // An HPA needs a min of 1 at least; one with no max left goes.
    for r in state.values_mut() {
        match r {
            Some(n) if n.max <= 0 => *r = None,
            Some(n) if n.min <= 0 => n.min = 1,
            _ => {}
        }
    }
    state
}

fn bump(state: &mut BTreeMap<String, Option<Nums>>, name: &str, change: impl FnOnce(&mut Nums)) {
    if let Some(Some(r)) = state.get_mut(name) {
        change(r);
    }
}

/// Takes `excess` away, one at a time: first once from each of `offered` that `can`, then
/// round the clusters from any that `can_any`, until done or nothing more can go.
fn reduce(
    mut excess: i64,
    offered: &mut BTreeSet<String>,
    state: &mut BTreeMap<String, Option<Nums>>,
    can: impl Fn(&Nums) -> bool,
    can_any: impl Fn(&Nums) -> bool,
    take: impl Fn(&mut Nums),
) {
    for name in offered.clone() {
        if excess <= 0 {
            break;
        }
        if let Some(Some(r)) = state.get_mut(&name)
            && can(r)
        {
            take(r);
            offered.remove(&name);
            excess -= 1;
        }
    }
    while excess > 0 {
        let mut moved = false;
        for r in state.values_mut().flatten() {
            if excess <= 0 {
                break;
            }
            if can_any(r) {
                take(r);
                excess -= 1;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
}

impl Scheduling for Hpas {
    fn summarize(&self, copy: &Value) -> Summary {
        let cpu = (copy
            .pointer("/status/currentMetrics")
            .and_then(Value::as_array))
        .and_then(|metrics| {
            metrics.iter().find(|m| {
                m["type"] == "Resource" && m.pointer("/resource/name") == Some(&json!("cpu"))
            })
        })
        .and_then(|m| m.pointer("/resource/current/averageUtilization"))
        .and_then(Value::as_i64);
        Summary::Hpa(Counts {
            min: copy.pointer("/spec/minReplicas").and_then(Value::as_i64),
            max: int(copy, "/spec/maxReplicas", 0),
            current: int(copy, "/status/currentReplicas", 0),
            desired: int(copy, "/status/desiredReplicas", 0),
            last_scale: time(copy, "/status/lastScaleTime"),
            cpu,
        })
    }

    fn place(
        &self,
        object: &DynamicObject,
        clusters: &[Candidate],
        now: jiff::Timestamp,
    ) -> Placement {
        let data = &object.data;
        let requested = Nums {
            min: int(data, "/spec/minReplicas", 1),
            max: int(data, "/spec/maxReplicas", 0),
        };
        // A member HPA being made counts as made (one that has not scaled yet): planning
        // while the copies are created must not take their clusters for new ones.
        let made: Vec<Option<Counts>> = (clusters.iter())
            .map(|c| match (c.summary, c.planned) {
                (Some(Summary::Hpa(counts)), _) => Some(counts.clone()),
                (None, Some(Share::Hpa { min, max })) => Some(Counts {
                    min: Some(*min),
                    max: *max,
                    ..Counts::default()
                }),
                _ => None,
            })
            .collect();
        let members: Vec<(&str, Option<&Counts>)> = (clusters.iter().zip(&made))
            .map(|(c, counts)| (c.name, counts.as_ref()))
            .collect();
        let state = schedule(requested, &members, self.window, now);
        let shares = (state.iter())
            .map(|(name, nums)| {
                let share = nums.map_or(Share::None, |n| Share::Hpa {
                    min: n.min,
                    max: n.max,
                });
                (name.clone(), share)
            })
            .collect();
        // A member HPA still in its forbidden window may be free to move later.
        let recheck = (members.iter())
            .filter_map(|(_, c)| (*c)?.last_scale?.saturating_add(self.window).ok())
            .filter(|until| *until > now)
            .min()
            .and_then(|until| Duration::try_from(until.duration_since(now)).ok());
        let kind = data
            .pointer("/spec/scaleTargetRef/kind")
            .and_then(Value::as_str)
            .unwrap_or("");
        let name = data
            .pointer("/spec/scaleTargetRef/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let (targets, problem) = match kind {
            "Deployment" | "ReplicaSet" if !name.is_empty() => {
                let clusters = (state.iter())
                    .filter(|(_, n)| n.is_some())
                    .map(|(c, _)| c.clone())
                    .collect();
                (
                    Some(Targets {
                        kind: kind.into(),
                        name: name.into(),
                        clusters,
                    }),
                    None,
                )
            }
            _ => {
                let message = format!(
                    "scaleTargetRef {kind} {name:?} is not a federated ReplicaSet or Deployment: its replicas are not left to the member HPAs"
                );
                (
                    None,
                    Some(Problem {
                        reason: "UnsupportedTarget",
                        message,
                    }),
                )
            }
        };
        Placement {
            shares,
            problem,
            recheck,
            targets,
        }
    }

    fn shape(&self, spec: &mut Value, share: &Share, _exists: bool) {
        if let (Share::Hpa { min, max }, Some(spec)) = (share, spec.as_object_mut()) {
            spec.insert("minReplicas".into(), json!(min));
            spec.insert("maxReplicas".into(), json!(max));
        }
    }

    fn status(
        &self,
        object: &DynamicObject,
        members: &[MemberState],
        now: jiff::Timestamp,
    ) -> Value {
        let before = object.data.get("status").cloned().unwrap_or(json!({}));
        let (mut current, mut desired, mut weighted, mut counted) = (0, 0, 0, 0);
        let mut last_scale: Option<jiff::Timestamp> = None;
        let mut placed = 0;
        for m in members {
            if !matches!(m.share, Share::None) {
                placed += 1;
            }
            let Some(c) = counts(m.summary) else {
                continue;
            };
            current += c.current;
            desired += c.desired;
            if let Some(cpu) = c.cpu {
                weighted += cpu * c.current;
                counted += c.current;
            }
            last_scale = last_scale.max(c.last_scale);
        }
        let metrics = if counted > 0 {
            json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": weighted / counted}}}])
        } else {
            Value::Null
        };
        let condition = if placed == 0 {
            new_condition(
                &before,
                "AbleToScale",
                false,
                "NoReadyClusters",
                "no Ready cluster is selected for this autoscaler: its min and max are not placed",
                now,
            )
        } else {
            let message = format!("min and max are shared among {placed} clusters' autoscalers");
            new_condition(
                &before,
                "AbleToScale",
                true,
                "SpreadOverClusters",
                &message,
                now,
            )
        };
        json!({
            "observedGeneration": object.metadata.generation,
            "currentReplicas": current,
            "desiredReplicas": desired,
            "lastScaleTime": last_scale.map(stamp),
            "currentMetrics": metrics,
            "conditions": [condition],
        })
    }

    fn view(&self, share: &Share, summary: Option<&Summary>) -> Value {
        let counts = counts(summary).cloned().unwrap_or_default();
        let (min, max) = match share {
            Share::Hpa { min, max } => (*min, *max),
            _ => (0, 0),
        };
        json!({"minReplicas": min, "maxReplicas": max, "currentReplicas": counts.current, "desiredReplicas": counts.desired})
    }
}

#[cfg(test)]
mod tests {
    use super::super::candidates;
    use super::*;

    const WINDOW: Duration = Duration::from_secs(120);

    fn nums(min: i64, max: i64) -> Option<Nums> {
        Some(Nums { min, max })
    }

    fn plan(
        min: i64,
        max: i64,
        clusters: &[(&str, Option<&Counts>)],
        now: jiff::Timestamp,
    ) -> Vec<Option<Nums>> {
        schedule(Nums { min, max }, clusters, forbidden(WINDOW), now)
            .into_values()
            .collect()
    }

    #[test]
    fn new_hpas_share_min_and_max() {
        let now = jiff::Timestamp::now();
        let three = [("a", None), ("b", None), ("c", None)];
        // The guide's example: max 9, min 2 over three clusters.
        assert_eq!(
            plan(2, 9, &three, now),
            [nums(1, 3), nums(1, 3), nums(1, 3)]
        );
        // More clusters than max: each takes two while they last.
        assert_eq!(plan(1, 3, &three, now), [nums(1, 2), nums(1, 1), None]);
        assert_eq!(plan(1, 10, &[("a", None)], now), [nums(1, 10)]);
        // No cluster: nothing, and no division by zero.
        assert!(schedule(Nums { min: 2, max: 9 }, &[], forbidden(WINDOW), now).is_empty());
    }

    fn at(seconds_ago: i64, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
        Some(now - jiff::SignedDuration::from_secs(seconds_ago))
    }

    #[test]
    fn max_moves_to_an_hpa_at_its_max_from_one_that_scaled_down() {
        let now = jiff::Timestamp::now();
        // a: at its max of 3, scaled long ago; b: wants 1 of max 3; c: likewise.
        let busy = Counts {
            min: Some(1),
            max: 3,
            current: 3,
            desired: 3,
            last_scale: at(600, now),
            cpu: Some(90),
        };
        let idle = Counts {
            min: Some(1),
            max: 3,
            current: 1,
            desired: 1,
            last_scale: at(600, now),
            cpu: Some(10),
        };
        let p = plan(
            3,
            9,
            &[("a", Some(&busy)), ("b", Some(&idle)), ("c", Some(&idle))],
            now,
        );
        assert_eq!(p, [nums(1, 4), nums(1, 2), nums(1, 3)]);
        // Within the forbidden window nothing moves.
        let recent = Counts {
            last_scale: at(60, now),
            ..busy.clone()
        };
        let p = plan(
            3,
            9,
            &[("a", Some(&recent)), ("b", Some(&idle)), ("c", Some(&idle))],
            now,
        );
        assert_eq!(p, [nums(1, 3), nums(1, 3), nums(1, 3)]);
    }

    #[test]
    fn less_requested_is_taken_back_and_a_new_cluster_gets_its_part() {
        let now = jiff::Timestamp::now();
        let steady = Counts {
            min: Some(2),
            max: 5,
            current: 2,
            desired: 2,
            last_scale: at(600, now),
            cpu: None,
        };
        // Max lowered from 10 to 6: the excess is taken back.
        let p = plan(4, 6, &[("a", Some(&steady)), ("b", Some(&steady))], now);
        assert_eq!(p.iter().map(|n| n.unwrap().max).sum::<i64>(), 6, "{p:?}");
        // A third cluster joins: it gets an HPA from what the others can spare.
        let p = plan(
            4,
            10,
            &[("a", Some(&steady)), ("b", Some(&steady)), ("c", None)],
            now,
        );
        assert!(p[2].is_some_and(|n| n.max > 0 && n.min >= 1), "{p:?}");
        assert_eq!(p.iter().map(|n| n.unwrap().max).sum::<i64>(), 10, "{p:?}");
    }

    #[test]
    fn max_taken_back_never_falls_below_min() {
        let now = jiff::Timestamp::now();
        let full = Counts {
            min: Some(3),
            max: 3,
            current: 3,
            desired: 3,
            last_scale: at(600, now),
            cpu: None,
        };
        let busy = Counts {
            min: Some(1),
            max: 5,
            current: 5,
            desired: 5,
            last_scale: at(10, now),
            cpu: None,
        };
        let p = plan(4, 6, &[("a", Some(&full)), ("b", Some(&busy))], now);
        assert_eq!(p, [nums(3, 3), nums(1, 3)]);
    }

    #[test]
    fn the_federated_hpa_sums_its_members_and_names_its_target() {
        let now = jiff::Timestamp::now();
        let hpa: DynamicObject = serde_json::from_value(json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default", "generation": 1},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "minReplicas": 2, "maxReplicas": 9}}))
        .unwrap();
        let hpas = Hpas::new(&Tuning::default());
        let none: Vec<Candidate> = Vec::new();
        let p = hpas.place(&hpa, &none, now);
        assert!(p.shares.is_empty());
        assert_eq!(p.targets.as_ref().map(|t| t.clusters.len()), Some(0));
        let status = hpas.status(&hpa, &[], now);
        assert_eq!(status["conditions"][0]["reason"], "NoReadyClusters");
        let three = candidates(&["a", "b", "c"]);
        let p = hpas.place(&hpa, &three, now);
        assert_eq!(p.shares["b"], Share::Hpa { min: 1, max: 3 });
        assert_eq!(
            p.targets.unwrap(),
            Targets {
                kind: "Deployment".into(),
                name: "web".into(),
                clusters: vec!["a".into(), "b".into(), "c".into()]
            }
        );
        let up = Summary::Hpa(Counts {
            min: Some(1),
            max: 3,
            current: 3,
            desired: 3,
            last_scale: Some(now),
            cpu: Some(90),
        });
        let down = Summary::Hpa(Counts {
            min: Some(1),
            max: 3,
            current: 1,
            desired: 1,
            last_scale: None,
            cpu: Some(30),
        });
        let share = Share::Hpa { min: 1, max: 3 };
        let m = |name, summary| MemberState {
            name,
            share: &share,
            in_step: true,
            summary,
        };
        let status = hpas.status(&hpa, &[m("a", Some(&up)), m("b", Some(&down))], now);
        assert_eq!(
            (
                status["currentReplicas"].clone(),
                status["desiredReplicas"].clone()
            ),
            (json!(4), json!(4))
        );
        assert_eq!(
            status["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
            75
        );
        assert_eq!(status["lastScaleTime"], stamp(now));
        let other: DynamicObject = serde_json::from_value(json!({"metadata": {"name": "x"}, "spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "db"}, "maxReplicas": 3}})).unwrap();
        let p = hpas.place(&other, &three, now);
        assert!(p.targets.is_none() && p.problem.is_some());
    }
}
