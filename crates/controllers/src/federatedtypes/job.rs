//! Jobs (spec §4.5): `parallelism` planned over the selected Ready clusters from the
//! `job-preferences` annotation (each cluster's share as ReplicaSets have them), then
//! `completions` over the clusters that run some of it, by weight alone. A member gets a
//! copy only where its parallelism is above 0, with `manualSelector: true` and the selector
//! and labels the federation gave the Job, so the members' Pods carry the federated Job's.
//!
//! Better than the original: the cluster selector is honoured (v1's job controller ignored
//! it); completions go only to clusters that run Pods (v1 could plan completions for a
//! cluster it gave no parallelism, and the Job never completed); the federated Job is
//! Complete once every member that runs a part is, not when the first one is.

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::{
    Candidate, MemberState, Placement, Scheduling, Share, Summary, condition, int, key,
    preferences, stamp, time,
};
use crate::planner::{self, ClusterPreferences, JOB_PREFERENCES};

/// What a member Job reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    pub active: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub ready: i64,
    pub started: Option<jiff::Timestamp>,
    pub completed: Option<jiff::Timestamp>,
    pub complete: bool,
    /// Its `Failed` condition: reason, message, when.
    pub failure: Option<(String, String, Option<jiff::Timestamp>)>,
}

/// What a copy reports, if it is a Job's.
fn counts(summary: Option<&Summary>) -> Option<&Counts> {
    match summary {
        Some(Summary::Job(c)) => Some(c),
        _ => None,
    }
}

pub struct Jobs;

impl Scheduling for Jobs {
    fn summarize(&self, copy: &Value) -> Summary {
        let status = copy.get("status").cloned().unwrap_or(Value::Null);
        let holds = |kind: &str| condition(&status, kind).filter(|c| c["status"] == "True");
        let failure = holds("Failed").map(|c| {
            let text = |f: &str| c[f].as_str().unwrap_or("").to_string();
            (
                text("reason"),
                text("message"),
                time(c, "/lastTransitionTime"),
            )
        });
        Summary::Job(Counts {
            active: int(&status, "/active", 0),
            succeeded: int(&status, "/succeeded", 0),
            failed: int(&status, "/failed", 0),
            ready: int(&status, "/ready", 0),
            started: time(&status, "/startTime"),
            completed: time(&status, "/completionTime"),
            complete: holds("Complete").is_some(),
            failure,
        })
    }

    fn place(
        &self,
        object: &DynamicObject,
        clusters: &[Candidate],
        _now: jiff::Timestamp,
    ) -> Placement {
        let (preferences, problem) = preferences(object, JOB_PREFERENCES);
        let key = key(object);
        let none = BTreeMap::new();
        let names: Vec<&str> = clusters.iter().map(|c| c.name).collect();
        let parallelism = int(&object.data, "/spec/parallelism", 1);
        let parallel =
            planner::plan(&preferences, parallelism, &names, &none, &none, &key).replicas;
        let running: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| parallel.get(*n).is_some_and(|p| *p > 0))
            .collect();
        // Completions by weight; where the clusters running Pods have no weight (their
        // preferences give only a minimum), in proportion to their Pods.
        let mut weights = preferences.weights_only();
        let weight = |c: &&str| {
            (weights.clusters.get(*c).or(weights.clusters.get("*"))).map_or(0, |p| p.weight)
        };
        if running.iter().map(weight).sum::<i64>() == 0 {
            weights.clusters = (running.iter())
                .map(|c| {
                    (
                        c.to_string(),
                        ClusterPreferences {
                            weight: parallel[*c],
                            ..Default::default()
                        },
                    )
                })
                .collect();
        }
        let completions = (object
            .data
            .pointer("/spec/completions")
            .and_then(Value::as_i64))
        .map(|c| planner::plan(&weights, c, &running, &none, &none, &key).replicas);
        let shares = (names.iter())
            .map(|n| {
                let share = Share::Job {
                    parallelism: parallel.get(*n).copied().unwrap_or(0),
                    completions: completions
                        .as_ref()
                        .map(|c| c.get(*n).copied().unwrap_or(0)),
                };
                (n.to_string(), share)
            })
            .collect();
        Placement {
            shares,
            problem,
            ..Placement::default()
        }
    }

    fn shape(&self, spec: &mut Value, share: &Share, exists: bool) {
        let (
            Share::Job {
                parallelism,
                completions,
            },
            Some(spec),
        ) = (share, spec.as_object_mut())
        else {
            return;
        };
        spec.insert("parallelism".into(), json!(parallelism));
        // A Job's completions cannot change once it is made (kube-apiserver refuses it): a
        // member keeps the part it was given when the clusters change.
        match completions {
            Some(c) if !exists => spec.insert("completions".into(), json!(c)),
            _ => spec.remove("completions"),
        };
        // The selector is the federation's (spec §4.5): the member must not make its own.
        spec.insert("manualSelector".into(), json!(true));
    }

    fn status(
        &self,
        _object: &DynamicObject,
        members: &[MemberState],
        _now: jiff::Timestamp,
    ) -> Value {
        let mut sum = Counts::default();
        let mut complete = true;
        let mut running = 0;
        let mut failures: Vec<(String, String, Option<jiff::Timestamp>)> = Vec::new();
        for m in members {
            let counts = counts(m.summary);
            if let Some(c) = counts {
                sum.active += c.active;
                sum.succeeded += c.succeeded;
                sum.failed += c.failed;
                sum.ready += c.ready;
                sum.started = match (sum.started, c.started) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                sum.completed = sum.completed.max(c.completed);
                if let Some((reason, message, at)) = &c.failure {
                    failures.push((
                        reason.clone(),
                        format!("cluster {}: {message}", m.name),
                        *at,
                    ));
                }
            }
            if m.share.creates() {
                running += 1;
                complete &= m.in_step && counts.is_some_and(|c| c.complete);
            }
        }
        let complete = complete && running > 0 && failures.is_empty();
        let when = |t: Option<jiff::Timestamp>| t.map_or(Value::Null, stamp);
        let conditions = if let Some(latest) = failures.iter().max_by_key(|f| f.2) {
            let messages: Vec<&str> = failures.iter().map(|f| f.1.as_str()).collect();
            let at = when(latest.2);
            json!([{"type": "Failed", "status": "True", "reason": latest.0, "message": messages.join("; "),
                "lastProbeTime": at, "lastTransitionTime": at}])
        } else if complete {
            let at = when(sum.completed);
            let message = "Reached expected number of succeeded pods in every cluster";
            json!([
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": message, "lastProbeTime": at, "lastTransitionTime": at},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": message, "lastProbeTime": at, "lastTransitionTime": at},
            ])
        } else {
            Value::Null
        };
        let omit_zero = |n: i64| if n == 0 { Value::Null } else { json!(n) };
        json!({
            "active": omit_zero(sum.active),
            "succeeded": omit_zero(sum.succeeded),
            "failed": omit_zero(sum.failed),
            "ready": sum.ready,
            "startTime": when(sum.started),
            "completionTime": if complete { when(sum.completed) } else { Value::Null },
            "conditions": conditions,
        })
    }

    fn view(&self, share: &Share, summary: Option<&Summary>) -> Value {
        let counts = counts(summary).cloned().unwrap_or_default();
        let (parallelism, completions) = match share {
            Share::Job {
                parallelism,
                completions,
            } => (*parallelism, *completions),
            _ => (0, None),
        };
        json!({"parallelism": parallelism, "completions": completions, "active": counts.active,
            "succeeded": counts.succeeded, "failed": counts.failed})
    }
}

#[cfg(test)]
mod tests {
    use super::super::candidates;
    use super::*;

    fn job(spec: Value, annotations: Value) -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "namespace": "default", "annotations": annotations}, "spec": spec}))
        .unwrap()
    }

    fn split(p: &Placement) -> Vec<(i64, Option<i64>)> {
        p.shares
            .values()
            .map(|s| match s {
                Share::Job {
                    parallelism,
                    completions,
                } => (*parallelism, *completions),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn parallelism_then_completions_are_split() {
        let now = jiff::Timestamp::now();
        let three = candidates(&["gondor", "rivendell", "rohan"]);
        // The guide's example: 9 and 18 over three clusters.
        let p = Jobs.place(
            &job(json!({"parallelism": 9, "completions": 18}), json!({})),
            &three,
            now,
        );
        assert_eq!(split(&p), [(3, Some(6)), (3, Some(6)), (3, Some(6))]);
        // Completions only where Pods run.
        let p = Jobs.place(
            &job(json!({"parallelism": 1, "completions": 3}), json!({})),
            &three,
            now,
        );
        let parts = split(&p);
        assert_eq!(
            parts
                .iter()
                .filter(|(p, _)| *p == 1)
                .map(|(_, c)| *c)
                .collect::<Vec<_>>(),
            [Some(3)]
        );
        assert_eq!(parts.iter().map(|(p, _)| p).sum::<i64>(), 1);
        // Preferences: min and max bound parallelism only.
        let prefs = json!({JOB_PREFERENCES: r#"{"clusters": {"gondor": {"weight": 1, "maxReplicas": 1}, "rohan": {"weight": 1}}}"#});
        let p = Jobs.place(
            &job(json!({"parallelism": 4, "completions": 4}), prefs),
            &three,
            now,
        );
        assert_eq!(split(&p), [(1, Some(2)), (0, Some(0)), (3, Some(2))]);
        // Minimums alone: completions follow the Pods.
        let mins = json!({JOB_PREFERENCES: r#"{"clusters": {"*": {"minReplicas": 3}}}"#});
        let p = Jobs.place(
            &job(json!({"parallelism": 9, "completions": 18}), mins),
            &three,
            now,
        );
        assert_eq!(split(&p), [(3, Some(6)), (3, Some(6)), (3, Some(6))]);
        let bad = Jobs.place(
            &job(json!({"parallelism": 3}), json!({JOB_PREFERENCES: "[]"})),
            &three,
            now,
        );
        assert_eq!(split(&bad), [(1, None), (1, None), (1, None)]);
        assert!(bad.problem.is_some());
    }

    #[test]
    fn a_member_job_runs_its_part_with_the_federated_selector() {
        let mut spec =
            json!({"parallelism": 9, "completions": 18, "selector": {"matchLabels": {"x": "y"}}});
        Jobs.shape(
            &mut spec,
            &Share::Job {
                parallelism: 3,
                completions: Some(6),
            },
            false,
        );
        assert_eq!(
            spec,
            json!({"parallelism": 3, "completions": 6, "manualSelector": true, "selector": {"matchLabels": {"x": "y"}}})
        );
        // Made already, it keeps its completions: they cannot change.
        let mut spec = json!({"parallelism": 9, "completions": 18});
        Jobs.shape(
            &mut spec,
            &Share::Job {
                parallelism: 4,
                completions: Some(9),
            },
            true,
        );
        assert_eq!(spec, json!({"parallelism": 4, "manualSelector": true}));
    }

    #[test]
    fn the_federated_job_completes_when_every_part_has() {
        let now = jiff::Timestamp::now();
        let at = |s: i64| jiff::Timestamp::from_second(s).unwrap();
        let done = |s| {
            Summary::Job(Counts {
                succeeded: 6,
                started: Some(at(s)),
                completed: Some(at(s + 10)),
                complete: true,
                ..Counts::default()
            })
        };
        let busy = Summary::Job(Counts {
            active: 3,
            succeeded: 2,
            started: Some(at(5)),
            ..Counts::default()
        });
        let share = Share::Job {
            parallelism: 3,
            completions: Some(6),
        };
        let idle = Share::Job {
            parallelism: 0,
            completions: Some(0),
        };
        let (a, b, c) = (done(1), done(3), busy.clone());
        let m = |name, share, summary| MemberState {
            name,
            share,
            in_step: true,
            summary,
        };
        let object = job(json!({}), json!({}));
        let status = Jobs.status(
            &object,
            &[m("a", &share, Some(&a)), m("b", &share, Some(&c))],
            now,
        );
        assert_eq!(
            (status["active"].clone(), status["succeeded"].clone()),
            (json!(3), json!(8))
        );
        assert_eq!(status["startTime"], "1970-01-01T00:00:01Z");
        assert_eq!(
            (
                status["conditions"].clone(),
                status["completionTime"].clone()
            ),
            (Value::Null, Value::Null)
        );
        // A cluster with no part does not hold it back.
        let status = Jobs.status(
            &object,
            &[
                m("a", &share, Some(&a)),
                m("b", &share, Some(&b)),
                m("c", &idle, None),
            ],
            now,
        );
        assert_eq!(status["completionTime"], "1970-01-01T00:00:13Z");
        assert_eq!(status["conditions"][1]["type"], "Complete");
        // A failed part fails the Job.
        let failed = Summary::Job(Counts {
            failed: 7,
            failure: Some((
                "BackoffLimitExceeded".into(),
                "Job has reached the specified backoff limit".into(),
                Some(at(20)),
            )),
            ..Counts::default()
        });
        let status = Jobs.status(
            &object,
            &[m("a", &share, Some(&a)), m("b", &share, Some(&failed))],
            now,
        );
        assert_eq!(status["conditions"][0]["reason"], "BackoffLimitExceeded");
        assert!(
            status["conditions"][0]["message"]
                .as_str()
                .unwrap()
                .starts_with("cluster b: ")
        );
        // No cluster: nothing is complete.
        assert_eq!(Jobs.status(&object, &[], now)["conditions"], Value::Null);
    }
}
