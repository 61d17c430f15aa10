//! Two controller-manager replicas with `--leader-elect`: one holds the Lease in the
//! federation API and acts; killed with SIGKILL, the other takes the Lease over once it
//! expires and carries on (the cluster it watches still turns Offline when it stops).

mod support;

use support::{Env, until};

#[test]
fn a_standby_replica_takes_over_from_a_killed_leader() {
    let mut env = Env::start();
    env.credentials("gondor-credentials", "gondor");
    let gondor = env.fleet.get("gondor").unwrap().server();
    env.cluster("gondor", &gondor, "gondor-credentials");
    let flags = [
        "--leader-elect",
        "--leader-elect-lease-duration=2s",
        "--leader-elect-renew-deadline=1500ms",
        "--leader-elect-retry-period=300ms",
        "--cluster-monitor-period=1s",
        "--port=0",
    ];
    let mut first = support::manager(&env, &flags);
    let second = support::manager(&env, &flags);
    let lease = |path: &str| {
        env.kubectl(
            "federation",
            &[
                "-n",
                "federation-only",
                "get",
                "lease",
                "federation-controller-manager-leader-election",
                "-o",
                &format!("jsonpath={path}"),
            ],
        )
        .1
    };
    let pid_of = |holder: &str| {
        holder
            .rsplit('_')
            .next()
            .and_then(|p| p.parse::<u32>().ok())
    };
    until(
        || pid_of(&lease("{.spec.holderIdentity}")).is_some(),
        "a leader",
    );
    env.until_status(&[("gondor", "Ready")]);
    let leader = pid_of(&lease("{.spec.holderIdentity}")).unwrap();
    assert!(leader == first.0.id() || leader == second.0.id());
    // Kill the leader; the standby takes over.
    let (killed, standby) = if leader == first.0.id() {
        (&mut first, second.0.id())
    } else {
        (&mut { second }, first.0.id())
    };
    killed.0.kill().unwrap();
    killed.0.wait().unwrap();
    until(
        || pid_of(&lease("{.spec.holderIdentity}")) == Some(standby),
        "the standby leading",
    );
    assert_eq!(lease("{.spec.leaseTransitions}"), "1");
    assert!(env.fleet.stop_cluster("gondor"));
    env.until_status(&[("gondor", "Offline")]);
}
