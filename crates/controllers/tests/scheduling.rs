//! Replica scheduling end to end (spec §4.4-§4.6; §10 items 14 and 17-19; the guide's
//! examples): three local clusters, all joined (rivendell hosts the credentials and is a
//! member too, as in the guide), the controller manager binary, read with kubectl.
//!
//! - Deployments spread 3/3/3, report 9/9 and a rollout `kubectl rollout status` follows on
//!   the federation, re-plan on `kubectl scale`, roll a new image out in every member, and
//!   fail when a member's rollout passes its progress deadline.
//! - Preferences: weights, min, max, `"*"`, with a cluster selector, invalid ones.
//! - A cluster stopped and back, with and without rebalance; a cluster whose nodes are
//!   full (Pods unschedulable for over a minute) giving its replicas to the others.
//! - Jobs split 3/6 each and complete as one (`kubectl wait`); HPAs split max 9 / min 2 into
//!   3 / 1, their target left to the member HPAs, the totals following a member's scaling.

mod support;

use std::time::Duration;

use fellowship_controllers::annotations::{HPA_TARGET_CLUSTERS, REPLICAS};
use serde_json::{Value, json};
use support::{Env, Manager, until, until_value, until_within};

/// The members, in the order the tests list their shares.
const CLUSTERS: [&str; 3] = ["gondor", "rivendell", "rohan"];

/// Every cluster joined, the controller manager running with `flags`, all Ready.
fn start(env: &Env, flags: &[&str]) -> Manager {
    for c in CLUSTERS {
        env.join(c);
    }
    let mut all = vec!["--cluster-monitor-period=1s", "--port=0"];
    all.extend(flags);
    let manager = support::manager(env, &all);
    env.until_status(&CLUSTERS.map(|c| (c, "Ready")));
    manager
}

/// Each member's `spec.replicas` of an object (None: no copy there), in [`CLUSTERS`] order.
fn shares(env: &Env, what: &[&str]) -> Vec<Option<i64>> {
    CLUSTERS
        .iter()
        .map(|c| {
            env.get(c, what)
                .map(|o| o["spec"]["replicas"].as_i64().unwrap_or(1))
        })
        .collect()
}

fn until_shares(env: &Env, what: &[&str], want: [Option<i64>; 3]) {
    let about = format!("{what:?} spread over {CLUSTERS:?}");
    until_value(|| shares(env, what), &want.to_vec(), &about);
}

/// A field of the federated object, by JSONPath.
fn field(env: &Env, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend(what);
    let jsonpath = format!("jsonpath={path}");
    args.extend(["-o", &jsonpath]);
    env.ok("federation", &args)
}

fn until_field(env: &Env, what: &[&str], path: &str, want: &str) {
    let about = format!("{what:?} {path} in the federation");
    until_value(|| field(env, what, path), &want.to_string(), &about);
}

fn pod_template(app: &str, extra: Value) -> Value {
    let mut container = json!({"name": "main", "image": "nginx"});
    if let (Some(c), Some(extra)) = (container.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    json!({"metadata": {"labels": {"app": app}}, "spec": {"containers": [container]}})
}

/// An `apps/v1` workload of `kind` in the federation.
fn workload(kind: &str, name: &str, replicas: i64, annotations: Value, spec: Value) -> Value {
    let mut object = json!({"apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name, json!({}))}});
    if let (Some(s), Some(extra)) = (object["spec"].as_object_mut(), spec.as_object()) {
        s.extend(extra.clone());
    }
    object
}

/// The events of a federated object, as `reason: message` lines.
fn events(env: &Env, name: &str) -> String {
    env.ok(
        "federation",
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "jsonpath={range .items[*]}{.type} {.reason}: {.message}{\"\\n\"}{end}",
        ],
    )
}

/// The guide's example, the federated status, `rollout status`, a scale and a new image.
#[test]
fn deployments_spread_and_the_federation_reports_their_rollout() {
    let env = Env::start();
    let _manager = start(&env, &[]);
    let web = ["deployments.apps", "web"];
    env.ok(
        "federation",
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=9",
        ],
    );
    until_shares(&env, &web, [Some(3); 3]);
    // 9/9 in the federation, and a rollout that completes.
    until_field(
        &env,
        &web,
        "{.status.readyReplicas}/{.spec.replicas}",
        "9/9",
    );
    let table = env.ok("federation", &["get", "deploy", "web"]);
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("9/9")),
        "{table}"
    );
    let out = env.ok(
        "federation",
        &["rollout", "status", "deploy/web", "--timeout=60s"],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    // Each cluster's share and what it runs, on the object.
    until(
        || {
            let view = field(
                &env,
                &web,
                &format!("{{.metadata.annotations.{}}}", REPLICAS.replace('.', "\\.")),
            );
            serde_json::from_str::<Value>(&view).ok()
                == Some(
                    json!({"gondor": {"planned": 3, "ready": 3}, "rivendell": {"planned": 3, "ready": 3}, "rohan": {"planned": 3, "ready": 3}}),
                )
        },
        "the replicas annotation",
    );
    let status = env.get("federation", &web).unwrap()["status"].clone();
    assert_eq!(status["observedGeneration"], 1, "{status}");
    let conditions = status["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Available" && c["status"] == "True")
            && conditions
                .iter()
                .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable"),
        "{status}"
    );
    // Written once: the status is not rewritten while nothing changes.
    let version = || field(&env, &web, "{.metadata.resourceVersion}");
    let before = version();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        before,
        version(),
        "the federated Deployment rewritten while in step"
    );

    // Scaled in the federation: planned again. Without rebalance the clusters first in the
    // planner's order keep what they run, so scaling down to 6 empties one; back up to 12,
    // the replicas spread evenly again.
    env.ok("federation", &["scale", "deploy/web", "--replicas=6"]);
    until(
        || {
            let mut s = shares(&env, &web);
            s.sort();
            s == [Some(0), Some(3), Some(3)]
        },
        "web scaled down to 3, 3 and 0",
    );
    until_field(
        &env,
        &web,
        "{.status.readyReplicas}/{.status.replicas}",
        "6/6",
    );
    env.ok("federation", &["scale", "deploy/web", "--replicas=12"]);
    until_shares(&env, &web, [Some(4); 3]);

    // A new image rolls out in every member; rollout status on the federation waits for all.
    env.ok(
        "federation",
        &["set", "image", "deploy/web", "nginx=nginx:1.27"],
    );
    let out = env.ok(
        "federation",
        &["rollout", "status", "deploy/web", "--timeout=90s"],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    for c in CLUSTERS {
        let d = env.get(c, &web).unwrap();
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.27",
            "{c}"
        );
        assert_eq!(
            (
                d["status"]["updatedReplicas"].as_i64(),
                d["status"]["replicas"].as_i64()
            ),
            (Some(4), Some(4)),
            "{c}: {}",
            d["status"]
        );
    }
    assert_eq!(field(&env, &web, "{.status.updatedReplicas}"), "12");
    assert_eq!(
        field(&env, &web, "{.status.observedGeneration}"),
        field(&env, &web, "{.metadata.generation}")
    );
}

/// A member's rollout past its progress deadline fails the federated one.
#[test]
fn a_member_rollout_past_its_deadline_fails_the_federated_rollout() {
    let env = Env::start();
    let _manager = start(&env, &[]);
    // Its Pods fit no node: no cluster makes progress.
    let stuck = workload(
        "Deployment",
        "stuck",
        3,
        json!({}),
        json!({"progressDeadlineSeconds": 3, "template": {"metadata": {"labels": {"app": "stuck"}},
            "spec": {"nodeSelector": {"disk": "none-has-this"}, "containers": [{"name": "main", "image": "nginx"}]}}}),
    );
    env.apply("federation", &stuck);
    until_shares(&env, &["deployments.apps", "stuck"], [Some(1); 3]);
    let (done, out) = env.kubectl(
        "federation",
        &["rollout", "status", "deploy/stuck", "--timeout=60s"],
    );
    assert!(!done, "{out}");
    assert!(out.contains("exceeded its progress deadline"), "{out}");
    let message = field(
        &env,
        &["deployments.apps", "stuck"],
        "{.status.conditions[?(@.type==\"Progressing\")].message}",
    );
    assert!(
        message.contains("has timed out progressing in"),
        "{message}"
    );
}

/// Items 17-19 (weights, min, max) on ReplicaSets, `"*"`, a selector with preferences,
/// invalid preferences.
#[test]
fn preferences_weights_min_max_and_a_selector() {
    let env = Env::start();
    let _manager = start(&env, &[]);
    let prefs =
        |p: Value| json!({"federation.kubernetes.io/replica-set-preferences": p.to_string()});
    // 17: rivendell (c0) has no entry and gets 0, gondor weight 1, rohan weight 2.
    let weights = prefs(json!({"clusters": {"gondor": {"weight": 1}, "rohan": {"weight": 2}}}));
    env.apply(
        "federation",
        &workload("ReplicaSet", "weights", 3, weights.clone(), json!({})),
    );
    let rs = |name: &'static str| ["replicasets.apps", name];
    until_shares(&env, &rs("weights"), [Some(1), Some(0), Some(2)]);
    env.apply(
        "federation",
        &workload("ReplicaSet", "weights", 6, weights, json!({})),
    );
    until_shares(&env, &rs("weights"), [Some(2), Some(0), Some(4)]);
    // 18: rivendell weight 100, the others weight 1 and min i+2: each its min, one more to
    // rivendell.
    let min = prefs(
        json!({"clusters": {"rivendell": {"weight": 100}, "gondor": {"weight": 1, "minReplicas": 3}, "rohan": {"weight": 1, "minReplicas": 4}}}),
    );
    env.apply(
        "federation",
        &workload("ReplicaSet", "min", 8, min, json!({})),
    );
    until_shares(&env, &rs("min"), [Some(3), Some(1), Some(4)]);
    // 19: rivendell weight 1, the others weight 100 and max i: each its max, the rest to
    // rivendell.
    let max = prefs(
        json!({"clusters": {"rivendell": {"weight": 1}, "gondor": {"weight": 100, "maxReplicas": 1}, "rohan": {"weight": 100, "maxReplicas": 2}}}),
    );
    env.apply(
        "federation",
        &workload("ReplicaSet", "max", 8, max, json!({})),
    );
    until_shares(&env, &rs("max"), [Some(1), Some(5), Some(2)]);
    // "*" for the clusters without an entry of their own (Go-style field names too).
    let star = prefs(json!({"Clusters": {"*": {"Weight": 2}, "rohan": {"Weight": 1}}}));
    env.apply(
        "federation",
        &workload("ReplicaSet", "star", 5, star, json!({})),
    );
    until_shares(&env, &rs("star"), [Some(2), Some(2), Some(1)]);
    // Item 17's cascading delete.
    env.ok("federation", &["delete", "rs", "weights", "--wait=false"]);
    until(
        || {
            CLUSTERS
                .iter()
                .all(|c| env.get(c, &rs("weights")).is_none())
        },
        "weights gone from the members",
    );

    // A selector and preferences: only the gold clusters, by their weights.
    for c in ["gondor", "rohan"] {
        env.ok("federation", &["label", "cluster", c, "tier=gold"]);
    }
    let annotations = json!({
        "federation.alpha.kubernetes.io/cluster-selector": r#"[{"key": "tier", "operator": "In", "values": ["gold"]}]"#,
        "federation.kubernetes.io/deployment-preferences": r#"{"clusters": {"gondor": {"weight": 2}, "rohan": {"weight": 1}}}"#,
    });
    env.apply(
        "federation",
        &workload("Deployment", "gold", 9, annotations, json!({})),
    );
    until_shares(
        &env,
        &["deployments.apps", "gold"],
        [Some(6), None, Some(3)],
    );
    // rohan no longer selected: its copy goes, its replicas to gondor.
    env.ok("federation", &["label", "cluster", "rohan", "tier-"]);
    until_shares(&env, &["deployments.apps", "gold"], [Some(9), None, None]);

    // Invalid preferences: the default plan, and a Warning event saying why.
    let bad = json!({"federation.kubernetes.io/deployment-preferences": "{\"clusters\": {\"gondor\": {\"weight\": -1}}}"});
    env.apply(
        "federation",
        &workload("Deployment", "bad", 9, bad, json!({})),
    );
    until_shares(&env, &["deployments.apps", "bad"], [Some(3); 3]);
    until(
        || {
            events(&env, "bad")
                .lines()
                .any(|l| l.starts_with("Warning InvalidPreferences:") && l.contains("weight"))
        },
        "a Warning event about the preferences",
    );
}

/// A cluster stopped mid-way: its replicas go to the others at once; back, they return
/// with rebalance and stay where they went without it.
#[test]
fn a_stopped_cluster_moves_its_replicas_and_rebalance_decides_their_return() {
    let mut env = Env::start();
    let _manager = start(&env, &[]);
    let rebalance = |on: bool| json!({"federation.kubernetes.io/deployment-preferences": json!({"rebalance": on, "clusters": {"*": {"weight": 1}}}).to_string()});
    // Its name orders rohan last among equal weights (the hash of spec §4.4), so without
    // rebalance the replicas that went elsewhere stay there.
    env.apply(
        "federation",
        &workload("Deployment", "stay", 9, rebalance(false), json!({})),
    );
    env.apply(
        "federation",
        &workload("Deployment", "even", 9, rebalance(true), json!({})),
    );
    let (stay, even) = (["deployments.apps", "stay"], ["deployments.apps", "even"]);
    for d in [&stay, &even] {
        until_shares(&env, d, [Some(3); 3]);
        until_field(&env, d, "{.status.readyReplicas}", "9");
    }

    assert!(env.fleet.pause_cluster("rohan"));
    env.until_status(&[
        ("gondor", "Ready"),
        ("rivendell", "Ready"),
        ("rohan", "Offline"),
    ]);
    let others = |d: &[&str]| -> Vec<Option<i64>> {
        ["gondor", "rivendell"]
            .iter()
            .map(|c| {
                env.get(c, d)
                    .map(|o| o["spec"]["replicas"].as_i64().unwrap_or(1))
            })
            .collect()
    };
    for d in [&stay, &even] {
        until(
            || {
                let s = others(d);
                s.iter().flatten().sum::<i64>() == 9 && s.iter().all(|r| r.is_some_and(|r| r >= 4))
            },
            &format!("{d:?}: rohan's replicas moved to the others"),
        );
        // The federation counts what the Ready clusters run.
        until_field(&env, d, "{.status.readyReplicas}", "9");
    }
    let moved = others(&stay);

    env.runtime
        .block_on(env.fleet.resume_cluster("rohan"))
        .unwrap();
    env.until_status(&CLUSTERS.map(|c| (c, "Ready")));
    until_shares(&env, &even, [Some(3); 3]);
    until_shares(&env, &stay, [moved[0], moved[1], Some(0)]);
}

/// A cluster whose nodes are full: after its Pods wait a minute (spec §4.4), its replicas
/// go to the clusters with room.
#[test]
fn full_nodes_overflow_to_the_other_clusters() {
    let env = Env::start();
    let _manager = start(&env, &[]);
    // rohan's three nodes, of 4 CPUs each, taken by Pods of its own.
    let mut hog = workload("Deployment", "hog", 3, json!({}), json!({}));
    hog["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "4"}});
    env.apply("rohan", &hog);
    until(
        || {
            field_in(
                &env,
                "rohan",
                &["deployments.apps", "hog"],
                "{.status.readyReplicas}",
            ) == "3"
        },
        "rohan's nodes full",
    );
    let mut web = workload("Deployment", "web", 9, json!({}), json!({}));
    web["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "100m"}});
    env.apply("federation", &web);
    let what = ["deployments.apps", "web"];
    until_shares(&env, &what, [Some(3); 3]);
    until_within(
        Duration::from_secs(150),
        || {
            let s = shares(&env, &what);
            s[2] == Some(0) && s.iter().flatten().sum::<i64>() == 9
        },
        "rohan's replicas overflowing to gondor and rivendell",
    );
    until_field(
        &env,
        &what,
        "{.status.readyReplicas}/{.spec.replicas}",
        "9/9",
    );
}

fn field_in(env: &Env, context: &str, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend(what);
    let jsonpath = format!("jsonpath={path}");
    args.extend(["-o", &jsonpath]);
    env.kubectl(context, &args).1
}

/// The guide's Job: parallelism 9 and completions 18 over three clusters, 3 and 6 each;
/// the federated Job completes once all have, for `kubectl wait`; item 14's cascading
/// delete; the cluster selector honoured.
#[test]
fn jobs_split_and_complete_as_one() {
    let env = Env::start();
    let _manager = start(&env, &[]);
    let job = |name: &str, annotations: Value| {
        json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"parallelism": 9, "completions": 18, "template": {"spec": {
                "containers": [{"name": "pi", "image": "perl"}], "restartPolicy": "Never"}}}})
    };
    env.apply("federation", &job("pi", json!({})));
    let pi = ["jobs.batch", "pi"];
    until(
        || {
            CLUSTERS.iter().all(|c| {
                env.get(c, &pi).is_some_and(|j| {
                    (
                        j["spec"]["parallelism"].as_i64(),
                        j["spec"]["completions"].as_i64(),
                    ) == (Some(3), Some(6))
                        && j["spec"]["manualSelector"] == true
                })
            })
        },
        "3 and 6 in each cluster",
    );
    // The members' Pods carry the federated Job's selector.
    let selector = field(&env, &pi, "{.spec.selector.matchLabels}");
    assert!(selector.contains("controller-uid"), "{selector}");
    let out = env.ok(
        "federation",
        &[
            "wait",
            "--for=condition=complete",
            "job/pi",
            "--timeout=90s",
        ],
    );
    assert!(out.contains("condition met"), "{out}");
    assert_eq!(field(&env, &pi, "{.status.succeeded}"), "18");
    assert!(!field(&env, &pi, "{.status.completionTime}").is_empty());
    env.ok("federation", &["delete", "job", "pi", "--wait=false"]);
    until(
        || CLUSTERS.iter().all(|c| env.get(c, &pi).is_none()),
        "pi gone from the members",
    );

    // Better than the original: the cluster selector is honoured.
    env.ok("federation", &["label", "cluster", "gondor", "tier=gold"]);
    let gold = json!({"federation.alpha.kubernetes.io/cluster-selector": r#"[{"key": "tier", "operator": "In", "values": ["gold"]}]"#});
    env.apply("federation", &job("gold", gold));
    until(
        || {
            env.get("gondor", &["jobs.batch", "gold"])
                .is_some_and(|j| j["spec"]["parallelism"] == 9)
        },
        "the whole Job in gondor",
    );
    for c in ["rivendell", "rohan"] {
        assert!(env.get(c, &["jobs.batch", "gold"]).is_none(), "{c}");
    }
}

/// The guide's HPA: max 9 and min 2 over three clusters, 3 and 1 each; its target's
/// replicas left to the member HPAs; a member that needs more gets max from those that
/// need less once the forbidden window passes; the federation's totals follow.
#[test]
fn hpas_share_min_and_max_and_the_totals_follow() {
    let env = Env::start();
    let _manager = start(&env, &["--hpa-scale-forbidden-window=3s"]);
    env.apply(
        "federation",
        &workload("Deployment", "auto", 6, json!({}), json!({})),
    );
    let auto = ["deployments.apps", "auto"];
    until_shares(&env, &auto, [Some(2); 3]);
    env.apply(
        "federation",
        &json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "auto", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "auto"},
                "minReplicas": 2, "maxReplicas": 9, "targetCPUUtilizationPercentage": 50}}),
    );
    let hpa = ["horizontalpodautoscalers.autoscaling", "auto"];
    let bounds = |c: &str| {
        env.get(c, &hpa).map(|h| {
            (
                h["spec"]["minReplicas"].as_i64().unwrap_or(0),
                h["spec"]["maxReplicas"].as_i64().unwrap_or(0),
            )
        })
    };
    until(
        || CLUSTERS.iter().all(|c| bounds(c) == Some((1, 3))),
        "min 1 and max 3 in each cluster",
    );
    // The target is the member HPAs' to scale.
    until_field(
        &env,
        &auto,
        &format!(
            "{{.metadata.annotations.{}}}",
            HPA_TARGET_CLUSTERS.replace('.', "\\.")
        ),
        r#"{"Names":["gondor","rivendell","rohan"]}"#,
    );
    // gondor's load needs more Pods than its max; the others' need one each.
    let load = "simulation.fellowship.io/cpu-load";
    env.ok(
        "gondor",
        &["annotate", "hpa", "auto", &format!("{load}=400")],
    );
    for c in ["rivendell", "rohan"] {
        env.ok(c, &["annotate", "hpa", "auto", &format!("{load}=10")]);
    }
    let replicas = |c: &str| {
        field_in(&env, c, &auto, "{.spec.replicas}")
            .parse::<i64>()
            .unwrap_or(0)
    };
    // Once gondor's HPA has sat at its max past the window, max moves to it, and it grows.
    until_within(
        Duration::from_secs(60),
        || bounds("gondor").is_some_and(|(_, max)| max > 3) && replicas("gondor") > 3,
        "gondor's HPA given more max and scaling past 3",
    );
    // What moves, moves between clusters: the maxes still add up to 9 (the two writes of a
    // move are seen together once both are in).
    let total_max = || {
        CLUSTERS
            .iter()
            .map(|c| bounds(c).map_or(0, |b| b.1))
            .sum::<i64>()
    };
    until_value(
        total_max,
        &9,
        "the members' maxes adding up to the federated one",
    );
    // The federation's totals follow the members'.
    until(
        || {
            let sum: i64 = CLUSTERS.iter().map(|c| replicas(c)).sum();
            let current = field(&env, &hpa, "{.status.currentReplicas}");
            let deployed = field(&env, &auto, "{.status.replicas}");
            current == sum.to_string() && deployed == sum.to_string()
        },
        "the federated HPA's and Deployment's replicas the sum of the members'",
    );
    // The federation does not take the replicas back: its Deployment still says 6.
    assert_eq!(field(&env, &auto, "{.spec.replicas}"), "6");
    assert_eq!(
        CLUSTERS
            .iter()
            .map(|c| replicas(c))
            .collect::<Vec<_>>()
            .iter()
            .filter(|r| **r == 1)
            .count(),
        2
    );

    // Deleted with its member HPAs: the target is planned again, its 6 replicas where
    // they run most (no rebalance).
    env.ok("federation", &["delete", "hpa", "auto", "--wait=false"]);
    until(
        || CLUSTERS.iter().all(|c| env.get(c, &hpa).is_none()),
        "the member HPAs gone",
    );
    let list = format!(
        "{{.metadata.annotations.{}}}",
        HPA_TARGET_CLUSTERS.replace('.', "\\.")
    );
    until_field(&env, &auto, &list, "");
    until_value(
        || shares(&env, &auto).into_iter().flatten().sum::<i64>(),
        &6,
        "the target's 6 replicas planned again",
    );

    // An HPA no Ready cluster is selected for: a clear state, no crash.
    let nowhere = json!({"federation.alpha.kubernetes.io/cluster-selector": r#"[{"key": "tier", "operator": "In", "values": ["none"]}]"#});
    env.apply(
        "federation",
        &json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "nowhere", "namespace": "default", "annotations": nowhere},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "absent"},
                "minReplicas": 1, "maxReplicas": 4}}),
    );
    until_field(
        &env,
        &["horizontalpodautoscalers.autoscaling", "nowhere"],
        "{.status.conditions[0].reason}",
        "NoReadyClusters",
    );
}

/// A cluster back from an outage keeps what its HPA scaled: it stays among its target's
/// clusters while it is away (v1 idled it, and a member HPA does not scale up from zero).
#[test]
fn an_autoscaled_cluster_keeps_its_replicas_through_an_outage() {
    let mut env = Env::start();
    let _manager = start(&env, &[]);
    env.apply(
        "federation",
        &workload("Deployment", "auto", 3, json!({}), json!({})),
    );
    let auto = ["deployments.apps", "auto"];
    until_shares(&env, &auto, [Some(1); 3]);
    env.apply(
        "federation",
        &json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "auto", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "auto"},
                "minReplicas": 3, "maxReplicas": 9}}),
    );
    let list = format!(
        "{{.metadata.annotations.{}}}",
        HPA_TARGET_CLUSTERS.replace('.', "\\.")
    );
    let all = r#"{"Names":["gondor","rivendell","rohan"]}"#;
    until_field(&env, &auto, &list, all);

    assert!(env.fleet.pause_cluster("rohan"));
    env.until_status(&[
        ("gondor", "Ready"),
        ("rivendell", "Ready"),
        ("rohan", "Offline"),
    ]);
    let hpa = ["horizontalpodautoscalers.autoscaling", "auto"];
    let max = |env: &Env, c: &str| {
        env.get(c, &hpa)
            .map(|h| h["spec"]["maxReplicas"].as_i64().unwrap_or(0))
    };
    // rohan's max goes to the others; it stays on the target's list.
    until(
        || max(&env, "gondor").unwrap_or(0) + max(&env, "rivendell").unwrap_or(0) == 9,
        "the max shared by the two Ready clusters",
    );
    assert_eq!(field(&env, &auto, &list), all);

    env.runtime
        .block_on(env.fleet.resume_cluster("rohan"))
        .unwrap();
    env.until_status(&CLUSTERS.map(|c| (c, "Ready")));
    until(
        || max(&env, "rohan").is_some_and(|m| m > 0),
        "rohan's HPA given some max again",
    );
    // Its copy kept its replica all along.
    assert_eq!(shares(&env, &auto)[2], Some(1));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(shares(&env, &auto)[2], Some(1));
}
