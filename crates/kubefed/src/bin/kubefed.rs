//! `kubefed`: join and unjoin member clusters. Errors are one line and a non-zero exit.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use fellowship_kubefed::contexts::Contexts;
use fellowship_kubefed::join::{JoinOptions, join};
use fellowship_kubefed::local::{self, LocalOptions};
use fellowship_kubefed::unjoin::{UnjoinOptions, unjoin};

#[derive(Parser)]
#[command(name = "kubefed", version, about = "Controls a cluster federation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// The kubeconfig to read ($KUBECONFIG or ~/.kube/config when unset).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Context of the host cluster, where the federation keeps the members' credentials.
    #[arg(long, default_value = "")]
    host_cluster_context: String,
    /// Context of the federation API (the current context when unset).
    #[arg(long, default_value = "")]
    context: String,
    /// The federation's namespace, in the host and in each member.
    #[arg(long, default_value = "federation-system")]
    federation_system_namespace: String,
}

#[derive(Subcommand)]
enum Command {
    /// Join a cluster to the federation.
    Join {
        /// The cluster's name in the federation (a DNS label).
        cluster_name: String,
        #[command(flatten)]
        common: Common,
        /// The joining cluster's context (the cluster's name when unset).
        #[arg(long, default_value = "")]
        cluster_context: String,
        /// The credentials Secret's name in the host (generated when unset).
        #[arg(long)]
        secret_name: Option<String>,
        /// Store the cluster context's credentials from this kubeconfig instead of a
        /// service account's token (no RBAC objects are created).
        #[arg(long)]
        credentials_kubeconfig: Option<PathBuf>,
    },
    /// A whole federation on this machine: `up` starts it, `down` stops it.
    Local {
        #[command(subcommand)]
        action: Local,
        /// Where its processes keep state and logs.
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
        /// The kubeconfig that gets its contexts ($KUBECONFIG's first file or
        /// ~/.kube/config when unset).
        #[arg(long, global = true)]
        kubeconfig: Option<PathBuf>,
    },
    /// Remove a cluster from the federation.
    Unjoin {
        cluster_name: String,
        #[command(flatten)]
        common: Common,
        /// The cluster's context (the cluster's name when unset).
        #[arg(long, default_value = "")]
        cluster_context: String,
        /// Also delete from the cluster the objects the federation propagated to it (left
        /// there, orphaned, by default as in the original).
        #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
        remove_propagated: bool,
    },
}

#[derive(Subcommand)]
enum Local {
    /// Start three member clusters, the federation API server and the controller manager,
    /// join the clusters, and write the kubeconfig contexts.
    Up,
    /// Stop them and remove the contexts.
    Down,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("kubefed: error: {}", describe(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line; an API error by its message alone.
fn describe(e: &anyhow::Error) -> String {
    e.chain()
        .map(|cause| match cause.downcast_ref::<kube::Error>() {
            Some(kube::Error::Api(status)) => status.message.clone(),
            _ => cause.to_string(),
        })
        .collect::<Vec<_>>()
        .join(": ")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    match cli.command {
        Command::Join {
            cluster_name,
            common,
            cluster_context,
            secret_name,
            credentials_kubeconfig,
        } => {
            let contexts = Contexts::load(common.kubeconfig.as_deref())?;
            let options = JoinOptions {
                cluster: cluster_name,
                host_context: common.host_cluster_context,
                cluster_context,
                federation_context: common.context,
                namespace: common.federation_system_namespace,
                secret_name,
                credentials_kubeconfig,
            };
            join(&contexts, &options, &mut out).await
        }
        Command::Local {
            action,
            dir,
            kubeconfig,
        } => {
            let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
            let options = LocalOptions {
                dir: dir.unwrap_or_else(|| home.join(".fellowship").join("local")),
                kubeconfig: kubeconfig
                    .unwrap_or_else(fellowship_localcluster::kubeconfig::default_path),
            };
            match action {
                Local::Up => local::up(&options, &mut out).await,
                Local::Down => local::down(&options, &mut out),
            }
        }
        Command::Unjoin {
            cluster_name,
            common,
            cluster_context,
            remove_propagated,
        } => {
            let contexts = Contexts::load(common.kubeconfig.as_deref())?;
            let options = UnjoinOptions {
                cluster: cluster_name,
                host_context: common.host_cluster_context,
                cluster_context,
                federation_context: common.context,
                namespace: common.federation_system_namespace,
                remove_propagated,
            };
            unjoin(&contexts, &options, &mut out).await
        }
    }
}
