//! ReplicaSets and Deployments (spec §4.4): `spec.replicas` spread over the selected Ready
//! clusters by the planner, from the object's preferences annotation, the replicas each
//! cluster runs now and the room it has; or, while a federated HPA scales the object
//! (`hpa-target-cluster-list`), left to the member HPAs of the clusters it names.
//!
//! Every cluster of the plan gets a copy, at 0 replicas if that is its share, as v1 did: an
//! HPA there may scale it, and `kubectl get` in each cluster shows it there, idle.
//!
//! Where this differs from v1 on purpose: without `rebalance`, the replicas a cluster keeps
//! are those it is asked to run (its copy's `spec.replicas`), not its ready Pods; see
//! [`Replicas::place`].
//!
//! Better than the original: the federated status has the meaning kube-controller-manager
//! gives it, so `kubectl rollout status` works against the federation. `observedGeneration`
//! reaches the federated generation only once every member holds that version and its own
//! controller has seen it; `Progressing` fails when a member's rollout passes its progress
//! deadline; `Available` is kube's minimum availability over the sums.

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::{
    Candidate, MemberState, Placement, Problem, Scheduling, Share, Summary, condition, int, key,
    new_condition, omit_zeros, preferences,
};
use crate::annotations::HPA_TARGET_CLUSTERS;
use crate::planner::{self, DEPLOYMENT_PREFERENCES, REPLICA_SET_PREFERENCES};

/// What a member ReplicaSet or Deployment reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Its `spec.replicas`.
    pub wanted: i64,
    pub replicas: i64,
    pub updated: i64,
    pub ready: i64,
    pub available: i64,
    pub unavailable: i64,
    pub generation: i64,
    pub observed: i64,
    /// Its rollout passed its progress deadline: the condition's message.
    pub timed_out: Option<String>,
}

/// What a copy reports, if it is a ReplicaSet or Deployment's.
fn counts(summary: Option<&Summary>) -> Option<&Counts> {
    match summary {
        Some(Summary::Replicas(c)) => Some(c),
        _ => None,
    }
}

pub struct Replicas {
    /// The annotation that holds the preferences.
    preferences: &'static str,
    deployment: bool,
}

impl Replicas {
    pub fn deployments() -> Replicas {
        Replicas {
            preferences: DEPLOYMENT_PREFERENCES,
            deployment: true,
        }
    }

    pub fn replica_sets() -> Replicas {
        Replicas {
            preferences: REPLICA_SET_PREFERENCES,
            deployment: false,
        }
    }
}

/// The clusters of an `hpa-target-cluster-list` value, `{"Names": [...]}` (the field name
/// matched regardless of case, as Go's decoder did).
pub fn target_clusters(text: &str) -> Result<Vec<String>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    match value.as_object().and_then(|o| planner::field(o, "names")) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(String::from)
                    .ok_or_else(|| format!("{i} is not a cluster name"))
            })
            .collect(),
        Some(v) => Err(format!("Names: {v} is not a list")),
    }
}

/// The most replicas a rolling update may have unavailable (kube's `MaxUnavailable`):
/// `rollingUpdate.maxUnavailable`, a count or a percentage rounded down (25% by default),
/// 0 for the Recreate strategy; 1 where both it and `maxSurge` come to 0.
fn max_unavailable(object: &Value, replicas: i64) -> i64 {
    let strategy = object.pointer("/spec/strategy");
    if strategy.and_then(|s| s.get("type")).and_then(Value::as_str) == Some("Recreate")
        || replicas == 0
    {
        return 0;
    }
    let resolve = |field: &str, default: &str, round_up: bool| {
        let value = strategy.and_then(|s| s.pointer(&format!("/rollingUpdate/{field}")));
        match value {
            Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
            other => {
                let text = other.and_then(Value::as_str).unwrap_or(default);
                let percent: i64 = text.trim_end_matches('%').parse().unwrap_or(0);
                let scaled = replicas * percent;
                if round_up {
                    (scaled + 99) / 100
                } else {
                    scaled / 100
                }
            }
        }
    };
    let surge = resolve("maxSurge", "25%", true);
    let unavailable = resolve("maxUnavailable", "25%", false);
    let unavailable = if surge == 0 && unavailable == 0 {
        1
    } else {
        unavailable
    };
    unavailable.min(replicas)
}

impl Scheduling for Replicas {
    fn summarize(&self, copy: &Value) -> Summary {
        let status = copy.get("status").cloned().unwrap_or(Value::Null);
        let timed_out = condition(&status, "Progressing")
            .filter(|c| c["status"] == "False" && c["reason"] == "ProgressDeadlineExceeded")
            .map(|c| c["message"].as_str().unwrap_or("").to_string());
        Summary::Replicas(Counts {
            wanted: int(copy, "/spec/replicas", 1),
            replicas: int(copy, "/status/replicas", 0),
            updated: int(copy, "/status/updatedReplicas", 0),
            ready: int(copy, "/status/readyReplicas", 0),
            available: int(copy, "/status/availableReplicas", 0),
            unavailable: int(copy, "/status/unavailableReplicas", 0),
            generation: int(copy, "/metadata/generation", 0),
            observed: int(copy, "/status/observedGeneration", 0),
            timed_out,
        })
    }

    fn place(
        &self,
        object: &DynamicObject,
        clusters: &[Candidate],
        _now: jiff::Timestamp,
    ) -> Placement {
        let annotations = object.metadata.annotations.as_ref();
        let mut problem = None;
        if let Some(text) = annotations.and_then(|a| a.get(HPA_TARGET_CLUSTERS)) {
            match target_clusters(text) {
                Ok(names) => {
                    let shares = (clusters.iter())
                        .map(|c| {
                            let share = if names.iter().any(|n| n == c.name) {
                                Share::Autoscaled
                            } else {
                                Share::Idle
                            };
                            (c.name.to_string(), share)
                        })
                        .collect();
                    return Placement {
                        shares,
                        ..Placement::default()
                    };
                }
                Err(e) => {
                    problem = Some(Problem {
                        reason: "InvalidTargetClusterList",
                        message: format!(
                            "{HPA_TARGET_CLUSTERS}: {e}; the replicas are planned instead"
                        ),
                    })
                }
            }
        }
        let (preferences, invalid) = preferences(object, self.preferences);
        problem = problem.or(invalid);
        // What each cluster is asked to run now. v1 counted its ready Pods, and looked again
        // only 10 s after writing; looking at once, Pods still starting would count as
        // missing, and the plan would move replicas back and forth (a cluster that gave its
        // replicas away for lack of room would get some back before the others' Pods were
        // ready). A cluster without room is capped by its capacity all the same.
        let current: BTreeMap<String, i64> = (clusters.iter())
            .filter_map(|c| match (c.summary, c.planned) {
                (Some(Summary::Replicas(counts)), _) => Some((c.name.to_string(), counts.wanted)),
                (None, Some(Share::Replicas(n))) => Some((c.name.to_string(), *n)),
                _ => None,
            })
            .collect();
        let capacity: BTreeMap<String, i64> = (clusters.iter())
            .filter_map(|c| Some((c.name.to_string(), c.capacity?)))
            .collect();
        let names: Vec<&str> = clusters.iter().map(|c| c.name).collect();
        let key = key(object);
        let total = int(&object.data, "/spec/replicas", 1);
        let plan = planner::plan(&preferences, total, &names, &current, &capacity, &key);
        let shares = (plan.replicas.iter())
            .map(|(c, n)| {
                (
                    c.clone(),
                    Share::Replicas(n + plan.overflow.get(c).copied().unwrap_or(0)),
                )
            })
            .collect();
        Placement {
            shares,
            problem,
            ..Placement::default()
        }
    }

    fn shape(&self, spec: &mut Value, share: &Share, exists: bool) {
        let replicas = match share {
            Share::Replicas(n) => Some(*n),
            Share::Autoscaled if exists => None,
            // An HPA does not scale a target at 0 (kube-controller-manager disables it): a
            // new copy starts at one for its HPA to scale (v1 made it at 0).
            Share::Autoscaled => Some(1),
            _ => Some(0),
        };
        if let Some(spec) = spec.as_object_mut() {
            match replicas {
                Some(n) => spec.insert("replicas".into(), json!(n)),
                // The member's HPA owns it: the copy does not say, so it is not written.
                None => spec.remove("replicas"),
            };
        }
    }

    fn status(
        &self,
        object: &DynamicObject,
        members: &[MemberState],
        now: jiff::Timestamp,
    ) -> Value {
        let data = &object.data;
        let before = data.get("status").cloned().unwrap_or(json!({}));
        // While HPAs scale it, the replicas wanted are theirs, not the federated spec's.
        let wanted = if members.iter().any(|m| *m.share == Share::Autoscaled) {
            (members.iter())
                .filter_map(|m| counts(m.summary))
                .map(|c| c.wanted)
                .sum()
        } else {
            int(data, "/spec/replicas", 1)
        };
        let generation = object.metadata.generation.unwrap_or(0);
        let mut sum = Counts::default();
        let mut observed = true;
        let mut timed_out: Vec<String> = Vec::new();
        for m in members {
            let counts = counts(m.summary);
            if let Some(c) = counts {
                sum.replicas += c.replicas;
                sum.updated += c.updated;
                sum.ready += c.ready;
                sum.available += c.available;
                sum.unavailable += c.unavailable;
                if let Some(message) = &c.timed_out {
                    timed_out.push(format!("{}: {message}", m.name));
                }
            }
            // Each member holds this version and its own controller has seen it.
            let seen = counts.is_none_or(|c| c.observed >= c.generation);
            observed &= m.in_step && seen;
        }
        let observed_generation = if observed {
            generation
        } else {
            int(&before, "/observedGeneration", 0)
        };
        if !self.deployment {
            let mut status = omit_zeros(&[
                ("fullyLabeledReplicas", sum.replicas),
                ("readyReplicas", sum.ready),
                ("availableReplicas", sum.available),
                ("observedGeneration", observed_generation),
            ]);
            status.insert("replicas".into(), json!(sum.replicas));
            return Value::Object(status);
        }
        let name = object.metadata.name.as_deref().unwrap_or("");
        let complete = observed
            && sum.updated >= wanted
            && sum.replicas <= sum.updated
            && sum.available >= sum.updated;
        let progressing = if !timed_out.is_empty() {
            let message = format!(
                "Deployment \"{name}\" has timed out progressing in {}",
                timed_out.join("; ")
            );
            new_condition(
                &before,
                "Progressing",
                false,
                "ProgressDeadlineExceeded",
                &message,
                now,
            )
        } else if complete {
            let message =
                format!("Deployment \"{name}\" has successfully progressed in every cluster.");
            new_condition(
                &before,
                "Progressing",
                true,
                "NewReplicaSetAvailable",
                &message,
                now,
            )
        } else {
            let message = format!("Deployment \"{name}\" is progressing.");
            new_condition(
                &before,
                "Progressing",
                true,
                "ReplicaSetUpdated",
                &message,
                now,
            )
        };
        let available = if sum.available >= wanted - max_unavailable(data, wanted) {
            new_condition(
                &before,
                "Available",
                true,
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                now,
            )
        } else {
            new_condition(
                &before,
                "Available",
                false,
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                now,
            )
        };
        let mut status = omit_zeros(&[
            ("observedGeneration", observed_generation),
            ("replicas", sum.replicas),
            ("updatedReplicas", sum.updated),
            ("readyReplicas", sum.ready),
            ("availableReplicas", sum.available),
            ("unavailableReplicas", sum.unavailable),
        ]);
        status.insert("conditions".into(), json!([available, progressing]));
        Value::Object(status)
    }

    fn view(&self, share: &Share, summary: Option<&Summary>) -> Value {
        let counts = counts(summary).cloned().unwrap_or_default();
        match share {
            Share::Autoscaled => {
                json!({"autoscaled": true, "replicas": counts.wanted, "ready": counts.ready})
            }
            Share::Replicas(n) => json!({"planned": n, "ready": counts.ready}),
            _ => json!({"planned": 0, "ready": counts.ready}),
        }
    }

    fn reads_capacity(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::candidates;
    use super::*;

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn web(annotations: Value, replicas: i64) -> DynamicObject {
        object(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "generation": 2, "annotations": annotations},
            "spec": {"replicas": replicas}}))
    }

    fn shares(p: &Placement) -> Vec<(String, Share)> {
        p.shares.clone().into_iter().collect()
    }

    #[test]
    fn replicas_are_planned_from_the_preferences_or_left_to_the_hpas() {
        let d = Replicas::deployments();
        let now = jiff::Timestamp::now();
        let three = candidates(&["gondor", "rivendell", "rohan"]);
        let p = d.place(&web(json!({}), 9), &three, now);
        assert_eq!(
            shares(&p),
            [
                ("gondor".into(), Share::Replicas(3)),
                ("rivendell".into(), Share::Replicas(3)),
                ("rohan".into(), Share::Replicas(3))
            ]
        );
        assert_eq!(p.problem, None);
        // Invalid preferences: the default plan, and a problem to tell.
        let p = d.place(
            &web(json!({DEPLOYMENT_PREFERENCES: "{oops"}), 9),
            &three,
            now,
        );
        assert_eq!(p.shares["rohan"], Share::Replicas(3));
        assert!(
            p.problem
                .as_ref()
                .unwrap()
                .message
                .starts_with(DEPLOYMENT_PREFERENCES),
            "{p:?}"
        );
        // Preferences for ReplicaSets are not a Deployment's.
        let prefs = json!({REPLICA_SET_PREFERENCES: r#"{"clusters": {"rohan": {"weight": 1}}}"#});
        assert_eq!(
            d.place(&web(prefs, 9), &three, now).shares["gondor"],
            Share::Replicas(3)
        );
        // An HPA's clusters scale their copies; the others are idle.
        let hpa = json!({HPA_TARGET_CLUSTERS: r#"{"Names": ["gondor", "rohan"]}"#});
        assert_eq!(
            shares(&d.place(&web(hpa, 9), &three, now)),
            [
                ("gondor".into(), Share::Autoscaled),
                ("rivendell".into(), Share::Idle),
                ("rohan".into(), Share::Autoscaled)
            ]
        );
    }

    #[test]
    fn a_copy_carries_its_share() {
        let d = Replicas::deployments();
        let shaped = |share: &Share, exists: bool| {
            let mut spec = json!({"replicas": 9, "template": {}});
            d.shape(&mut spec, share, exists);
            spec
        };
        assert_eq!(
            shaped(&Share::Replicas(3), true),
            json!({"replicas": 3, "template": {}})
        );
        assert_eq!(
            shaped(&Share::Idle, true),
            json!({"replicas": 0, "template": {}})
        );
        assert_eq!(
            shaped(&Share::Autoscaled, false),
            json!({"replicas": 1, "template": {}})
        );
        assert_eq!(shaped(&Share::Autoscaled, true), json!({"template": {}}));
    }

    fn counts(
        wanted: i64,
        updated: i64,
        available: i64,
        generation: i64,
        observed: i64,
    ) -> Summary {
        Summary::Replicas(Counts {
            wanted,
            replicas: updated,
            updated,
            ready: available,
            available,
            unavailable: wanted - available,
            generation,
            observed,
            timed_out: None,
        })
    }

    #[test]
    fn the_federated_status_means_what_a_deployments_does() {
        let d = Replicas::deployments();
        let now = jiff::Timestamp::now();
        let object = web(json!({}), 9);
        let share = Share::Replicas(3);
        let done = counts(3, 3, 3, 4, 4);
        let member = |name, in_step, summary| MemberState {
            name,
            share: &share,
            in_step,
            summary,
        };
        // Rolled out everywhere: observed, complete, available.
        let all = [
            member("a", true, Some(&done)),
            member("b", true, Some(&done)),
            member("c", true, Some(&done)),
        ];
        let status = d.status(&object, &all, now);
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(
            (
                status["replicas"].clone(),
                status["availableReplicas"].clone()
            ),
            (json!(9), json!(9))
        );
        assert_eq!(status["unavailableReplicas"], Value::Null);
        assert_eq!(status["conditions"][0]["status"], "True");
        assert_eq!(status["conditions"][1]["reason"], "NewReplicaSetAvailable");
        // One member not yet holding this version: the generation is not observed.
        let behind = [
            member("a", true, Some(&done)),
            member("b", false, Some(&done)),
            member("c", true, Some(&done)),
        ];
        let status = d.status(&object, &behind, now);
        assert_eq!(status["observedGeneration"], Value::Null);
        assert_eq!(status["conditions"][1]["reason"], "ReplicaSetUpdated");
        // Nor when its controller has not seen it.
        let unseen = counts(3, 3, 3, 5, 4);
        let status = d.status(
            &object,
            &[
                member("a", true, Some(&done)),
                member("b", true, Some(&unseen)),
            ],
            now,
        );
        assert_eq!(status["observedGeneration"], Value::Null);
        // A member past its progress deadline fails the federated rollout.
        let mut stuck = Counts {
            timed_out: Some("ReplicaSet \"web-1\" has timed out progressing.".into()),
            ..Counts::default()
        };
        stuck.wanted = 3;
        let stuck = Summary::Replicas(stuck);
        let status = d.status(
            &object,
            &[
                member("a", true, Some(&done)),
                member("b", true, Some(&stuck)),
            ],
            now,
        );
        let progressing = &status["conditions"][1];
        assert_eq!(
            (
                progressing["status"].as_str(),
                progressing["reason"].as_str()
            ),
            (Some("False"), Some("ProgressDeadlineExceeded"))
        );
        assert!(
            progressing["message"]
                .as_str()
                .unwrap()
                .contains("b: ReplicaSet"),
            "{progressing}"
        );
        // 6 of 9 available is below the minimum (9 less 25% rounded down: 7).
        let status = d.status(
            &object,
            &[
                member("a", true, Some(&done)),
                member("b", true, Some(&done)),
            ],
            now,
        );
        assert_eq!(
            status["conditions"][0]["reason"],
            "MinimumReplicasUnavailable"
        );
    }

    #[test]
    fn under_hpas_the_rollout_is_measured_against_what_they_ask() {
        let d = Replicas::deployments();
        let share = Share::Autoscaled;
        let (up, one) = (counts(5, 5, 5, 2, 2), counts(1, 1, 1, 2, 2));
        let members = [
            MemberState {
                name: "a",
                share: &share,
                in_step: true,
                summary: Some(&up),
            },
            MemberState {
                name: "b",
                share: &share,
                in_step: true,
                summary: Some(&one),
            },
        ];
        // The federated spec says 3; the HPAs run 6, all rolled out.
        let status = d.status(&web(json!({}), 3), &members, jiff::Timestamp::now());
        assert_eq!(status["replicas"], 6);
        assert_eq!(
            status["conditions"][1]["reason"], "NewReplicaSetAvailable",
            "{status}"
        );
        assert_eq!(status["conditions"][0]["status"], "True");
    }

    #[test]
    fn conditions_keep_their_times_while_they_hold() {
        let d = Replicas::deployments();
        let share = Share::Replicas(9);
        let done = counts(9, 9, 9, 1, 1);
        let members = [MemberState {
            name: "a",
            share: &share,
            in_step: true,
            summary: Some(&done),
        }];
        let first = d.status(&web(json!({}), 9), &members, jiff::Timestamp::UNIX_EPOCH);
        let mut later = web(json!({}), 9);
        later.data["status"] = first.clone();
        let again = d.status(&later, &members, jiff::Timestamp::now());
        assert_eq!(first["conditions"], again["conditions"]);
    }

    #[test]
    fn max_unavailable_follows_the_strategy() {
        let with = |strategy: Value| json!({"spec": {"strategy": strategy}});
        assert_eq!(max_unavailable(&json!({}), 9), 2);
        assert_eq!(max_unavailable(&with(json!({"type": "Recreate"})), 9), 0);
        assert_eq!(
            max_unavailable(&with(json!({"rollingUpdate": {"maxUnavailable": 4}})), 9),
            4
        );
        assert_eq!(
            max_unavailable(
                &with(json!({"rollingUpdate": {"maxUnavailable": "50%"}})),
                9
            ),
            4
        );
        assert_eq!(
            max_unavailable(
                &with(json!({"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}})),
                9
            ),
            1
        );
        assert_eq!(
            max_unavailable(&with(json!({"rollingUpdate": {"maxUnavailable": 20}})), 9),
            9
        );
    }

    #[test]
    fn the_target_list_is_read_as_v1_wrote_it() {
        assert_eq!(
            target_clusters(r#"{"Names": ["a", "b"]}"#),
            Ok(vec!["a".into(), "b".into()])
        );
        assert_eq!(target_clusters(r#"{"names": []}"#), Ok(vec![]));
        assert_eq!(target_clusters(r#"{"Names": null}"#), Ok(vec![]));
        assert!(target_clusters(r#"{"Names": "a"}"#).is_err());
        assert!(target_clusters("nope").is_err());
    }
}
