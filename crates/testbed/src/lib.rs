//! What the end-to-end tests of the control plane run against: local member clusters and a
//! federation API server in this process, and a kubeconfig with a context for each
//! (`rivendell`, `gondor`, `rohan`, `federation`), read with the real kubectl.

use std::path::{Path, PathBuf};
use std::process::Command;
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

/// The bearer token of the federation API's administrator.
pub const FEDERATION_TOKEN: &str = "federation-token";

pub struct Env {
    pub runtime: tokio::runtime::Runtime,
    pub fleet: Fleet,
    /// The federation API server: its port on loopback and the server itself (benchmarks
    /// read its store).
    pub federation_port: u16,
    pub federation: Arc<App>,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Env {
    /// Three local clusters (rivendell hosts the credentials) and the federation API.
    pub fn start() -> Env {
        Env::start_with(3)
    }

    /// `count` local clusters, named in order (rivendell, gondor, rohan, ...; rivendell hosts
    /// the credentials), and the federation API.
    pub fn start_with(count: usize) -> Env {
        Env::start_fleet(FleetConfig::numbered(count, &[]))
    }

    /// The clusters of `fleet`, rivendell among them to host the credentials, and the
    /// federation API.
    pub fn start_fleet(fleet: FleetConfig) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let runtime = fellowship_testkit::bench_runtime();
        let fleet = runtime
            .block_on(Fleet::start(fleet, dir.path(), None))
            .unwrap();
        // The federation API server, in this process, with the fleet's serving certificate.
        let (federation_port, federation) = runtime.block_on(async {
            let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::memory()).await.unwrap());
            let mut auth = Authenticator::default();
            auth.add_token(
                FEDERATION_TOKEN.into(),
                User {
                    name: "admin".into(),
                    uid: "1".into(),
                    groups: vec!["system:masters".into()],
                },
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let app = Arc::new(
                App::new(
                    Surface::new(Registry::new(federation())),
                    store,
                    auth,
                    format!("127.0.0.1:{port}"),
                )
                .unwrap(),
            );
            app.ensure_namespaces(&["default"]).await.unwrap();
            let config = tls::server_config(&tls::TlsOptions {
                cert_file: Some(dir.path().join("cluster.crt")),
                key_file: Some(dir.path().join("cluster.key")),
                cert_dir: dir.path().to_path_buf(),
                client_ca_file: None,
                hosts: Vec::new(),
            })
            .unwrap();
            // As federation-apiserver runs it: deleted namespaces are emptied and removed.
            tokio::spawn(fellowship_apiserver::namespaces::run(app.clone()));
            tokio::spawn(server::serve(listener, config, app.clone()));
            (port, app)
        });
        let config = dir.path().join("kubeconfig");
        let mut contexts = fleet.contexts();
        contexts.push(kubeconfig::Context {
            name: "federation".into(),
            server: format!("https://127.0.0.1:{federation_port}"),
            ca_pem: fleet.ca_pem.clone(),
            token: FEDERATION_TOKEN.into(),
        });
        kubeconfig::merge(&config, &contexts, Some("federation")).unwrap();
        let (ok, out) = kubectl(
            &config,
            "rivendell",
            &["create", "namespace", "federation-system"],
        );
        assert!(ok, "{out}");
        Env {
            runtime,
            fleet,
            federation_port,
            federation,
            config,
            dir,
        }
    }

    /// The names of the fleet's clusters, in order.
    pub fn cluster_names(&self) -> Vec<String> {
        (self.fleet.clusters.iter())
            .map(|c| c.config.name.clone())
            .collect()
    }

    pub fn kubectl(&self, context: &str, args: &[&str]) -> (bool, String) {
        kubectl(&self.config, context, args)
    }

    /// kubectl, which must succeed; what it printed.
    pub fn ok(&self, context: &str, args: &[&str]) -> String {
        let (ok, out) = self.kubectl(context, args);
        assert!(ok, "kubectl --context={context} {args:?}: {out}");
        out
    }

    /// `kubectl get WHAT -o json` (WHAT: resource, name and any flags), or None if not found.
    pub fn get(&self, context: &str, what: &[&str]) -> Option<Value> {
        let mut args = vec!["get"];
        args.extend(what);
        args.extend(["-o", "json"]);
        let (ok, out) = self.kubectl(context, &args);
        if !ok {
            assert!(out.contains("NotFound"), "{context} {what:?}: {out}");
            return None;
        }
        // Warnings, if any, follow the object.
        let first = serde_json::Deserializer::from_str(&out)
            .into_iter::<Value>()
            .next();
        Some(first.and_then(Result::ok).expect("kubectl prints JSON"))
    }

    pub fn apply(&self, context: &str, object: &Value) {
        let file = self.dir.path().join(format!(
            "{}.json",
            fellowship_localcluster::cluster::random_token()
        ));
        std::fs::write(&file, object.to_string()).unwrap();
        let (ok, out) = self.kubectl(context, &["apply", "-f", &file.display().to_string()]);
        assert!(ok, "{out}");
    }

    /// The credentials of a member, as `kubefed join` leaves them in the host cluster.
    pub fn credentials(&self, name: &str, member: &str) {
        let token = self.fleet.get(member).map_or("", |c| c.token.as_str());
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        self.apply(
            "rivendell",
            &json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": "federation-system"},
                "data": {"token": b64(token), "ca.crt": b64(&self.fleet.ca_pem)},
            }),
        );
    }

    /// A member of the fleet registered as `kubefed join` leaves it: its credentials Secret
    /// in the host and its Cluster in the federation.
    pub fn join(&self, member: &str) {
        let secret = format!("{member}-credentials");
        self.credentials(&secret, member);
        let server = self
            .fleet
            .get(member)
            .expect("a member of the fleet")
            .server();
        self.cluster(member, &server, &secret);
    }

    pub fn cluster(&self, name: &str, server: &str, secret: &str) {
        self.apply(
            "federation",
            &json!({
                "apiVersion": "federation/v1beta1", "kind": "Cluster",
                "metadata": {"name": name},
                "spec": {"serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}], "secretRef": {"name": secret}},
            }),
        );
    }

    /// Polls the clusters' STATUS column until `want` holds: a bounded wait.
    pub fn until_status(&self, want: &[(&str, &str)]) -> String {
        let mut table = String::new();
        until(
            || {
                table = self.kubectl("federation", &["get", "clusters"]).1;
                let status = |name: &str| {
                    table
                        .lines()
                        .find(|l| l.split_whitespace().next() == Some(name))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .unwrap_or("")
                        .to_string()
                };
                want.iter().all(|(n, s)| status(n) == *s)
            },
            &format!("{want:?}"),
        );
        table
    }
}

/// Waits for `done`, failing after 30 s: a bounded wait, not a timing check.
pub fn until(done: impl FnMut() -> bool, what: &str) {
    until_within(Duration::from_secs(30), done, what);
}

/// Waits until `read` gives `want`, failing after 30 s with what it gave last.
pub fn until_value<T: PartialEq + std::fmt::Debug>(
    mut read: impl FnMut() -> T,
    want: &T,
    what: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = read();
        if got == *want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never got to {what}: {want:?}; last {got:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for `done`, failing after `limit`: for what takes longer by contract (a Pod
/// unschedulable for a minute, a window of minutes).
pub fn until_within(limit: Duration, mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "never got to {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn kubectl(config: &Path, context: &str, args: &[&str]) -> (bool, String) {
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

/// A plain HTTP GET on loopback: the controller manager's own endpoint.
pub fn http_get(port: u16, path: &str) -> String {
    try_http_get(port, path).unwrap()
}

/// [`http_get`] for a server that may not be listening (yet).
pub fn try_http_get(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    Ok(response)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
