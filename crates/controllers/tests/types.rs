//! The contract's end-to-end scenarios (spec §10) that need no DNS, with replicas split
//! as the types' own tests (`scheduling.rs`) check them, against real servers: the federation API server and local member clusters on
//! loopback, the controller manager binary, kubectl and kube-rs as the clients.
//!
//! - Clusters registered with a label turn Ready and are deleted by label (item 1); a
//!   Service in a namespace that does not exist is refused (2); Events, Ingresses, Jobs,
//!   ReplicaSets and Services are created and deleted with no cluster (10, 11, 13, 16, 21).
//! - Every propagated type is created (the seed-era `extensions/v1beta1` versions too),
//!   updated and deleted with cascade in the federation and in every Ready member (9); a
//!   namespace deleted with orphan takes its contents out of the federation (15); copies
//!   the members' own controllers write to are not fought over.
//! - Services (22-26) are kept in step without touching what the members allocate, leave
//!   the members only on a cascading delete, and are put back when deleted in a member.

mod support;

use std::time::Duration;

use fellowship_controllers::annotations::PROPAGATION;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, ObjectReference, Secret, Service};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use support::{Env, until};

const MEMBERS: [&str; 2] = ["gondor", "rohan"];
const UPDATE: &str = "federation.kubernetes.io/test-federation-crud-update";

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["metadata"]["annotations"][key].as_str()
}

/// Waits until every member has the object and `check` holds for each copy.
fn until_in_members(env: &Env, what: &[&str], check: impl Fn(&Value) -> bool, about: &str) {
    until(
        || {
            MEMBERS
                .iter()
                .all(|m| env.get(m, what).is_some_and(|o| check(&o)))
        },
        &format!("{what:?} {about} in {MEMBERS:?}"),
    );
}

/// Waits until the object is gone from each of `contexts`.
fn until_gone(env: &Env, contexts: &[&str], what: &[&str]) {
    until(
        || contexts.iter().all(|c| env.get(c, what).is_none()),
        &format!("{what:?} gone from {contexts:?}"),
    );
}

/// The federation and the members: where a cascading delete leaves nothing.
const EVERYWHERE: [&str; 3] = ["federation", "gondor", "rohan"];

/// A kube-rs client for a context of the test's kubeconfig.
fn client(env: &Env, context: &str) -> kube::Client {
    env.runtime.block_on(async {
        let options = KubeConfigOptions {
            context: Some(context.into()),
            ..Default::default()
        };
        let kubeconfig = Kubeconfig::read_from(&env.config).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    })
}

/// The member copies' resourceVersions, twice a few seconds apart (a bounded look, not a
/// timing check): a controller fighting a member's own controllers or API server over a
/// field they fill in rewrites the copy again and again, so the version would move.
fn left_alone(env: &Env, objects: &[&[&str]]) {
    let versions = || {
        let mut all = Vec::new();
        for m in MEMBERS {
            for what in objects {
                let o = env
                    .get(m, what)
                    .unwrap_or_else(|| panic!("{m} {what:?} is there"));
                all.push(format!(
                    "{m} {what:?} {}",
                    o["metadata"]["resourceVersion"].as_str().unwrap_or("")
                ));
            }
        }
        all
    };
    let before = versions();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(before, versions(), "copies rewritten once in step");
}

fn start_with_members(env: &Env) -> support::Manager {
    for member in MEMBERS {
        let secret = format!("{member}-credentials");
        env.credentials(&secret, member);
        env.cluster(member, &env.fleet.get(member).unwrap().server(), &secret);
    }
    let manager = support::manager(env, &["--cluster-monitor-period=1s", "--port=0"]);
    env.until_status(&[("gondor", "Ready"), ("rohan", "Ready")]);
    manager
}

/// Items 1, 2, 10, 11, 13, 16 and 21.
#[test]
fn clusters_and_the_federation_api_alone() {
    let env = Env::start();
    let _manager = support::manager(&env, &["--cluster-monitor-period=1s", "--port=0"]);

    // 1: a Cluster per member, labelled; each turns Ready; deleted by label, none is left.
    let members = ["rivendell", "gondor", "rohan"];
    for member in members {
        let secret = format!("{member}-credentials");
        env.credentials(&secret, member);
        let name = format!("e2e-{member}");
        env.cluster(&name, &env.fleet.get(member).unwrap().server(), &secret);
        env.ok("federation", &["label", "cluster", &name, "prefix=e2e"]);
    }
    let names: Vec<String> = members.iter().map(|m| format!("e2e-{m}")).collect();
    let ready: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "Ready")).collect();
    env.until_status(&ready);
    env.ok(
        "federation",
        &["delete", "clusters", "-l", "prefix=e2e", "--wait=false"],
    );
    until(
        || {
            let left = env.ok(
                "federation",
                &[
                    "get",
                    "clusters",
                    "-l",
                    "prefix=e2e",
                    "-o",
                    "jsonpath={.items[*].metadata.name}",
                ],
            );
            left.trim().is_empty()
        },
        "no cluster labelled prefix=e2e",
    );

    // 2: NamespaceLifecycle admission refuses a Service in a namespace that does not exist.
    let (created, out) = env.kubectl(
        "federation",
        &[
            "create",
            "service",
            "clusterip",
            "admission",
            "--tcp=80",
            "-n",
            "federation-admission-test-ns",
        ],
    );
    assert!(!created, "{out}");
    assert!(
        out.contains(r#"namespaces "federation-admission-test-ns" not found"#),
        "{out}"
    );

    // 10: an Event, with kube-rs.
    let kube = client(&env, "federation");
    let events: Api<Event> = Api::namespaced(kube, "default");
    let event = Event {
        metadata: ObjectMeta {
            name: Some("e2e-event".into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("ConfigMap".into()),
            name: Some("anything".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        reason: Some("Testing".into()),
        message: Some("an event of the e2e suite".into()),
        type_: Some("Normal".into()),
        ..Default::default()
    };
    env.runtime
        .block_on(events.create(&PostParams::default(), &event))
        .unwrap();
    let read = env.runtime.block_on(events.get("e2e-event")).unwrap();
    assert_eq!(read.reason.as_deref(), Some("Testing"));
    env.runtime
        .block_on(events.delete("e2e-event", &DeleteParams::default()))
        .unwrap();
    until_gone(&env, &["federation"], &["events", "e2e-event"]);

    // 11, 16: an Ingress and a ReplicaSet, in their seed-era versions; 13, 21: a Job and a
    // Service.
    env.apply(
        "federation",
        &json!({"apiVersion": "extensions/v1beta1", "kind": "Ingress",
            "metadata": {"name": "e2e-ingress", "namespace": "default"},
            "spec": {"backend": {"serviceName": "e2e-service", "servicePort": 80}}}),
    );
    env.apply(
        "federation",
        &json!({"apiVersion": "extensions/v1beta1", "kind": "ReplicaSet",
            "metadata": {"name": "e2e-replicaset", "namespace": "default"},
            "spec": {"replicas": 1, "template": pod_template("e2e-replicaset")}}),
    );
    env.ok(
        "federation",
        &["create", "job", "e2e-job", "--image=busybox"],
    );
    env.ok(
        "federation",
        &["create", "service", "clusterip", "e2e-service", "--tcp=80"],
    );
    let objects: [&[&str]; 4] = [
        &["ingresses.networking.k8s.io", "e2e-ingress"],
        &["replicasets.apps", "e2e-replicaset"],
        &["jobs.batch", "e2e-job"],
        &["services", "e2e-service"],
    ];
    for what in objects {
        assert!(env.get("federation", what).is_some(), "{what:?}");
        let mut delete = vec!["delete", "--wait=false"];
        delete.extend(what);
        env.ok("federation", &delete);
    }
    for what in objects {
        until_gone(&env, &["federation"], what);
    }
}

fn pod_template(app: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": "nginx"}]}})
}

/// Item 9 for every propagated type, item 15, and no fight with the members' controllers.
#[test]
fn every_type_is_created_updated_and_deleted_everywhere() {
    let env = Env::start();
    let _manager = start_with_members(&env);
    let meta = |name: &str| json!({"name": name, "namespace": "default"});
    // The test object of each type but the Secret, which kube-rs makes below.
    let objects = [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("crud-configmap"),
            "data": {"a": "1"}}),
        json!({"apiVersion": "extensions/v1beta1", "kind": "DaemonSet",
            "metadata": meta("crud-daemonset"),
            "spec": {"template": pod_template("crud-daemonset")}}),
        // With a revision, as one copied from a cluster has.
        json!({"apiVersion": "extensions/v1beta1", "kind": "Deployment",
            "metadata": {"name": "crud-deployment", "namespace": "default",
                "annotations": {"deployment.kubernetes.io/revision": "7"}},
            "spec": {"replicas": 4, "template": pod_template("crud-deployment")}}),
        json!({"apiVersion": "extensions/v1beta1", "kind": "ReplicaSet",
            "metadata": meta("crud-replicaset"),
            "spec": {"replicas": 2, "template": pod_template("crud-replicaset")}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "crud-namespace"}}),
        // Its target is not in the federation: its min and max are shared out (§4.6) and no
        // target is told.
        json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": meta("crud-hpa"),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "elsewhere"},
                "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 80}}),
        // A Pod in each member (§4.5 splits parallelism and completions).
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta("crud-job"),
            "spec": {"parallelism": 2, "completions": 2, "template": {"spec": {"containers": [{"name": "main", "image": "busybox"}],
                "restartPolicy": "Never"}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": meta("crud-service"),
            "spec": {"type": "NodePort", "selector": {"app": "crud-deployment"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        json!({"apiVersion": "extensions/v1beta1", "kind": "Ingress",
            "metadata": meta("crud-ingress"),
            "spec": {"backend": {"serviceName": "crud-service", "servicePort": 80}}}),
    ];
    for o in &objects {
        env.apply("federation", o);
    }
    let secrets: Api<Secret> = Api::namespaced(client(&env, "federation"), "default");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("crud-secret".into()),
            ..Default::default()
        },
        data: Some([("a".to_string(), ByteString(b"1".to_vec()))].into()),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    env.runtime
        .block_on(secrets.create(&PostParams::default(), &secret))
        .unwrap();
    let all: [&[&str]; 10] = [
        &["configmaps", "crud-configmap"],
        &["secrets", "crud-secret"],
        &["daemonsets.apps", "crud-daemonset"],
        &["deployments.apps", "crud-deployment"],
        &["replicasets.apps", "crud-replicaset"],
        &["namespaces", "crud-namespace"],
        &["horizontalpodautoscalers.autoscaling", "crud-hpa"],
        &["jobs.batch", "crud-job"],
        &["services", "crud-service"],
        &["ingresses.networking.k8s.io", "crud-ingress"],
    ];
    for what in all {
        until_in_members(&env, what, |_| true, "created");
    }
    // The namespaces every cluster has are nobody's to propagate: no conflict reported.
    let default = env.get("federation", &["namespaces", "default"]).unwrap();
    assert_eq!(annotation(&default, PROPAGATION), None, "{default}");
    // The seed-era objects reach the members in their current versions, whole.
    until_in_members(
        &env,
        &["deployments.apps", "crud-deployment"],
        |d| d["spec"]["selector"]["matchLabels"]["app"] == "crud-deployment",
        "with the selector apps/v1 requires",
    );
    until_in_members(
        &env,
        &["ingresses.networking.k8s.io", "crud-ingress"],
        |i| i["spec"]["defaultBackend"]["service"]["name"] == "crud-service",
        "with its backend as networking.k8s.io/v1 has it",
    );
    until_in_members(
        &env,
        &["secrets", "crud-secret"],
        |s| s["data"]["a"] == "MQ==" && s["type"] == "Opaque",
        "with its data and type",
    );

    // What members fill in themselves: the Service's address and node port; a Deployment's
    // status and revision annotation (the federated one's own is ignored, §4.3); a label a
    // member's own admission adds to a Job (written here as it would).
    let service = ["services", "crud-service"];
    let allocated = |m: &str| {
        let s = env.get(m, &service).unwrap();
        (
            s["spec"]["clusterIP"].clone(),
            s["spec"]["ports"][0]["nodePort"].clone(),
        )
    };
    let before: Vec<_> = MEMBERS.iter().map(|m| allocated(m)).collect();
    assert!(
        before
            .iter()
            .all(|(ip, port)| ip.is_string() && port.is_i64()),
        "{before:?}"
    );
    let job_labels = json!({"metadata": {"labels": {"team.example/added-by-member": "yes"}}});
    for m in MEMBERS {
        env.ok(
            m,
            &[
                "patch",
                "job",
                "crud-job",
                "--type=merge",
                "-p",
                &job_labels.to_string(),
            ],
        );
    }

    // Updated in the federation: every copy follows.
    for what in all {
        let mut annotate = vec!["annotate"];
        annotate.extend(what);
        annotate.push("federation.kubernetes.io/test-federation-crud-update=updated");
        env.ok("federation", &annotate);
    }
    for what in all {
        until_in_members(
            &env,
            what,
            |o| annotation(o, UPDATE) == Some("updated"),
            "updated",
        );
    }
    let after: Vec<_> = MEMBERS.iter().map(|m| allocated(m)).collect();
    assert_eq!(before, after, "the members' cluster IPs and node ports");
    until_in_members(
        &env,
        &["deployments.apps", "crud-deployment"],
        |d| d["status"]["availableReplicas"] == 2,
        "available",
    );
    until_in_members(
        &env,
        &["jobs.batch", "crud-job"],
        |j| j["status"]["succeeded"] == 1,
        "complete",
    );
    left_alone(
        &env,
        &[
            &["deployments.apps", "crud-deployment"],
            &["jobs.batch", "crud-job"],
            &service,
        ],
    );
    until_in_members(
        &env,
        &["deployments.apps", "crud-deployment"],
        |d| annotation(d, "deployment.kubernetes.io/revision") == Some("1"),
        "with the member's revision annotation",
    );
    until_in_members(
        &env,
        &["jobs.batch", "crud-job"],
        |j| {
            let labels = &j["metadata"]["labels"];
            labels["team.example/added-by-member"] == "yes" && labels["job-name"] == "crud-job"
        },
        "with the member's label and the federation's",
    );

    // Deleted with cascade (kubectl's default; the Secret with kube-rs, Background): gone
    // from the federation and from every member.
    for what in all.iter().filter(|w| w[0] != "secrets") {
        let mut delete = vec!["delete", "--wait=false"];
        delete.extend(*what);
        env.ok("federation", &delete);
    }
    env.runtime
        .block_on(secrets.delete("crud-secret", &DeleteParams::background()))
        .unwrap();
    for what in all {
        until_gone(&env, &EVERYWHERE, what);
    }

    // 15: a namespace deleted with propagationPolicy=Orphan goes from the federation with
    // what it holds; the namespace stays in the members (orphaned), and the contents,
    // deleted by the namespace's cleanup with cascade (§4.9), leave them.
    env.ok("federation", &["create", "namespace", "orphaned"]);
    env.apply(
        "federation",
        &json!({"apiVersion": "extensions/v1beta1", "kind": "ReplicaSet",
            "metadata": {"name": "inside", "namespace": "orphaned"},
            "spec": {"replicas": 1, "template": pod_template("inside")}}),
    );
    let inside = ["replicasets.apps", "inside", "-n", "orphaned"];
    until_in_members(&env, &inside, |_| true, "created");
    env.ok(
        "federation",
        &[
            "delete",
            "namespace",
            "orphaned",
            "--cascade=orphan",
            "--wait=false",
        ],
    );
    until_gone(&env, &["federation"], &["namespaces", "orphaned"]);
    assert!(env.get("federation", &inside).is_none());
    until_gone(&env, &MEMBERS, &inside);
    for m in MEMBERS {
        assert!(env.get(m, &["namespaces", "orphaned"]).is_some(), "{m}");
    }
}

/// Items 22 to 26.
#[test]
fn services_follow_the_deletion_contract() {
    let env = Env::start();
    let _manager = start_with_members(&env);
    let names = ["svc-cascade", "svc-orphan", "svc-raw", "svc-empty"];
    for name in names {
        env.apply(
            "federation",
            &json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"type": "NodePort", "selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        );
    }
    // 22: created in every member, each allocating its own address and node port.
    for name in names {
        until_in_members(&env, &["services", name], |_| true, "created");
    }
    let allocated = |m: &str, name: &str| {
        let s = env.get(m, &["services", name]).unwrap();
        (
            s["spec"]["clusterIP"].clone(),
            s["spec"]["ports"][0]["nodePort"].clone(),
        )
    };
    let before: Vec<_> = MEMBERS
        .iter()
        .map(|m| allocated(m, "svc-cascade"))
        .collect();
    assert!(
        before
            .iter()
            .all(|(ip, port)| ip.is_string() && port.is_i64()),
        "{before:?}"
    );

    // Updated in the federation: a label and a second port reach the members, which keep
    // their address and first node port, and are not rewritten again afterwards.
    let update = json!({"metadata": {"labels": {"tier": "front"}},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080},
            {"name": "https", "port": 443, "targetPort": 8443}]}});
    env.ok(
        "federation",
        &[
            "patch",
            "service",
            "svc-cascade",
            "--type=merge",
            "-p",
            &update.to_string(),
        ],
    );
    until_in_members(
        &env,
        &["services", "svc-cascade"],
        |s| {
            s["metadata"]["labels"]["tier"] == "front"
                && s["spec"]["ports"][1]["port"] == 443
                && s["spec"]["ports"][1]["nodePort"].is_i64()
        },
        "updated",
    );
    let after: Vec<_> = MEMBERS
        .iter()
        .map(|m| allocated(m, "svc-cascade"))
        .collect();
    assert_eq!(before, after, "the members' cluster IPs and node ports");
    left_alone(&env, &[&["services", "svc-cascade"]]);

    // 26: deleted directly in a member, it is put back.
    let uid = |m: &str| {
        env.get(m, &["services", "svc-cascade"])
            .map(|s| s["metadata"]["uid"].clone())
    };
    let first = uid("gondor");
    env.ok("gondor", &["delete", "service", "svc-cascade"]);
    until(
        || uid("gondor").is_some_and(|u| Some(&u) != first.as_ref()),
        "svc-cascade back in gondor",
    );

    // 23: OrphanDependents=false (a DeleteOptions body, with kube-rs): gone everywhere.
    let kube = client(&env, "federation");
    let mut request = kube::core::Request::new("/api/v1/namespaces/default/services")
        .delete("svc-cascade", &DeleteParams::default())
        .unwrap();
    *request.body_mut() =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "orphanDependents": false})
            .to_string()
            .into_bytes();
    env.runtime.block_on(kube.request_text(request)).unwrap();
    // 24: orphan; 25: no options at all (a bare DELETE, and kube-rs's empty options).
    env.ok(
        "federation",
        &[
            "delete",
            "service",
            "svc-orphan",
            "--cascade=orphan",
            "--wait=false",
        ],
    );
    env.ok(
        "federation",
        &[
            "delete",
            "--raw",
            "/api/v1/namespaces/default/services/svc-raw",
        ],
    );
    let services: Api<Service> = Api::namespaced(kube, "default");
    env.runtime
        .block_on(services.delete("svc-empty", &DeleteParams::default()))
        .unwrap();
    until_gone(&env, &EVERYWHERE, &["services", "svc-cascade"]);
    for name in ["svc-orphan", "svc-raw", "svc-empty"] {
        until_gone(&env, &["federation"], &["services", name]);
        for m in MEMBERS {
            assert!(env.get(m, &["services", name]).is_some(), "{m}/{name} kept");
        }
    }
}
