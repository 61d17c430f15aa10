//! A real `federation-apiserver` process on loopback, on the embedded store or a real etcd,
//! with a kubeconfig whose contexts carry each kind of credential, and the real kubectl
//! binaries to drive it.

#![allow(dead_code)] // each test file uses its own part of this module

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fellowship_testkit::{Etcd, Pki, free_port};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Etcd,
}

pub struct Server {
    child: Child,
    args: Vec<String>,
    dir: tempfile::TempDir,
    pub port: u16,
    pub pki: Pki,
    pub kubeconfig: PathBuf,
    _etcd: Option<Etcd>,
}

pub const TOKEN: &str = "s3cr3t-token";
pub const PASSWORD: &str = "s3cr3t-password";

impl Server {
    pub fn start(backend: Backend) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new();
        let serving = pki.server("apiserver");
        let client = pki.client("admin-cert", "cert-admin", &["system:masters"]);
        let tokens = dir.path().join("tokens.csv");
        std::fs::write(
            &tokens,
            format!("{TOKEN},token-admin,1,\"system:masters\"\n"),
        )
        .unwrap();
        let passwords = dir.path().join("passwords.csv");
        std::fs::write(&passwords, format!("{PASSWORD},basic-admin,2\n")).unwrap();
        let port = free_port();
        let etcd = (backend == Backend::Etcd).then(Etcd::start);
        let mut args = vec![
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".to_string(),
            format!("--tls-cert-file={}", serving.cert.display()),
            format!("--tls-private-key-file={}", serving.key.display()),
            format!("--client-ca-file={}", pki.ca_file().display()),
            format!("--token-auth-file={}", tokens.display()),
            format!("--basic-auth-file={}", passwords.display()),
            format!("--data-dir={}", dir.path().join("data").display()),
            format!("--cert-dir={}", dir.path().join("certs").display()),
        ];
        if let Some(etcd) = &etcd {
            args.push(format!("--etcd-servers={}", etcd.endpoint()));
            args.push("--etcd-prefix=/fellowship-test".to_string());
        }
        let child = spawn(&args, dir.path());
        let kubeconfig = dir.path().join("kubeconfig");
        write_kubeconfig(&kubeconfig, port, &pki, &client);
        let mut server = Server {
            child,
            args,
            dir,
            port,
            pki,
            kubeconfig,
            _etcd: etcd,
        };
        server.wait_ready();
        server
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and data.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.args, self.dir.path());
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("federation-apiserver exited with {status}: {}", self.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "federation-apiserver not listening within 30 s: {}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs kubectl (`version`: "" for the one on PATH, or "1.27" ... "1.33") with the
    /// token context unless `args` name another.
    pub fn kubectl(&self, version: &str, args: &[&str]) -> Output {
        Command::new(kubectl_binary(version))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    }

    /// kubectl that must succeed; returns its stdout.
    pub fn ok(&self, version: &str, args: &[&str]) -> String {
        let out = self.kubectl(version, args);
        assert!(
            out.status.success(),
            "kubectl {version} {args:?} failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// One field of one object, by kubectl's jsonpath.
    pub fn jsonpath(&self, resource: &str, name: &str, path: &str) -> String {
        self.ok(
            "",
            &["get", resource, name, "-o", &format!("jsonpath={path}")],
        )
    }

    /// kubectl that must fail; returns its stderr.
    pub fn fails(&self, version: &str, args: &[&str]) -> String {
        let out = self.kubectl(version, args);
        assert!(
            !out.status.success(),
            "kubectl {version} {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// Writes `contents` to a file in the server's directory and returns its path.
    pub fn file(&self, name: &str, contents: &[u8]) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).unwrap();
        p.display().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[String], dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("apiserver.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_federation-apiserver"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start federation-apiserver")
}

fn write_kubeconfig(path: &Path, port: u16, pki: &Pki, client: &fellowship_testkit::Pair) {
    let ca = pki.ca_file().display().to_string();
    let users = [
        ("token", format!("token: {TOKEN}")),
        (
            "basic",
            format!("username: basic-admin\n    password: {PASSWORD}"),
        ),
        (
            "cert",
            format!(
                "client-certificate: {}\n    client-key: {}",
                client.cert.display(),
                client.key.display()
            ),
        ),
        ("anonymous", "{}".to_string()),
        ("badtoken", "token: wrong".to_string()),
        (
            "badpassword",
            "username: basic-admin\n    password: wrong".to_string(),
        ),
    ];
    let mut doc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fed\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\nusers:\n"
    );
    for (name, user) in &users {
        let body = if user == "{}" {
            " {}".to_string()
        } else {
            format!("\n    {user}")
        };
        doc.push_str(&format!("- name: {name}\n  user:{body}\n"));
    }
    doc.push_str("contexts:\n");
    for (name, _) in &users {
        doc.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: fed\n    user: {name}\n"
        ));
    }
    doc.push_str("current-context: token\n");
    std::fs::write(path, doc).unwrap();
}

/// The kubectl binary for `version`: the one on PATH, or a versioned one from the Google
/// Cloud SDK folder beside it.
pub fn kubectl_binary(version: &str) -> PathBuf {
    if version.is_empty() {
        return PathBuf::from("kubectl");
    }
    static SDK: OnceLock<PathBuf> = OnceLock::new();
    let sdk = SDK.get_or_init(|| {
        let out = Command::new("gcloud")
            .args(["info", "--format=value(installation.sdk_root)"])
            .output()
            .expect("gcloud finds the SDK holding the versioned kubectl binaries");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    });
    let bin = sdk.join("bin").join(format!("kubectl.{version}"));
    assert!(bin.exists(), "{} is missing", bin.display());
    bin
}
