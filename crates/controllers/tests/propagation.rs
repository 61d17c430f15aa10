//! Propagation against real servers: ConfigMaps created, changed and deleted in the
//! federation reach the Ready members (and only those the cluster selector picks), are put
//! back when edited or deleted in a member, leave a same-named object Fellowship did not
//! create alone, and follow the §6 deletion contract (cascade with kubectl's default,
//! orphaned copies with --cascade=orphan).

mod support;

use support::{Env, until};

/// gondor and rohan registered with their credentials.
fn join(env: &Env) {
    for member in ["gondor", "rohan"] {
        env.join(member);
    }
}

fn data(env: &Env, context: &str, name: &str) -> Option<String> {
    let (ok, out) = env.kubectl(
        context,
        &["get", "configmap", name, "-o", "jsonpath={.data.a}"],
    );
    ok.then_some(out)
}

fn until_data(env: &Env, context: &str, name: &str, want: Option<&str>) {
    until(
        || data(env, context, name).as_deref() == want,
        &format!("{context}/{name} = {want:?}"),
    );
}

#[test]
fn configmaps_follow_the_federation_and_the_selector() {
    let env = Env::start();
    join(&env);
    let fed = |args: &[&str]| {
        let (ok, out) = env.kubectl("federation", args);
        assert!(ok, "{args:?}: {out}");
        out
    };
    fed(&["label", "cluster", "gondor", "pci=true"]);
    let _manager = support::manager(&env, &["--cluster-monitor-period=1s", "--port=0"]);
    env.until_status(&[("gondor", "Ready"), ("rohan", "Ready")]);

    // Created, changed: every Ready member follows; the copy is marked as Fellowship's.
    fed(&["create", "configmap", "game", "--from-literal=a=1"]);
    until_data(&env, "gondor", "game", Some("1"));
    until_data(&env, "rohan", "game", Some("1"));
    let (_, marker) = env.kubectl(
        "gondor",
        &[
            "get",
            "cm",
            "game",
            "-o",
            "jsonpath={.metadata.annotations}",
        ],
    );
    assert!(
        marker.contains("federation.fellowship.io/managed"),
        "{marker}"
    );
    until(
        || {
            let (_, f) = env.kubectl(
                "federation",
                &["get", "cm", "game", "-o", "jsonpath={.metadata.finalizers}"],
            );
            f.contains("delete-from-underlying-clusters") && f.contains("orphan")
        },
        "the federation's finalizers on game",
    );
    fed(&[
        "patch",
        "configmap",
        "game",
        "--type=merge",
        "-p",
        r#"{"data":{"a":"2"}}"#,
    ]);
    until_data(&env, "gondor", "game", Some("2"));
    until_data(&env, "rohan", "game", Some("2"));

    // Edited or deleted in a member: put back.
    env.kubectl(
        "gondor",
        &[
            "patch",
            "configmap",
            "game",
            "--type=merge",
            "-p",
            r#"{"data":{"a":"drift"}}"#,
        ],
    );
    env.kubectl("rohan", &["delete", "configmap", "game"]);
    until_data(&env, "gondor", "game", Some("2"));
    until_data(&env, "rohan", "game", Some("2"));

    // The selector picks clusters by label, and follows the labels.
    env.apply("federation", &serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "pci-only", "namespace": "default",
            "annotations": {"federation.alpha.kubernetes.io/cluster-selector": r#"[{"key":"pci","operator":"In","values":["true"]}]"#}},
        "data": {"a": "p"},
    }));
    until_data(&env, "gondor", "pci-only", Some("p"));
    assert_eq!(data(&env, "rohan", "pci-only"), None);
    fed(&["label", "cluster", "rohan", "pci=true"]);
    until_data(&env, "rohan", "pci-only", Some("p"));
    fed(&["label", "cluster", "gondor", "pci-"]);
    until_data(&env, "gondor", "pci-only", None);

    // An invalid selector propagates nothing and removes nothing.
    env.apply("federation", &serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "broken", "namespace": "default",
            "annotations": {"federation.alpha.kubernetes.io/cluster-selector": "[{\"key\":\"pci\",\"operator\":\"Near\"}]"}},
        "data": {"a": "b"},
    }));
    // A same-named object Fellowship did not make is left as it is.
    env.kubectl(
        "gondor",
        &["create", "configmap", "theirs", "--from-literal=a=mine"],
    );
    fed(&[
        "create",
        "configmap",
        "theirs",
        "--from-literal=a=federated",
    ]);
    until_data(&env, "rohan", "theirs", Some("federated"));
    assert_eq!(data(&env, "gondor", "theirs").as_deref(), Some("mine"));
    // Each object says where it is, and why not: in its annotation and in events.
    until(
        || {
            let (_, state) = env.kubectl(
                "federation",
                &[
                    "get",
                    "cm",
                    "theirs",
                    "-o",
                    r"jsonpath={.metadata.annotations.federation\.fellowship\.io/propagation}",
                ],
            );
            state.contains(r#""gondor":"Conflict"#) && state.contains(r#""rohan":"Synced""#)
        },
        "the propagation state of theirs",
    );
    let (_, described) = env.kubectl("federation", &["describe", "cm", "theirs"]);
    assert!(
        described.contains("Conflict") && described.contains("cluster gondor"),
        "{described}"
    );
    let (_, copy) = env.kubectl(
        "rohan",
        &[
            "get",
            "cm",
            "theirs",
            "-o",
            "jsonpath={.metadata.annotations}",
        ],
    );
    assert!(
        !copy.contains("propagation"),
        "the state stays in the federation: {copy}"
    );
    // Asked to adopt, the federation takes it over.
    fed(&[
        "annotate",
        "configmap",
        "theirs",
        "federation.fellowship.io/adopt=true",
    ]);
    until_data(&env, "gondor", "theirs", Some("federated"));
    assert_eq!(data(&env, "gondor", "broken"), None);
    assert_eq!(data(&env, "rohan", "broken"), None);

    // kubectl delete cascades; --cascade=orphan leaves the copies.
    fed(&["delete", "configmap", "game"]);
    until_data(&env, "gondor", "game", None);
    until_data(&env, "rohan", "game", None);
    fed(&["delete", "configmap", "pci-only", "--cascade=orphan"]);
    until(
        || !env.kubectl("federation", &["get", "cm", "pci-only"]).0,
        "pci-only gone from the federation",
    );
    assert_eq!(data(&env, "rohan", "pci-only").as_deref(), Some("p"));
}

/// kill -9 of the controller manager after a burst of creates, deletions made while it is
/// down, then a restart: every member converges on exactly the federation's objects.
#[test]
fn a_killed_manager_resumes_without_duplicates_or_lost_deletions() {
    let env = Env::start();
    join(&env);
    let flags = ["--cluster-monitor-period=1s", "--port=0"];
    let mut first = support::manager(&env, &flags);
    env.until_status(&[("gondor", "Ready"), ("rohan", "Ready")]);
    let items: Vec<serde_json::Value> = (0..100)
        .map(|i| serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i:03}"), "namespace": "default"}, "data": {"i": i.to_string()}}))
        .collect();
    env.apply(
        "federation",
        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}),
    );
    let count = |context: &str, args: &[&str]| {
        let (_, out) = env.kubectl(context, args);
        out.lines().filter(|l| l.contains("cm-")).count()
    };
    let with_finalizers =
        "jsonpath={range .items[?(@.metadata.finalizers)]}{.metadata.name}{\"\\n\"}{end}";
    until(
        || count("federation", &["get", "cm", "-o", with_finalizers]) == 100,
        "finalizers on every ConfigMap",
    );
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    // Deleted while no controller runs: held by the finalizers until one comes back.
    let doomed: Vec<String> = (0..10).map(|i| format!("cm-{i:03}")).collect();
    let mut args = vec!["delete", "cm", "--wait=false"];
    args.extend(doomed.iter().map(String::as_str));
    let (ok, out) = env.kubectl("federation", &args);
    assert!(ok, "{out}");

    let _second = support::manager(&env, &flags);
    for member in ["gondor", "rohan"] {
        until(
            || count(member, &["get", "cm", "-o", "name"]) == 90,
            &format!("exactly the 90 remaining ConfigMaps in {member}"),
        );
        let (_, names) = env.kubectl(member, &["get", "cm", "-o", "name"]);
        assert!(
            doomed.iter().all(|d| !names.contains(d.as_str())),
            "{member}: {names}"
        );
    }
    until(
        || count("federation", &["get", "cm", "-o", "name"]) == 90,
        "the deleted ones gone from the federation",
    );
}
