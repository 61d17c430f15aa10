//! A member cluster that stops (its server gone, its connections cut) turns Offline while
//! the other keeps converging: creations, updates, and the Ready member's share of
//! cascading deletions go on. When it comes back with its old content it is brought up to
//! date: what was created meanwhile appears, the update lands, the deleted objects leave it,
//! and only then do those deletions complete in the federation.

mod support;

use serde_json::json;
use support::{Env, until};

fn configmaps(env: &Env, context: &str) -> Vec<(String, String)> {
    let (ok, out) = env.kubectl(
        context,
        &[
            "get",
            "configmaps",
            "-l",
            "batch",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name}={.data.v}{"\n"}{end}"#,
        ],
    );
    if !ok {
        return Vec::new();
    }
    let mut list: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    list.sort();
    list
}

fn apply_batch(env: &Env, range: std::ops::Range<usize>, value: &str) {
    let items: Vec<_> = range
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i:02}"), "labels": {"batch": "1"}},
                "data": {"v": value}})
        })
        .collect();
    env.apply(
        "federation",
        &json!({"apiVersion": "v1", "kind": "List", "items": items}),
    );
}

#[test]
fn a_stopped_member_delays_no_one_and_converges_when_it_returns() {
    let mut env = Env::start();
    for member in ["gondor", "rohan"] {
        let secret = format!("{member}-credentials");
        env.credentials(&secret, member);
        env.cluster(member, &env.fleet.get(member).unwrap().server(), &secret);
    }
    let _manager = support::manager(&env, &["--cluster-monitor-period=1s", "--port=0"]);
    env.until_status(&[("gondor", "Ready"), ("rohan", "Ready")]);
    apply_batch(&env, 0..20, "old");
    let want = |range: std::ops::Range<usize>, changed: usize| -> Vec<(String, String)> {
        range
            .map(|i| {
                let v = if i == changed { "new" } else { "old" };
                (format!("cm-{i:02}"), v.to_string())
            })
            .collect()
    };
    for member in ["gondor", "rohan"] {
        until(
            || configmaps(&env, member) == want(0..20, usize::MAX),
            &format!("20 copies in {member}"),
        );
    }

    assert!(env.fleet.pause_cluster("rohan"));
    env.until_status(&[("gondor", "Ready"), ("rohan", "Offline")]);
    // Meanwhile: 20 more, one changed, five deleted with kubectl's cascade.
    apply_batch(&env, 20..40, "old");
    let (ok, out) = env.kubectl(
        "federation",
        &["patch", "cm", "cm-07", "-p", r#"{"data":{"v":"new"}}"#],
    );
    assert!(ok, "{out}");
    let (ok, out) = env.kubectl(
        "federation",
        &[
            "delete",
            "cm",
            "cm-00",
            "cm-01",
            "cm-02",
            "cm-03",
            "cm-04",
            "--wait=false",
        ],
    );
    assert!(ok, "{out}");
    until(
        || configmaps(&env, "gondor") == want(5..40, 7),
        "gondor converging while rohan is down",
    );
    // The deletions wait for rohan: its copies cannot be removed yet.
    let (_, left) = env.kubectl(
        "federation",
        &[
            "get",
            "cm",
            "cm-00",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ],
    );
    assert!(
        !left.is_empty(),
        "cm-00 left the federation with rohan down"
    );

    env.runtime
        .block_on(env.fleet.resume_cluster("rohan"))
        .unwrap();
    env.until_status(&[("gondor", "Ready"), ("rohan", "Ready")]);
    until(
        || configmaps(&env, "rohan") == want(5..40, 7),
        "rohan brought up to date",
    );
    until(
        || configmaps(&env, "federation") == want(5..40, 7),
        "the cascading deletions completing in the federation",
    );
    assert_eq!(configmaps(&env, "gondor"), want(5..40, 7));
}
