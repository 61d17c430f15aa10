//! `kubefed join` and `unjoin` against local clusters and a federation API server: the
//! objects of spec §3 created and removed, checked one by one with kubectl; both credential
//! paths; clear one-line errors for a missing context, an existing service account, an
//! unreachable cluster and an invalid name; a join that fails midway leaves nothing behind.

use std::process::Command;

use fellowship_testbed::{Env, free_port};
use serde_json::json;

fn kubefed(env: &Env, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubefed"))
        .args(args)
        .arg(format!("--kubeconfig={}", env.config.display()))
        .arg("--host-cluster-context=rivendell")
        .arg("--context=federation")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn get(env: &Env, context: &str, args: &[&str]) -> String {
    let (ok, out) = env.kubectl(context, args);
    assert!(ok, "{context}: kubectl {args:?}: {out}");
    out
}

/// A field of the federation's Cluster for gondor.
fn gondor_cluster(env: &Env, jsonpath: &str) -> String {
    get(
        env,
        "federation",
        &["get", "cluster", "gondor", "-o", jsonpath],
    )
}

/// The keys of a credentials Secret in the host cluster.
fn secret_keys(env: &Env, name: &str) -> String {
    get(
        env,
        "rivendell",
        &[
            "-n",
            "federation-system",
            "get",
            "secret",
            name,
            "-o",
            "jsonpath={.data}",
        ],
    )
}

const ROLE: &str = "federation-controller-manager:fellowship-gondor-rivendell";

#[test]
fn join_and_unjoin_create_and_remove_exactly_their_objects() {
    let env = Env::start();
    // What kubefed init leaves in the host: the control plane's record of the federation.
    env.apply(
        "rivendell",
        &json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "fellowship-controller-manager", "namespace": "federation-system",
                "annotations": {"federation.alpha.kubernetes.io/federation-name": "fellowship", "federations": "fellowship=example.com",
                    "dns-provider": "coredns", "dns-zone-name": "example.com", "nameserver": "10.0.0.53:53"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "federated-cluster"}},
                "template": {"metadata": {"labels": {"app": "federated-cluster"}}, "spec": {"containers": [{"name": "controller-manager", "image": "fellowship"}]}}},
        }),
    );

    let (ok, out, err) = kubefed(&env, &["join", "gondor"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("cluster \"gondor\" created"), "{out}");
    // The joining cluster: namespace, service account, role and binding, kube-dns entry.
    let ns = get(
        &env,
        "gondor",
        &[
            "get",
            "namespace",
            "federation-system",
            "-o",
            "jsonpath={.metadata.annotations}",
        ],
    );
    assert!(
        ns.contains(r#""federation.alpha.kubernetes.io/cluster-name":"gondor""#),
        "{ns}"
    );
    assert!(
        ns.contains(r#""federation.alpha.kubernetes.io/federation-name":"fellowship""#),
        "{ns}"
    );
    get(
        &env,
        "gondor",
        &[
            "-n",
            "federation-system",
            "get",
            "serviceaccount",
            "gondor-rivendell",
        ],
    );
    let rules = get(&env, "gondor", &["get", "clusterrole", ROLE, "-o", "json"]);
    assert!(
        !rules.contains(r#""*""#),
        "least privilege, not everything: {rules}"
    );
    assert!(
        rules.contains("configmaps") && rules.contains("/healthz"),
        "{rules}"
    );
    let subject = get(
        &env,
        "gondor",
        &[
            "get",
            "clusterrolebinding",
            ROLE,
            "-o",
            "jsonpath={.subjects[0].name} {.roleRef.name}",
        ],
    );
    assert_eq!(subject, format!("gondor-rivendell {ROLE}"));
    let dns = || {
        get(
            &env,
            "gondor",
            &[
                "-n",
                "kube-system",
                "get",
                "configmap",
                "kube-dns",
                "-o",
                "jsonpath={.data.federations}|{.data.stubDomains}",
            ],
        )
    };
    // With the CoreDNS provider, the zone is sent to the federation's CoreDNS.
    assert_eq!(
        dns(),
        r#"fellowship=example.com|{"example.com":["10.0.0.53:53"]}"#
    );
    // The federation: the Cluster, pointing at the credentials in the host.
    let secret = gondor_cluster(&env, "jsonpath={.spec.secretRef.name}");
    assert!(
        secret.starts_with("gondor-") && secret.len() == "gondor-".len() + 5,
        "{secret}"
    );
    let server = gondor_cluster(
        &env,
        "jsonpath={.spec.serverAddressByClientCIDRs[0].serverAddress}",
    );
    assert_eq!(server, env.fleet.get("gondor").unwrap().server());
    let annotations = gondor_cluster(&env, "jsonpath={.metadata.annotations}");
    assert!(
        annotations.contains("servive-account-name") && annotations.contains(ROLE),
        "{annotations}"
    );
    // The host: the token and CA that reach the member.
    let keys = secret_keys(&env, &secret);
    assert!(
        keys.contains("\"token\"") && keys.contains("\"ca.crt\""),
        "{keys}"
    );

    // Errors: one line each, nothing changed.
    let (ok, _, err) = kubefed(&env, &["join", "gondor"]);
    assert!(
        !ok && err.contains("service account already exists in joining cluster"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (ok, _, err) = kubefed(&env, &["join", "isengard"]);
    assert!(
        !ok && err.contains(r#"context "isengard" is not in"#),
        "{err}"
    );
    let mut contexts = env.fleet.contexts();
    contexts.retain(|c| c.name == "rohan");
    contexts[0].name = "mordor".into();
    contexts[0].server = format!("https://127.0.0.1:{}", free_port());
    fellowship_localcluster::kubeconfig::merge(&env.config, &contexts, None).unwrap();
    let (ok, _, err) = kubefed(&env, &["join", "mordor"]);
    assert!(
        !ok && err.contains("mordor") && err.trim().lines().count() == 1,
        "{err}"
    );
    let (_, clusters) = env.kubectl("federation", &["get", "clusters", "-o", "name"]);
    assert_eq!(clusters.trim(), "cluster.federation/gondor");
    // An unjoin that cannot reach the host cluster fails before it changes anything.
    let out = Command::new(env!("CARGO_BIN_EXE_kubefed"))
        .args(["unjoin", "gondor", "--host-cluster-context=mordor"])
        .arg("--context=federation")
        .arg(format!("--kubeconfig={}", env.config.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.trim().lines().count() == 1,
        "{err}"
    );
    gondor_cluster(&env, "jsonpath={.metadata.name}");

    let (ok, _, err) = kubefed(&env, &["join", "my.cluster", "--cluster-context=rohan"]);
    assert!(
        !ok && err.contains(r#"cluster "my.cluster" is not a valid name"#),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A join that fails midway (its Secret's name is taken in the host) removes what it
    // made: nothing stops it from being tried again.
    let taken = format!("--secret-name={secret}");
    let (ok, out, err) = kubefed(&env, &["join", "rohan", &taken]);
    assert!(!ok && err.contains("creating secret"), "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        out.contains("Removed service account rohan-rivendell again"),
        "{out}"
    );
    for args in [
        vec![
            "-n",
            "federation-system",
            "get",
            "serviceaccount",
            "rohan-rivendell",
        ],
        vec![
            "get",
            "clusterrole",
            "federation-controller-manager:fellowship-rohan-rivendell",
        ],
        vec![
            "get",
            "clusterrolebinding",
            "federation-controller-manager:fellowship-rohan-rivendell",
        ],
    ] {
        let (exists, _) = env.kubectl("rohan", &args);
        assert!(!exists, "the failed join left {args:?}");
    }

    // The kubeconfig credential path: no RBAC objects, the flattened context instead.
    let config = env.config.display().to_string();
    let (ok, out, err) = kubefed(
        &env,
        &[
            "join",
            "rohan",
            "--secret-name=rohan-credentials",
            &format!("--credentials-kubeconfig={config}"),
        ],
    );
    assert!(ok, "{out}{err}");
    let keys = secret_keys(&env, "rohan-credentials");
    assert!(keys.contains("\"kubeconfig\""), "{keys}");
    let (exists, _) = env.kubectl(
        "rohan",
        &[
            "-n",
            "federation-system",
            "get",
            "serviceaccount",
            "rohan-rivendell",
        ],
    );
    assert!(!exists);

    // Unjoin removes what the join made, and says what it leaves.
    let (ok, out, err) = kubefed(&env, &["unjoin", "gondor"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("Successfully removed cluster \"gondor\" from federation"),
        "{out}"
    );
    assert!(out.contains("Left in the cluster"), "{out}");
    for (context, args) in [
        ("federation", vec!["get", "cluster", "gondor"]),
        (
            "rivendell",
            vec!["-n", "federation-system", "get", "secret", secret.as_str()],
        ),
        (
            "gondor",
            vec![
                "-n",
                "federation-system",
                "get",
                "serviceaccount",
                "gondor-rivendell",
            ],
        ),
        ("gondor", vec!["get", "clusterrole", ROLE]),
        ("gondor", vec!["get", "clusterrolebinding", ROLE]),
    ] {
        let (exists, out) = env.kubectl(context, &args);
        assert!(!exists, "{context} {args:?} is still there: {out}");
    }
    assert_eq!(dns(), "|");
    let (ok, out, _) = kubefed(&env, &["unjoin", "gondor"]);
    assert!(ok && out.contains("not in the federation"), "{out}");
}
