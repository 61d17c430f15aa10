//! The controller manager's flags (spec §9.2, those built so far), and where it finds the
//! federation API and the host cluster that keeps the members' credentials.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::federatedtypes::{self, Tuning};
use crate::ratelimit::RateLimit;
use crate::sync::Concurrency;

#[derive(Parser, Debug, Clone)]
#[command(name = "federation-controller-manager", version)]
pub struct Options {
    /// The federation API server's URL (overrides the kubeconfig's).
    #[arg(long, default_value = "")]
    pub master: String,
    /// Kubeconfig for the federation API (its current context).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Context of --kubeconfig to use for the federation API.
    #[arg(long)]
    pub context: Option<String>,
    /// Kubeconfig for the host cluster, where the members' credential Secrets live; in
    /// cluster (the pod's service account) when unset.
    #[arg(long)]
    pub host_kubeconfig: Option<PathBuf>,
    /// Context of --host-kubeconfig.
    #[arg(long)]
    pub host_context: Option<String>,
    /// Namespace of the credential Secrets in the host cluster; `$POD_NAMESPACE` when
    /// unset (in cluster), else `federation-system`.
    #[arg(long)]
    pub host_namespace: Option<String>,
    /// How often every member cluster is probed.
    #[arg(long, default_value = "40s", value_parser = fellowship_apimachinery::duration::parse)]
    pub cluster_monitor_period: Duration,
    /// Address of the HTTP endpoint serving /healthz, /metrics and /debug/pprof.
    #[arg(long, default_value = "0.0.0.0")]
    pub address: IpAddr,
    /// Port of that endpoint (0: none).
    #[arg(long, default_value_t = 10253)]
    pub port: u16,
    /// Serve a CPU profile of this process at /debug/pprof/profile on that endpoint.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub profiling: bool,
    /// Run as one of several replicas: act only while holding the leader Lease.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: bool,
    /// How long a Lease not renewed keeps others from taking it.
    #[arg(long, default_value = "15s", value_parser = fellowship_apimachinery::duration::parse)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader keeps acting without renewing before it stops.
    #[arg(long, default_value = "10s", value_parser = fellowship_apimachinery::duration::parse)]
    pub leader_elect_renew_deadline: Duration,
    /// How often candidates try, and the leader renews.
    #[arg(long, default_value = "2s", value_parser = fellowship_apimachinery::duration::parse)]
    pub leader_elect_retry_period: Duration,
    /// A federation namespace never propagated to members (spec §4.9); the leader Lease
    /// lives there.
    #[arg(long, default_value = "federation-only")]
    pub federation_only_namespace: String,
    /// Controllers to turn on or off, `key=true|false,...`, keys as spec §4.2 names them
    /// (`configmaps`, `deployments`, ...): each is on unless the federation API lacks its
    /// resource; one asked for by `true` whose resource is missing stops the start.
    #[arg(long, default_value = "", value_parser = parse_controllers)]
    pub controllers: Controllers,
    /// Services reconciled at once in each member cluster.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrent_service_syncs: u16,
    /// ReplicaSets reconciled at once in each member cluster, and Deployments as many.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrent_replicaset_syncs: u16,
    /// Jobs reconciled at once in each member cluster.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrent_job_syncs: u16,
    /// How long after a member HPA scaled its min and max stay as they are (spec §4.6):
    /// replicas are not moved between clusters faster than their HPAs settle.
    #[arg(long, default_value = "2m", value_parser = fellowship_apimachinery::duration::parse)]
    pub hpa_scale_forbidden_window: Duration,
    /// Requests a second to the federation API (0, the default: unlimited; the original's
    /// 20 would hold propagation to a few objects a second, and this controller batches
    /// its own writes instead).
    #[arg(long, default_value_t = 0)]
    pub federated_api_qps: u32,
    /// Requests the client may make at once above that rate.
    #[arg(long, default_value_t = 0)]
    pub federated_api_burst: u32,
    /// The content type of requests to the federation API: `application/json`. The
    /// original's `application/vnd.kubernetes.protobuf` is accepted and JSON is used (with
    /// a warning): this controller's clients speak JSON.
    #[arg(long, default_value = "", value_parser = parse_content_type)]
    pub kube_api_content_type: String,
    /// Log verbosity (0 info ... 4+ debug).
    #[arg(long, short = 'v', default_value_t = 0)]
    pub v: u8,
}

/// `--controllers`: the keys named, each on or off.
pub type Controllers = BTreeMap<String, bool>;

/// The keys of spec §4.2: a propagated type's plural, or the DNS controller.
pub const SERVICE_DNS: &str = "service-dns";

fn parse_controllers(text: &str) -> Result<Controllers, String> {
    let known: Vec<String> = federatedtypes::all(&Tuning::default())
        .into_iter()
        .map(|t| t.resource.plural)
        .chain([SERVICE_DNS.to_string()])
        .collect();
    let mut out = Controllers::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?}: expected key=true or key=false"))?;
        let on = match value {
            "true" => true,
            "false" => false,
            other => return Err(format!("{key}: {other:?} is neither true nor false")),
        };
        if !known.iter().any(|k| k == key) {
            return Err(format!(
                "{key:?} is not a controller; known: {}",
                known.join(", ")
            ));
        }
        out.insert(key.to_string(), on);
    }
    Ok(out)
}

pub const JSON: &str = "application/json";
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

fn parse_content_type(text: &str) -> Result<String, String> {
    match text {
        "" | JSON | PROTOBUF => Ok(text.to_string()),
        other => Err(format!("{other:?}: expected {JSON} or {PROTOBUF}")),
    }
}

async fn client(
    path: Option<&PathBuf>,
    context: Option<&String>,
    master: &str,
    limit: Option<RateLimit>,
) -> anyhow::Result<Client> {
    let mut config = match path {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let options = KubeConfigOptions {
                context: context.cloned(),
                ..Default::default()
            };
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("{}", path.display()))?
        }
        None => Config::infer()
            .await
            .context("no kubeconfig given and none found")?,
    };
    if !master.is_empty() {
        config.cluster_url = master.parse().context("--master")?;
    }
    let builder = ClientBuilder::try_from(config)?;
    Ok(match limit {
        Some(limit) => builder.with_layer(&limit).build(),
        None => builder.build(),
    })
}

impl Options {
    pub fn namespace(&self) -> String {
        self.host_namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|n| !n.is_empty())
            })
            .unwrap_or_else(|| "federation-system".into())
    }

    /// The settings of the federated types' adapters.
    pub fn tuning(&self) -> Tuning {
        Tuning {
            hpa_scale_forbidden_window: self.hpa_scale_forbidden_window,
        }
    }

    /// The `--concurrent-*-syncs` flags, by the plurals they apply to.
    pub fn concurrency(&self) -> Concurrency {
        [
            ("services", self.concurrent_service_syncs),
            ("replicasets", self.concurrent_replicaset_syncs),
            ("deployments", self.concurrent_replicaset_syncs),
            ("jobs", self.concurrent_job_syncs),
        ]
        .into_iter()
        .map(|(plural, n)| (plural.to_string(), usize::from(n)))
        .collect()
    }

    pub async fn federation_client(&self) -> anyhow::Result<Client> {
        client(
            self.kubeconfig.as_ref(),
            self.context.as_ref(),
            &self.master,
            RateLimit::new(self.federated_api_qps, self.federated_api_burst),
        )
        .await
        .context("the federation API")
    }

    pub async fn host_client(&self) -> anyhow::Result<Client> {
        client(
            self.host_kubeconfig.as_ref(),
            self.host_context.as_ref(),
            "",
            None,
        )
        .await
        .context("the host cluster")
    }
}
