//! The cluster controller against real servers: a federation API server and local member
//! clusters on loopback (in this process), the `federation-controller-manager` binary, and
//! `kubectl get clusters` to read the result. Members whose credentials work turn Ready with
//! their zones and region; a member that is not there is Offline; one whose Secret appears
//! late turns Ready once it does (the original never retried); a member that stops turns
//! Offline while the others stay Ready.

use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use fellowship_apiserver::auth::{Authenticator, User};
use fellowship_apiserver::registry::{Registry, federation};
use fellowship_apiserver::server::{self, Surface};
use fellowship_apiserver::{App, tls};
use fellowship_localcluster::{Fleet, FleetConfig, kubeconfig};
use fellowship_storage::{EmbeddedConfig, EmbeddedStore};
use serde_json::{Value, json};

struct Manager(Child);

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubectl(config: &std::path::Path, context: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg(format!("--kubeconfig={}", config.display()))
        .arg(format!("--context={context}"))
        .args(args)
        .output()
        .expect("kubectl runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn apply(config: &std::path::Path, context: &str, object: &Value) {
    let dir = config.parent().unwrap();
    let file = dir.join(format!(
        "{}.json",
        fellowship_localcluster::cluster::random_token()
    ));
    std::fs::write(&file, object.to_string()).unwrap();
    let (ok, out) = kubectl(
        config,
        context,
        &["apply", "-f", &file.display().to_string()],
    );
    assert!(ok, "{out}");
}

/// Polls the clusters' STATUS column until `want` holds: a bounded wait, not a timing check.
fn until_status(config: &std::path::Path, want: &[(&str, &str)]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, table) = kubectl(config, "federation", &["get", "clusters"]);
        let status = |name: &str| {
            table
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("")
                .to_string()
        };
        if want.iter().all(|(n, s)| status(n) == *s) {
            return table;
        }
        assert!(Instant::now() < deadline, "wanted {want:?}, have:\n{table}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A plain HTTP GET on loopback: the controller manager's own endpoint.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    response
}

fn cluster(name: &str, server: &str, secret: &str) -> Value {
    json!({
        "apiVersion": "federation/v1beta1", "kind": "Cluster",
        "metadata": {"name": name},
        "spec": {"serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}], "secretRef": {"name": secret}},
    })
}

fn credentials(name: &str, token: &str, ca: &str) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "federation-system"},
        "data": {"token": b64(token), "ca.crt": b64(ca)},
    })
}

#[test]
fn members_turn_ready_offline_and_ready_again() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut fleet = runtime
        .block_on(Fleet::start(
            FleetConfig::numbered(3, &[]),
            dir.path(),
            None,
        ))
        .unwrap();
    // The federation API server, in this process, with the fleet's serving certificate.
    let federation_port = runtime.block_on(async {
        let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::memory()).await.unwrap());
        let mut auth = Authenticator::default();
        auth.add_token(
            "federation-token".into(),
            User {
                name: "admin".into(),
                uid: "1".into(),
                groups: vec!["system:masters".into()],
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = App::new(
            Surface::new(Registry::new(federation())),
            store,
            auth,
            format!("127.0.0.1:{port}"),
        )
        .unwrap();
        app.ensure_namespaces(&["default"]).await.unwrap();
        let config = tls::server_config(&tls::TlsOptions {
            cert_file: Some(dir.path().join("cluster.crt")),
            key_file: Some(dir.path().join("cluster.key")),
            cert_dir: dir.path().to_path_buf(),
            client_ca_file: None,
            hosts: Vec::new(),
        })
        .unwrap();
        tokio::spawn(server::serve(listener, config, Arc::new(app)));
        port
    });
    let config = dir.path().join("kubeconfig");
    let mut contexts = fleet.contexts();
    contexts.push(kubeconfig::Context {
        name: "federation".into(),
        server: format!("https://127.0.0.1:{federation_port}"),
        ca_pem: fleet.ca_pem.clone(),
        token: "federation-token".into(),
    });
    kubeconfig::merge(&config, &contexts, Some("federation")).unwrap();

    // Credentials for gondor now, for rohan later; mordor answers nobody.
    let (ok, out) = kubectl(
        &config,
        "rivendell",
        &["create", "namespace", "federation-system"],
    );
    assert!(ok, "{out}");
    let gondor = fleet.get("gondor").unwrap();
    let rohan = fleet.get("rohan").unwrap();
    apply(
        &config,
        "rivendell",
        &credentials("gondor-credentials", &gondor.token, &fleet.ca_pem),
    );
    apply(
        &config,
        "rivendell",
        &credentials("mordor-credentials", &gondor.token, &fleet.ca_pem),
    );
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("https://127.0.0.1:{}", free.local_addr().unwrap().port());
    drop(free);
    apply(
        &config,
        "federation",
        &cluster("gondor", &gondor.server(), "gondor-credentials"),
    );
    apply(
        &config,
        "federation",
        &cluster("rohan", &rohan.server(), "rohan-credentials"),
    );
    apply(
        &config,
        "federation",
        &cluster("mordor", &nowhere, "mordor-credentials"),
    );
    let (rohan_server, rohan_token) = (rohan.server(), rohan.token.clone());
    assert!(!rohan_server.is_empty());

    let metrics_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let _manager = Manager(
        Command::new(env!("CARGO_BIN_EXE_federation-controller-manager"))
            .arg(format!("--kubeconfig={}", config.display()))
            .arg("--context=federation")
            .arg(format!("--host-kubeconfig={}", config.display()))
            .arg("--host-context=rivendell")
            .arg("--cluster-monitor-period=1s")
            .arg("--address=127.0.0.1")
            .arg(format!("--port={metrics_port}"))
            .spawn()
            .unwrap(),
    );
    until_status(
        &config,
        &[
            ("gondor", "Ready"),
            ("rohan", "Offline"),
            ("mordor", "Offline"),
        ],
    );
    let (_, reason) = kubectl(
        &config,
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
    let (_, zones) = kubectl(
        &config,
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
    apply(
        &config,
        "rivendell",
        &credentials("rohan-credentials", &rohan_token, &fleet.ca_pem),
    );
    until_status(
        &config,
        &[
            ("gondor", "Ready"),
            ("rohan", "Ready"),
            ("mordor", "Offline"),
        ],
    );

    // A member stops: it alone turns Offline.
    assert!(fleet.stop_cluster("gondor"));
    until_status(&config, &[("gondor", "Offline"), ("rohan", "Ready")]);
    let (_, reason) = kubectl(
        &config,
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
    fleet.stop();
}
