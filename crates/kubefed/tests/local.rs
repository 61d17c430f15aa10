//! `kubefed local up` starts a working federation (three joined member clusters that turn
//! Ready, propagation) and `kubefed local down` stops every process and removes the
//! contexts.

use std::path::Path;
use std::process::Command;

use fellowship_testbed::{kubectl, until};

fn kubefed(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubefed"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn local_up_runs_a_federation_and_down_stops_it() {
    // The processes kubefed starts are the workspace's other binaries, beside it.
    let built = Command::new(env!("CARGO"))
        .args([
            "build",
            "--bins",
            "-p",
            "fellowship-apiserver",
            "-p",
            "fellowship-localcluster",
            "-p",
            "fellowship-controllers",
        ])
        .status()
        .unwrap();
    assert!(built.success());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let config = dir.path().join("kubeconfig");
    let flags = [
        format!("--dir={state}"),
        format!("--kubeconfig={}", config.display()),
    ];
    let (ok, out) = kubefed(&["local", "up", &flags[0], &flags[1]]);
    assert!(ok, "{out}");
    assert!(
        out.contains("kubectl --context=federation get clusters"),
        "{out}"
    );
    let (again, out) = kubefed(&["local", "up", &flags[0], &flags[1]]);
    assert!(!again && out.contains("already running"), "{out}");

    until(
        || {
            let (_, table) = kubectl(&config, "federation", &["get", "clusters"]);
            table.lines().filter(|l| l.contains(" Ready ")).count() == 3
        },
        "three Ready clusters",
    );
    let (ok, out) = kubectl(
        &config,
        "federation",
        &[
            "create",
            "configmap",
            "hello",
            "--from-literal=greeting=mae-govannen",
        ],
    );
    assert!(ok, "{out}");
    until(
        || {
            kubectl(
                &config,
                "rohan",
                &[
                    "get",
                    "configmap",
                    "hello",
                    "-o",
                    "jsonpath={.data.greeting}",
                ],
            )
            .1 == "mae-govannen"
        },
        "the ConfigMap in rohan",
    );

    // The federation API server killed and started again as it was: the controller
    // manager, not restarted, goes on propagating, and a state it could not write while the
    // server was down (gondor's copy of hello no longer carries the federation's marker)
    // is written once the server is back.
    let pids = std::fs::read_to_string(Path::new(&state).join("pids")).unwrap();
    let apiserver = pids.lines().nth(1).unwrap();
    let command: Vec<String> = std::fs::read(format!("/proc/{apiserver}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).to_string())
        .collect();
    assert!(command[0].ends_with("federation-apiserver"), "{command:?}");
    let status = Command::new("kill")
        .args(["-KILL", apiserver])
        .status()
        .unwrap();
    assert!(status.success());
    until(
        || !Path::new(&format!("/proc/{apiserver}")).exists(),
        "the killed API server gone",
    );
    let marker = |value: &str| {
        let annotation = format!("federation.fellowship.io/managed{value}");
        let (ok, out) = kubectl(
            &config,
            "gondor",
            &["annotate", "--overwrite", "configmap", "hello", &annotation],
        );
        assert!(ok, "{out}");
    };
    marker("-");
    // Time for the controller manager to see it and fail to report it.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let mut restarted = Command::new(&command[0])
        .args(&command[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    until(
        || {
            kubectl(
                &config,
                "federation",
                &["create", "configmap", "after", "--from-literal=a=1"],
            )
            .0
        },
        "the restarted API server taking writes",
    );
    until(
        || kubectl(&config, "gondor", &["get", "configmap", "after"]).0,
        "a ConfigMap created after the restart in gondor",
    );
    let (ok, out) = kubectl(&config, "federation", &["get", "configmap", "hello"]);
    assert!(ok, "the restart lost an object: {out}");
    let state = || {
        kubectl(
            &config,
            "federation",
            &[
                "get",
                "configmap",
                "hello",
                "-o",
                r"jsonpath={.metadata.annotations.federation\.fellowship\.io/propagation}",
            ],
        )
        .1
    };
    until(
        || state().contains(r#""gondor":"Conflict"#),
        "gondor's state, reported while the API server was down, in the annotation",
    );
    marker("=true");
    until(
        || state().contains(r#""gondor":"Synced""#),
        "gondor's copy Synced again",
    );

    // Unjoin with --remove-propagated: the copies leave gondor (a namespace holding
    // something the federation did not create stays), rohan keeps its own.
    let fed = |args: &[&str]| {
        let (ok, out) = kubectl(&config, "federation", args);
        assert!(ok, "{args:?}: {out}");
    };
    fed(&["create", "namespace", "bree"]);
    fed(&["create", "namespace", "shire"]);
    fed(&[
        "create",
        "configmap",
        "pony",
        "-n",
        "bree",
        "--from-literal=a=1",
    ]);
    until(
        || {
            kubectl(
                &config,
                "gondor",
                &["get", "configmap", "pony", "-n", "bree"],
            )
            .0 && kubectl(&config, "gondor", &["get", "namespace", "shire"]).0
        },
        "namespaces in gondor",
    );
    let (ok, out) = kubectl(
        &config,
        "gondor",
        &["create", "configmap", "local", "-n", "shire"],
    );
    assert!(ok, "{out}");
    let (ok, out) = kubefed(&[
        "unjoin",
        "gondor",
        "--host-cluster-context=rivendell",
        "--remove-propagated",
        &format!("--kubeconfig={}", config.display()),
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Kept namespace shire")
            && out.contains("Removed what the federation propagated"),
        "{out}"
    );
    for (kind, name, ns) in [
        ("configmap", "hello", "default"),
        ("configmap", "after", "default"),
        ("configmap", "pony", "bree"),
    ] {
        let (found, _) = kubectl(&config, "gondor", &["get", kind, name, "-n", ns]);
        assert!(!found, "{ns}/{name} left in gondor");
    }
    let (exists, phase) = kubectl(
        &config,
        "gondor",
        &["get", "namespace", "bree", "-o", "jsonpath={.status.phase}"],
    );
    assert!(!exists || phase == "Terminating", "bree: {phase}");
    assert!(
        kubectl(
            &config,
            "gondor",
            &["get", "configmap", "local", "-n", "shire"]
        )
        .0
    );
    assert!(kubectl(&config, "rohan", &["get", "configmap", "hello"]).0);
    let (ok, out) = kubefed(&[
        "unjoin",
        "rohan",
        "--host-cluster-context=rivendell",
        &format!("--kubeconfig={}", config.display()),
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("objects the federation propagated (--remove-propagated removes them)"),
        "{out}"
    );
    assert!(kubectl(&config, "rohan", &["get", "configmap", "hello"]).0);

    let (ok, out) = kubefed(&["local", "down", &flags[0], &flags[1]]);
    let _ = restarted.kill();
    let _ = restarted.wait();
    assert!(ok, "{out}");
    for pid in pids.lines() {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still runs"
        );
    }
    let left = std::fs::read_to_string(&config).unwrap();
    for context in ["federation", "rivendell", "gondor", "rohan"] {
        assert!(!left.contains(&format!("name: {context}")), "{left}");
    }
}
