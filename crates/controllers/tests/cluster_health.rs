//! The cluster controller against real servers: a federation API server and local member
//! clusters on loopback (in this process), the `federation-controller-manager` binary, and
//! `kubectl get clusters` to read the result. Members whose credentials work turn Ready with
//! their zones and region; a member that is not there is Offline; one whose Secret appears
//! late turns Ready once it does (the original never retried); a member that stops turns
//! Offline while the others stay Ready. A cluster joined again is probed at once.

mod support;

use support::{Env, free_port, http_get};

#[test]
fn members_turn_ready_offline_and_ready_again() {
    let mut env = Env::start();
    // Credentials for gondor now, for rohan later; mordor answers nobody.
    env.credentials("gondor-credentials", "gondor");
    env.credentials("mordor-credentials", "gondor");
    let nowhere = format!("https://127.0.0.1:{}", free_port());
    let gondor = env.fleet.get("gondor").unwrap().server();
    let rohan = env.fleet.get("rohan").unwrap().server();
    env.cluster("gondor", &gondor, "gondor-credentials");
    env.cluster("rohan", &rohan, "rohan-credentials");
    env.cluster("mordor", &nowhere, "mordor-credentials");

    let metrics_port = free_port();
    let _manager = support::manager(
        &env,
        &[
            "--cluster-monitor-period=1s",
            "--address=127.0.0.1",
            &format!("--port={metrics_port}"),
        ],
    );
    env.until_status(&[
        ("gondor", "Ready"),
        ("rohan", "Offline"),
        ("mordor", "Offline"),
    ]);
    let (_, reason) = env.kubectl(
        "federation",
        &[
            "get",
            "cluster",
            "rohan",
            "-o",
            "jsonpath={.status.conditions[0].message}",
        ],
    );
    assert!(reason.contains("rohan-credentials"), "{reason}");
    let (_, zones) = env.kubectl(
        "federation",
        &[
            "get",
            "cluster",
            "gondor",
            "-o",
            "jsonpath={.status.zones} {.status.region}",
        ],
    );
    assert_eq!(
        zones,
        r#"["us-west1-a","us-west1-b","us-west1-c"] us-west1"#
    );
    let metrics = http_get(metrics_port, "/metrics");
    assert!(
        metrics.contains(r#"federation_cluster_ready{cluster="gondor"} 1"#)
            && metrics.contains(
                r#"federation_cluster_probes_total{cluster="rohan",result="no_credentials"}"#
            ),
        "{metrics}"
    );
    assert!(http_get(metrics_port, "/healthz").ends_with("ok"));

    // The Secret appears late: the next probe uses it.
    env.credentials("rohan-credentials", "rohan");
    env.until_status(&[
        ("gondor", "Ready"),
        ("rohan", "Ready"),
        ("mordor", "Offline"),
    ]);

    // A member stops: it alone turns Offline.
    assert!(env.fleet.stop_cluster("gondor"));
    env.until_status(&[("gondor", "Offline"), ("rohan", "Ready")]);
    let (_, reason) = env.kubectl(
        "federation",
        &[
            "get",
            "cluster",
            "gondor",
            "-o",
            "jsonpath={.status.conditions[0].reason}",
        ],
    );
    assert_eq!(reason, "ClusterNotReachable");
}

/// A cluster unjoined and joined again under the same name is probed at once, not at the
/// next monitor period (an hour here).
#[test]
fn a_cluster_joined_again_is_probed_at_once() {
    let env = Env::start();
    env.credentials("gondor-credentials", "gondor");
    let gondor = env.fleet.get("gondor").unwrap().server();
    env.cluster("gondor", &gondor, "gondor-credentials");
    let _manager = support::manager(&env, &["--cluster-monitor-period=1h", "--port=0"]);
    env.until_status(&[("gondor", "Ready")]);
    let (ok, out) = env.kubectl("federation", &["delete", "cluster", "gondor"]);
    assert!(ok, "{out}");
    env.cluster("gondor", &gondor, "gondor-credentials");
    env.until_status(&[("gondor", "Ready")]);
}
