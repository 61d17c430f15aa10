//! `kubefed local up` / `down`: a whole federation on this machine. Up starts three local
//! member clusters, the federation API server (embedded store) and the controller manager
//! as background processes, records the control plane in the host cluster as `kubefed init`
//! would, joins the three clusters, and writes the kubeconfig contexts (`federation`,
//! `rivendell`, `gondor`, `rohan`). Down stops them and removes the contexts.

use std::io::Write;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use crate::contexts::Contexts;
use crate::join::{JoinOptions, join};

pub const FEDERATION: &str = "fellowship";
const MEMBERS: [&str; 3] = ["rivendell", "gondor", "rohan"];
/// The programs a local federation runs (beside this one's own binary).
const BINARIES: [&str; 3] = [
    "local-clusters",
    "federation-apiserver",
    "federation-controller-manager",
];
const NAMESPACE: &str = "federation-system";

pub struct LocalOptions {
    /// Where the processes keep their state, logs and pid file.
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
}

/// A binary installed beside this one.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating kubefed")?;
    let path = me.with_file_name(name);
    if !path.exists() {
        bail!(
            "{name} is not installed beside kubefed ({})",
            path.display()
        );
    }
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts a process in the background, in its own process group (Ctrl-C in this terminal
/// leaves it alone), with its output in `dir/<name>.log`.
fn spawn(dir: &Path, name: &str, binary: &Path, args: &[String]) -> anyhow::Result<u32> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok(child.id())
}

fn wait_for(what: &str, log: &Path, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        if Instant::now() > deadline {
            bail!("{what} did not start within 30 s; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

pub async fn up(o: &LocalOptions, out: &mut impl Write) -> anyhow::Result<()> {
    let pids = o.dir.join("pids");
    if pids.exists() {
        bail!(
            "a local federation is already running (state in {}); run kubefed local down first",
            o.dir.display()
        );
    }
    let started = start(o, out).await;
    if started.is_err()
        && let Ok(list) = std::fs::read_to_string(&pids)
    {
        // Nothing half-started is left running; the logs stay for a look.
        stop(o, &list)?;
    }
    started
}

async fn start(o: &LocalOptions, out: &mut impl Write) -> anyhow::Result<()> {
    let pids = o.dir.join("pids");
    std::fs::create_dir_all(&o.dir).with_context(|| format!("{}", o.dir.display()))?;
    let kubeconfig = o.kubeconfig.display().to_string();
    let mut started = Vec::new();

    writeln!(out, "Starting local member clusters {}", MEMBERS.join(", "))?;
    let clusters_log = o.dir.join("local-clusters.log");
    started.push(spawn(
        &o.dir,
        "local-clusters",
        &sibling("local-clusters")?,
        &[
            format!("--names={}", MEMBERS.join(",")),
            format!("--kubeconfig={kubeconfig}"),
            format!("--dir={}", o.dir.join("clusters").display()),
        ],
    )?);
    std::fs::write(&pids, format!("{}\n", started[0]))?;
    wait_for("the local clusters", &clusters_log, || {
        std::fs::read_to_string(&clusters_log).is_ok_and(|l| l.contains("\nready in"))
    })?;

    writeln!(
        out,
        "Starting the federation API server (embedded store in {})",
        o.dir.join("apiserver").display()
    )?;
    let port = free_port()?;
    let token = fellowship_localcluster::cluster::random_token();
    std::fs::write(
        o.dir.join("tokens.csv"),
        format!("{token},admin,admin,\"system:masters\"\n"),
    )?;
    let certs = o.dir.join("clusters");
    started.push(spawn(
        &o.dir,
        "federation-apiserver",
        &sibling("federation-apiserver")?,
        &[
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--tls-cert-file={}", certs.join("cluster.crt").display()),
            format!(
                "--tls-private-key-file={}",
                certs.join("cluster.key").display()
            ),
            format!("--token-auth-file={}", o.dir.join("tokens.csv").display()),
            format!("--data-dir={}", o.dir.join("apiserver").display()),
        ],
    )?);
    std::fs::write(
        &pids,
        started.iter().map(|p| format!("{p}\n")).collect::<String>(),
    )?;
    let ca = std::fs::read_to_string(certs.join("ca.crt"))?;
    federation_context(&o.kubeconfig, port, &ca, &token)?;
    let contexts = Contexts::load(Some(&o.kubeconfig))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let federation = loop {
        match contexts.client("federation").await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => {
                return Err(e.context("the federation API server did not start"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    drop(federation);

    writeln!(out, "Recording the control plane in rivendell/{NAMESPACE}")?;
    let host = contexts.client("rivendell").await?;
    let namespaces: Api<Namespace> = Api::all(host.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
    namespaces.create(&PostParams::default(), &ns).await?;
    let record: Deployment = serde_json::from_value(json!({
        "metadata": {"name": format!("{FEDERATION}-controller-manager"), "namespace": NAMESPACE,
            "annotations": {crate::FEDERATION_NAME: FEDERATION, "federations": format!("{FEDERATION}=example.com")}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "federated-cluster"}},
            "template": {"metadata": {"labels": {"app": "federated-cluster"}},
                "spec": {"containers": [{"name": "controller-manager", "image": "fellowship/federation-controller-manager"}]}}},
    }))?;
    Api::<Deployment>::namespaced(host, NAMESPACE)
        .create(&PostParams::default(), &record)
        .await?;

    writeln!(out, "Starting the controller manager")?;
    started.push(spawn(
        &o.dir,
        "federation-controller-manager",
        &sibling("federation-controller-manager")?,
        &[
            format!("--kubeconfig={kubeconfig}"),
            "--context=federation".into(),
            format!("--host-kubeconfig={kubeconfig}"),
            "--host-context=rivendell".into(),
            format!("--port={}", free_port()?),
            "--address=127.0.0.1".into(),
        ],
    )?);
    std::fs::write(
        &pids,
        started.iter().map(|p| format!("{p}\n")).collect::<String>(),
    )?;

    for member in MEMBERS {
        writeln!(out, "Joining {member}")?;
        let options = JoinOptions {
            cluster: member.into(),
            host_context: "rivendell".into(),
            cluster_context: member.into(),
            federation_context: "federation".into(),
            namespace: NAMESPACE.into(),
            secret_name: None,
            credentials_kubeconfig: None,
        };
        join(&contexts, &options, &mut std::io::sink()).await?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "A local federation {FEDERATION:?} is running; kubeconfig {kubeconfig} has the contexts"
    )?;
    writeln!(out, "  federation, {}", MEMBERS.join(", "))?;
    writeln!(out, "Try:")?;
    writeln!(out, "  kubectl --context=federation get clusters")?;
    writeln!(
        out,
        "  kubectl --context=federation create configmap hello --from-literal=greeting=mae-govannen"
    )?;
    writeln!(out, "  kubectl --context=gondor get configmap hello")?;
    writeln!(
        out,
        "Logs are in {}; stop it all with: kubefed local down",
        o.dir.display()
    )?;
    Ok(())
}

/// The `federation` context, beside the members' that local-clusters wrote.
fn federation_context(kubeconfig: &Path, port: u16, ca: &str, token: &str) -> anyhow::Result<()> {
    fellowship_localcluster::kubeconfig::merge(
        kubeconfig,
        &[fellowship_localcluster::kubeconfig::Context {
            name: "federation".into(),
            server: format!("https://127.0.0.1:{port}"),
            ca_pem: ca.into(),
            token: token.into(),
        }],
        Some("federation"),
    )
}

/// Stops the processes in `pids` that are still this federation's (a pid reused by
/// another program since is left alone): asked to end, then killed after 10 s. Removes the
/// contexts and the list of processes.
fn stop(o: &LocalOptions, pids: &str) -> anyhow::Result<()> {
    let ours = |pid: i32| {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
            let name = exe
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            BINARIES.iter().any(|b| name.starts_with(b))
        })
    };
    // The controller manager first, the member clusters last.
    for pid in pids
        .lines()
        .rev()
        .filter_map(|l| l.trim().parse::<i32>().ok())
    {
        if !ours(pid) {
            continue;
        }
        for signal in ["-TERM", "-KILL"] {
            let _ = Command::new("kill")
                .arg(signal)
                .arg(pid.to_string())
                .status();
            let gone = || !Path::new(&format!("/proc/{pid}")).exists();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !gone() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if gone() {
                break;
            }
        }
    }
    let contexts: Vec<String> = std::iter::once("federation")
        .chain(MEMBERS)
        .map(String::from)
        .collect();
    fellowship_localcluster::kubeconfig::remove(&o.kubeconfig, &contexts)?;
    let _ = std::fs::remove_file(o.dir.join("pids"));
    Ok(())
}

pub fn down(o: &LocalOptions, out: &mut impl Write) -> anyhow::Result<()> {
    let pids = o.dir.join("pids");
    let Ok(list) = std::fs::read_to_string(&pids) else {
        bail!(
            "no local federation is running (nothing in {})",
            o.dir.display()
        );
    };
    stop(o, &list)?;
    std::fs::remove_dir_all(&o.dir).with_context(|| format!("removing {}", o.dir.display()))?;
    writeln!(out, "Stopped the local federation and removed its contexts")?;
    Ok(())
}
