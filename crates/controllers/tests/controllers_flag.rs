//! `--controllers` (spec §4.2): a type turned off is not propagated while the others are
//! (through a rate-limited federation client, `--federated-api-qps`); an unknown key or an
//! impossible request stops the start with one clear line, as does a content type the
//! federation API does not speak. The sync controller's progress shows in /metrics.

mod support;

use std::process::Command;

use support::{Env, free_port, http_get, until};

fn start_error(env: &Env, flag: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_federation-controller-manager"))
        .arg(format!("--kubeconfig={}", env.config.display()))
        .arg("--context=federation")
        .arg(format!("--host-kubeconfig={}", env.config.display()))
        .arg("--host-context=rivendell")
        .arg("--port=0")
        .arg(flag)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{flag} was accepted");
    // clap's usual shape: the error on its first line, a hint after.
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines().next().unwrap_or_default().to_string()
}

#[test]
fn controllers_turn_types_on_and_off() {
    let env = Env::start();
    let error = start_error(&env, "--controllers=configmaps=true,bogus=false");
    assert!(error.contains("\"bogus\" is not a controller"), "{error}");
    let error = start_error(&env, "--controllers=secrets=maybe");
    assert!(error.contains("neither true nor false"), "{error}");
    let error = start_error(&env, "--kube-api-content-type=text/plain");
    assert!(error.contains("expected application/json or"), "{error}");

    env.credentials("gondor-credentials", "gondor");
    env.cluster(
        "gondor",
        &env.fleet.get("gondor").unwrap().server(),
        "gondor-credentials",
    );
    let port = free_port();
    let _manager = support::manager(
        &env,
        &[
            "--cluster-monitor-period=1s",
            &format!("--port={port}"),
            "--address=127.0.0.1",
            "--controllers=secrets=false,configmaps=true",
            // Its federation client rate-limited: requests and watches pass through.
            "--federated-api-qps=50",
            "--federated-api-burst=10",
        ],
    );
    env.until_status(&[("gondor", "Ready")]);
    for args in [
        [
            "create",
            "secret",
            "generic",
            "hidden",
            "--from-literal=a=1",
        ]
        .as_slice(),
        &["create", "configmap", "shown", "--from-literal=a=1"],
    ] {
        let (ok, out) = env.kubectl("federation", args);
        assert!(ok, "{out}");
    }
    until(
        || env.kubectl("gondor", &["get", "configmap", "shown"]).0,
        "the ConfigMap in gondor",
    );
    // The secret was created first and its controller would have handled it by now.
    let (found, _) = env.kubectl("gondor", &["get", "secret", "hidden"]);
    assert!(!found, "a turned-off type was propagated");
    let (_, finalizers) = env.kubectl(
        "federation",
        &[
            "get",
            "secret",
            "hidden",
            "-o",
            "jsonpath={.metadata.finalizers}",
        ],
    );
    assert!(finalizers.is_empty(), "{finalizers}");

    let metrics = http_get(port, "/metrics");
    let reconciles = metrics
        .lines()
        .find(|l| l.starts_with("federation_sync_reconciles_total{cluster=\"gondor\"}"))
        .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(reconciles >= 1, "{metrics}");
    assert!(
        metrics.contains("federation_sync_pending{cluster=\"gondor\"}"),
        "{metrics}"
    );
}
