//! Local clusters driven by the real kubectl: workloads run and become Ready, rollouts
//! finish, Pods beyond the nodes' capacity stay Unschedulable, LoadBalancer Services get
//! addresses and Endpoints, Jobs complete, namespaces empty on deletion, service-account
//! tokens authenticate. The same checks run on three clusters started together; stopping
//! one leaves the others working. The `local-clusters` command adds and removes its
//! kubeconfig contexts.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fellowship_localcluster::{Fleet, FleetConfig, kubeconfig};

struct Kubectl {
    config: PathBuf,
    context: String,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg(format!("--kubeconfig={}", self.config.display()))
            .arg(format!("--context={}", self.context))
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{}: kubectl {args:?}: {}",
            self.context,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn apply(&self, yaml: &str) {
        let mut child = Command::new("kubectl")
            .arg(format!("--kubeconfig={}", self.config.display()))
            .arg(format!("--context={}", self.context))
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Polls `args` until its output satisfies `done`: a bounded wait, not a timing check.
    fn eventually(&self, args: &[&str], done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.run(args);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if out.status.success() && done(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{}: kubectl {args:?} never got there; last output: {text} {}",
                self.context,
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

const JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: pi}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: pi, image: perl}]
"#;

/// The acceptance checks, against one cluster whose nodes take 4 Pods each.
fn suite(k: &Kubectl) {
    // Nodes with capacity and both generations of topology labels.
    let zones = k.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[*].metadata.labels.failure-domain\\.beta\\.kubernetes\\.io/zone}",
    ]);
    assert_eq!(zones.split_whitespace().count(), 3, "{zones}");
    let regions = k.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[*].metadata.labels.topology\\.kubernetes\\.io/region}",
    ]);
    assert_eq!(regions.split_whitespace().count(), 3, "{regions}");

    // A Deployment of 3: three Ready Pods, and rollout status succeeds.
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=3",
        "--port=80",
    ]);
    let rollout = k.ok(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    assert!(rollout.contains("successfully rolled out"), "{rollout}");
    let wide = k.ok(&["get", "pods", "-l", "app=web", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header[..7],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"],
        "{wide}"
    );
    assert!(wide.contains(&format!("{}-node-", k.context)), "{wide}");
    let nodes = k.ok(&["get", "nodes"]);
    assert!(
        nodes.lines().next().unwrap().ends_with("VERSION"),
        "{nodes}"
    );
    let ready = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].status.containerStatuses[0].ready}",
    ]);
    assert_eq!(
        ready.split_whitespace().filter(|r| *r == "true").count(),
        3,
        "{ready}"
    );

    // A LoadBalancer Service: an ingress address and Endpoints for the three Pods.
    k.ok(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--type=LoadBalancer",
    ]);
    k.eventually(
        &[
            "get",
            "service",
            "web",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ],
        |ip| ip.split('.').count() == 4,
    );
    let cluster_ip = k.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(cluster_ip.starts_with("10.9"), "{cluster_ip}");
    k.eventually(
        &[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[0].addresses[*].ip}",
        ],
        |ips| ips.split_whitespace().count() == 3,
    );

    // Past the nodes' capacity (3 nodes x 4 Pods): the rest stay Pending, Unschedulable.
    k.ok(&["scale", "deployment", "web", "--replicas=14"]);
    let reasons = k.eventually(
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector=status.phase=Pending",
            "-o",
            "jsonpath={.items[*].status.conditions[0].reason}",
        ],
        |r| {
            r.split_whitespace()
                .filter(|r| *r == "Unschedulable")
                .count()
                == 2
        },
    );
    assert!(!reasons.contains("Scheduled"), "{reasons}");
    let message = k.ok(&[
        "get",
        "pods",
        "--field-selector=status.phase=Pending",
        "-o",
        "jsonpath={.items[0].status.conditions[0].message}",
    ]);
    assert!(message.contains("Too many pods"), "{message}");
    k.ok(&["scale", "deployment", "web", "--replicas=3"]);
    k.eventually(&["get", "pods", "-l", "app=web", "-o", "name"], |pods| {
        pods.lines().count() == 3
    });

    // A Job of three completions, two at a time, completes.
    k.apply(JOB);
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/pi",
        "--timeout=30s",
    ]);
    assert_eq!(
        k.ok(&["get", "job", "pi", "-o", "jsonpath={.status.succeeded}"]),
        "3"
    );

    // Orphaning keeps the dependents, released; a background delete takes them along.
    k.ok(&[
        "create",
        "deployment",
        "keep",
        "--image=nginx",
        "--replicas=2",
    ]);
    k.ok(&["rollout", "status", "deployment/keep", "--timeout=30s"]);
    k.ok(&["delete", "deployment", "keep", "--cascade=orphan"]);
    k.eventually(&["get", "deployments", "-o", "name"], |d| {
        !d.contains("keep")
    });
    let owners = k.ok(&[
        "get",
        "rs",
        "-l",
        "app=keep",
        "-o",
        "jsonpath={.items[*].metadata.ownerReferences}",
    ]);
    assert_eq!(owners, "", "released from the Deployment");
    assert_eq!(
        k.ok(&["get", "pods", "-l", "app=keep", "-o", "name"])
            .lines()
            .count(),
        2
    );
    k.ok(&["delete", "rs", "-l", "app=keep"]);
    k.eventually(&["get", "pods", "-l", "app=keep", "-o", "name"], |p| {
        p.trim().is_empty()
    });

    // Deleting a namespace removes what is in it.
    k.ok(&["create", "namespace", "doomed"]);
    k.ok(&[
        "-n",
        "doomed",
        "create",
        "deployment",
        "d",
        "--image=nginx",
        "--replicas=2",
    ]);
    k.ok(&[
        "-n",
        "doomed",
        "create",
        "configmap",
        "c",
        "--from-literal=a=b",
    ]);
    k.eventually(&["-n", "doomed", "get", "pods", "-o", "name"], |p| {
        p.lines().count() == 2
    });
    k.ok(&["delete", "namespace", "doomed", "--timeout=30s"]);
    let left = k.run(&["get", "namespace", "doomed"]);
    assert!(!left.status.success());
    let pods = k.ok(&[
        "get",
        "pods",
        "-A",
        "-o",
        "jsonpath={.items[*].metadata.namespace}",
    ]);
    assert!(!pods.contains("doomed"), "{pods}");

    // A ServiceAccount gets a token Secret whose token authenticates; a wrong one does not.
    k.ok(&["create", "serviceaccount", "robot"]);
    let secret = k.eventually(
        &[
            "get",
            "serviceaccount",
            "robot",
            "-o",
            "jsonpath={.secrets[0].name}",
        ],
        |s| !s.is_empty(),
    );
    let token = k.ok(&["get", "secret", &secret, "-o", "jsonpath={.data.token}"]);
    let token = String::from_utf8(base64_decode(&token)).unwrap();
    let kind = k.ok(&["get", "secret", &secret, "-o", "jsonpath={.type}"]);
    assert_eq!(kind, "kubernetes.io/service-account-token");
    let as_robot = k.ok(&[
        &format!("--token={token}"),
        "get",
        "namespace",
        "default",
        "-o",
        "name",
    ]);
    assert_eq!(as_robot.trim(), "namespace/default");
    let wrong = k.run(&["--token=not-a-token", "get", "namespace", "default"]);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("Unauthorized"));
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .unwrap()
}

fn kubeconfig_for(fleet: &Fleet, dir: &Path) -> PathBuf {
    let path = dir.join("kubeconfig");
    kubeconfig::merge(&path, &fleet.contexts(), None).unwrap();
    path
}

#[test]
fn three_clusters_pass_the_suite_and_one_stopping_leaves_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = fellowship_testkit::bench_runtime();
    let mut config = FleetConfig::numbered(3, &[]);
    for c in &mut config.clusters {
        c.node_capacity.pods = 4;
    }
    config.simulation.job_duration = Duration::from_millis(300);
    let mut fleet = runtime
        .block_on(Fleet::start(config, dir.path(), None))
        .unwrap();
    let path = kubeconfig_for(&fleet, dir.path());
    let names: Vec<String> = fleet
        .clusters
        .iter()
        .map(|c| c.config.name.clone())
        .collect();
    assert_eq!(names, ["rivendell", "gondor", "rohan"]);
    let kubectls: Vec<Kubectl> = names
        .iter()
        .map(|n| Kubectl {
            config: path.clone(),
            context: n.clone(),
        })
        .collect();
    std::thread::scope(|s| {
        for k in &kubectls {
            s.spawn(move || suite(k));
        }
    });

    assert!(fleet.stop_cluster("gondor"));
    let gone = kubectls[1].run(&["get", "nodes", "--request-timeout=5s"]);
    assert!(!gone.status.success());
    for k in [&kubectls[0], &kubectls[2]] {
        k.ok(&[
            "create",
            "deployment",
            "after",
            "--image=nginx",
            "--replicas=2",
        ]);
        let rollout = k.ok(&["rollout", "status", "deployment/after", "--timeout=30s"]);
        assert!(rollout.contains("successfully rolled out"), "{rollout}");
    }
    fleet.stop();
}

#[test]
fn the_command_adds_its_contexts_and_removes_them_on_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster: {server: https://prod.example.com}\nusers:\n- name: prod\n  user: {token: x}\ncontexts:\n- name: prod\n  context: {cluster: prod, user: prod}\ncurrent-context: prod\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_local-clusters"))
        .args(["--names", "gondor,rohan", "--nodes", "2"])
        .arg(format!("--kubeconfig={}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("ready") {
            break;
        }
    }
    assert!(
        printed.contains("gondor") && printed.contains("rohan"),
        "{printed}"
    );
    for context in ["gondor", "rohan"] {
        let k = Kubectl {
            config: path.clone(),
            context: context.into(),
        };
        let nodes = k.ok(&["get", "nodes", "-o", "name"]);
        assert_eq!(nodes.lines().count(), 2, "{nodes}");
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success());
    assert!(rest.iter().any(|l| l.starts_with("stopped")), "{rest:?}");
    let config = std::fs::read_to_string(&path).unwrap();
    assert!(config.contains("prod.example.com"), "{config}");
    assert!(
        !config.contains("gondor") && !config.contains("rohan"),
        "{config}"
    );
}
