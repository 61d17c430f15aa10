//! The federation API server binary: flags in, HTTPS out.

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use fellowship_apiserver::server::Surface;
use fellowship_apiserver::{App, Options, namespaces, registry, server, tls};

/// Every request allocates and frees at a high rate: mimalloc serves it markedly faster
/// than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    fellowship_apimachinery::process::no_transparent_huge_pages();
    let options = Options::parse();
    let level = match options.v {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    fellowship_apimachinery::logging::init(level);
    if let Err(e) = run(options).await {
        eprintln!("federation-apiserver: {e:#}");
        std::process::exit(1);
    }
}

async fn run(options: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    // Configuration errors first, before anything is created on disk.
    let registry = registry::Registry::new(options.resources()?);
    let namespaces = registry
        .get("", "v1", "namespaces")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the registry must serve namespaces"))?;
    let admission = options.admission(namespaces)?;
    let auth = options.authenticator()?;
    let tls = tls::server_config(&options.tls())?;
    let store = options.open_store().await?;
    let mut app = App::new(Surface::new(registry), store, auth, options.advertise())?;
    app.rest.event_ttl = options.event_ttl;
    app.profiling = options.profiling;
    app.rest.admission = Arc::new(admission);
    tracing::info!(plugins = ?app.rest.admission.names(), "admission");
    app.ensure_namespaces(&["default"]).await?;
    let addr = format!("{}:{}", options.bind_address, options.secure_port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {addr}: {e}"))?;
    tracing::info!(%addr, ready_in = ?started.elapsed(), "serving");
    let app = Arc::new(app);
    tokio::spawn(namespaces::run(app.clone()));
    tokio::select! {
        _ = server::serve(listener, tls, app) => Ok(()),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
}
