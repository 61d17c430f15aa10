//! `local-clusters`: starts local member clusters, writes their kubeconfig contexts, runs
//! until interrupted (Ctrl-C or SIGTERM), then removes the contexts and stops.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use fellowship_localcluster::{Fleet, FleetConfig, kubeconfig};

/// Local Kubernetes-compatible member clusters with simulated nodes, for trying, testing and
/// measuring a federation on one machine.
#[derive(Parser, Debug)]
#[command(name = "local-clusters", version)]
struct Args {
    /// How many clusters (named rivendell, gondor, rohan, ... unless --names says); 3, or
    /// as many as --names gives.
    #[arg(long)]
    count: Option<usize>,
    /// Cluster names, comma-separated.
    #[arg(long, value_delimiter = ',')]
    names: Vec<String>,
    /// A YAML file listing the clusters (name, region, zones, nodes, nodeCapacity,
    /// loadBalancerPool, port) and `simulation` settings; replaces --count and --names.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Nodes per cluster.
    #[arg(long)]
    nodes: Option<usize>,
    /// Pods each node takes.
    #[arg(long)]
    node_pods: Option<u32>,
    /// CPU of each node (a quantity: 4, 500m).
    #[arg(long)]
    node_cpu: Option<String>,
    /// Memory of each node (a quantity: 16Gi).
    #[arg(long)]
    node_memory: Option<String>,
    /// How long a Job's Pod runs (2s, 500ms).
    #[arg(long, value_parser = fellowship_apimachinery::duration::parse)]
    job_duration: Option<Duration>,
    /// Writes per second each cluster's control loops may make (0: unlimited; default 20,
    /// kube-controller-manager's --kube-api-qps).
    #[arg(long)]
    controller_qps: Option<u32>,
    /// The burst of writes they may make at once (default 30).
    #[arg(long)]
    controller_burst: Option<u32>,
    /// The kubeconfig to add a context per cluster to ($KUBECONFIG's first file, else
    /// ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Where the clusters' certificates go (a temporary directory when unset).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep each cluster's objects in a store under this directory instead of in memory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log verbosity (0-5).
    #[arg(long, short, default_value_t = 0)]
    v: u8,
}

/// Many small servers allocate and free at a high rate: mimalloc serves them markedly
/// faster than the system allocator (the clusters benchmark uses it too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    fellowship_apimachinery::process::no_transparent_huge_pages();
    let args = Args::parse();
    let level = if args.v >= 3 { "debug" } else { "warn" };
    fellowship_apimachinery::logging::init(level);
    if let Err(e) = run(args).await {
        eprintln!("local-clusters: {e:#}");
        std::process::exit(1);
    }
}

fn fleet_config(args: &Args) -> anyhow::Result<FleetConfig> {
    let mut config = match &args.config {
        Some(path) => FleetConfig::read(path)?,
        None => {
            let count = args.count.unwrap_or(if args.names.is_empty() {
                3
            } else {
                args.names.len()
            });
            FleetConfig::numbered(count, &args.names)
        }
    };
    for c in &mut config.clusters {
        if let Some(n) = args.nodes {
            c.nodes = n;
        }
        if let Some(p) = args.node_pods {
            c.node_capacity.pods = p;
        }
        if let Some(cpu) = &args.node_cpu {
            c.node_capacity.cpu = cpu.clone();
        }
        if let Some(m) = &args.node_memory {
            c.node_capacity.memory = m.clone();
        }
    }
    if let Some(d) = args.job_duration {
        config.simulation.job_duration = d;
    }
    if let Some(q) = args.controller_qps {
        config.simulation.controller_qps = q;
    }
    if let Some(b) = args.controller_burst {
        config.simulation.controller_burst = b;
    }
    config.check()?;
    Ok(config)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = fleet_config(&args)?;
    let kubeconfig_path = args
        .kubeconfig
        .clone()
        .unwrap_or_else(kubeconfig::default_path);
    let (dir, _temporary) = match &args.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile_dir()?;
            (t.clone(), Some(RemoveOnDrop(t)))
        }
    };
    println!("starting {} local clusters", config.clusters.len());
    let fleet = Fleet::start(config, &dir, args.data_dir.clone()).await?;
    for c in &fleet.clusters {
        println!(
            "  {:<12} {}  {} nodes  region {}  zones {}",
            c.config.name,
            c.server(),
            c.config.nodes,
            c.config.region,
            c.config.zones.join(",")
        );
    }
    let contexts = fleet.contexts();
    let names: Vec<String> = contexts.iter().map(|c| c.name.clone()).collect();
    kubeconfig::merge(&kubeconfig_path, &contexts, None)?;
    println!(
        "kubeconfig {}: contexts {}",
        kubeconfig_path.display(),
        names.join(", ")
    );
    println!(
        "ready in {} ms; try: kubectl --context={} get nodes",
        started.elapsed().as_millis(),
        names[0]
    );
    wait_for_signal().await?;
    println!("stopping");
    kubeconfig::remove(&kubeconfig_path, &names)?;
    fleet.stop();
    println!("stopped; contexts {} removed", names.join(", "));
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("fellowship-local-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    Ok(dir)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
