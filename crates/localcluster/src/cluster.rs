//! One local cluster: its store, its API server on its own port, its control loops.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use anyhow::Context;
use fellowship_apiserver::auth::{Authenticator, TokenTable, User};
use fellowship_apiserver::server::{self, Surface};
use fellowship_apiserver::{App, admission, namespaces};
use fellowship_storage::Store;
use fellowship_storage::embedded::{EmbeddedConfig, EmbeddedStore};
use rand::Rng as _;
use tokio::task::JoinHandle;

use crate::addresses::ServiceAddresses;
use crate::config::{ClusterConfig, Simulation};
use crate::controllers::Controllers;

/// What every cluster of a fleet shares.
pub struct Shared {
    pub surface: Arc<Surface>,
    pub tls: Arc<rustls::ServerConfig>,
    pub ca_pem: String,
    pub simulation: Simulation,
    /// Each cluster keeps its store in a directory of its name here; in memory when `None`.
    pub data_dir: Option<PathBuf>,
}

pub struct LocalCluster {
    pub config: ClusterConfig,
    pub port: u16,
    /// The administrator's bearer token (user `admin`, group `system:masters`).
    pub token: String,
    pub app: Arc<App>,
    index: usize,
    store: Arc<dyn Store>,
    tasks: Vec<JoinHandle<()>>,
}

/// A stopped cluster that can come back: see [`LocalCluster::pause`].
pub struct Paused {
    pub config: ClusterConfig,
    index: usize,
    store: Arc<dyn Store>,
    token: String,
}

/// Events kept per cluster for watches: far fewer than a federation API server keeps.
const HISTORY: usize = 10_000;

pub fn random_token() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

impl LocalCluster {
    pub async fn start(
        config: ClusterConfig,
        index: usize,
        shared: &Shared,
    ) -> anyhow::Result<LocalCluster> {
        let store_config = match &shared.data_dir {
            Some(dir) => EmbeddedConfig::durable(dir.join(&config.name)),
            None => EmbeddedConfig::memory(),
        };
        let store: Arc<dyn Store> = Arc::new(
            EmbeddedStore::open(EmbeddedConfig {
                history_limit: HISTORY,
                ..store_config
            })
            .await
            .with_context(|| format!("cluster {}: opening its store", config.name))?,
        );
        Self::serve(config, index, shared, store, random_token()).await
    }

    /// Serves `store` as the cluster `config` names, with `token` for its administrator.
    async fn serve(
        config: ClusterConfig,
        index: usize,
        shared: &Shared,
        store: Arc<dyn Store>,
        token: String,
    ) -> anyhow::Result<LocalCluster> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
            .await
            .with_context(|| {
                format!(
                    "cluster {}: listening on 127.0.0.1:{}",
                    config.name, config.port
                )
            })?;
        let port = listener.local_addr()?.port();
        let tokens = Arc::new(TokenTable::default());
        let mut auth = Authenticator::default();
        auth.add_token(
            token.clone(),
            User {
                name: "admin".into(),
                uid: "admin".into(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
            },
        );
        auth.dynamic_tokens = Some(tokens.clone());
        let mut app = App::new(
            shared.surface.clone(),
            store.clone(),
            auth,
            format!("127.0.0.1:{port}"),
        )?;
        let mut chain = admission::chain(&[], &[], &[], app.rest.namespaces.clone())?;
        chain.push(Box::new(ServiceAddresses::default()));
        app.rest.admission = Arc::new(chain);
        // The simulated control loops collect garbage, orphaning when asked.
        app.rest.garbage_collector = true;
        app.ensure_namespaces(&["default", "kube-system", "kube-public", "kube-node-lease"])
            .await?;
        let app = Arc::new(app);
        let controllers = Arc::new(Controllers {
            access: crate::access::Access::new(
                app.clone(),
                shared.simulation.controller_qps,
                shared.simulation.controller_burst,
            )?,
            config: config.clone(),
            index,
            simulation: shared.simulation.clone(),
            tokens,
            ca_pem: shared.ca_pem.clone(),
            next_pod_ip: AtomicU32::new(0),
        });
        let tasks = vec![
            tokio::spawn(server::serve(listener, shared.tls.clone(), app.clone())),
            tokio::spawn(namespaces::run(app.clone())),
            tokio::spawn(controllers.run()),
        ];
        Ok(LocalCluster {
            config,
            index,
            port,
            token,
            app,
            store,
            tasks,
        })
    }

    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Stops serving (its connections closed) and simulating; the store goes with the
    /// last reference to it.
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }

    /// Stops it, keeping what it needs to come back as it was (see [`Self::resume`]).
    pub fn pause(self) -> Paused {
        let mut config = self.config.clone();
        config.port = self.port;
        let paused = Paused {
            config,
            index: self.index,
            store: self.store.clone(),
            token: self.token.clone(),
        };
        self.stop();
        paused
    }

    /// The cluster back on its port, with its content and its administrator's token, as
    /// after a restart of a real cluster's control plane.
    pub async fn resume(paused: Paused, shared: &Shared) -> anyhow::Result<LocalCluster> {
        Self::serve(
            paused.config,
            paused.index,
            shared,
            paused.store,
            paused.token,
        )
        .await
    }
}
