//! The federation controller manager binary: flags in, controllers running, its HTTP
//! endpoint served.

use std::sync::Arc;

use clap::Parser;
use fellowship_controllers::Options;
use fellowship_controllers::cluster::ClusterController;
use fellowship_controllers::federatedtypes;
use fellowship_controllers::leader::LeaderElection;
use fellowship_controllers::metrics::Metrics;
use fellowship_controllers::options::{PROTOBUF, SERVICE_DNS};
use fellowship_controllers::serving;
use fellowship_controllers::sync::SyncController;

/// Propagation allocates and frees at a high rate: mimalloc serves it markedly faster than
/// the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    fellowship_apimachinery::process::no_transparent_huge_pages();
    let options = Options::parse();
    let level = if options.v >= 4 { "debug" } else { "info" };
    fellowship_apimachinery::logging::init(level);
    if let Err(e) = run(options).await {
        eprintln!("federation-controller-manager: {e:#}");
        std::process::exit(1);
    }
}

async fn run(options: Options) -> anyhow::Result<()> {
    let federation = options.federation_client().await?;
    let version = federation
        .apiserver_version()
        .await
        .map_err(|e| anyhow::anyhow!("the federation API is not reachable: {e}"))?;
    tracing::info!(version = %version.git_version, "federation API");
    if options.controllers.get(SERVICE_DNS) == Some(&true) {
        anyhow::bail!(
            "--controllers: service-dns needs the DNS controller, which this build does not have yet"
        );
    }
    if options.kube_api_content_type == PROTOBUF {
        tracing::warn!(
            "--kube-api-content-type={PROTOBUF}: requests go as JSON, which this controller manager speaks"
        );
    }
    let types =
        federatedtypes::enabled(&federation, &options.controllers, &options.tuning()).await?;
    let host = options.host_client().await?;
    let metrics = Arc::new(Metrics::default());
    let clusters = Arc::new(ClusterController {
        federation,
        host,
        namespace: options.namespace(),
        period: options.cluster_monitor_period,
        metrics: metrics.clone(),
    });
    if options.port != 0 {
        let app = serving::router(metrics, options.profiling);
        let listener = tokio::net::TcpListener::bind((options.address, options.port))
            .await
            .map_err(|e| {
                anyhow::anyhow!("listening on {}:{}: {e}", options.address, options.port)
            })?;
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let election = if options.leader_elect {
        let hostname = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let election = LeaderElection::new(
            clusters.federation.clone(),
            &options.federation_only_namespace,
            format!("{hostname}_{}", std::process::id()),
            options.leader_elect_lease_duration,
            options.leader_elect_renew_deadline,
            options.leader_elect_retry_period,
        )
        .await?;
        tokio::select! {
            _ = election.acquire() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        Some(election)
    } else {
        None
    };
    let sync = SyncController::new(
        clusters.federation.clone(),
        clusters.host.clone(),
        clusters.namespace.clone(),
        types,
        &options.concurrency(),
        clusters.metrics.clone(),
    );
    let controllers = tokio::spawn(async move {
        tokio::join!(clusters.run(), sync.run());
    });
    let lost = async {
        match &election {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = controllers => Ok(()),
        _ = lost => anyhow::bail!("leader election lost"),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
}
