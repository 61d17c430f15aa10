//! Many local clusters in one process, sharing what can be shared (the API surface, the
//! certificate), each with its own port, store and control loops.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use fellowship_apiserver::registry::{Registry, member};
use fellowship_apiserver::server::Surface;
use fellowship_apiserver::tls::{self, TlsOptions};

use crate::cluster::{LocalCluster, Paused, Shared};
use crate::config::FleetConfig;
use crate::kubeconfig;

pub struct Fleet {
    pub clusters: Vec<LocalCluster>,
    pub ca_pem: String,
    shared: Arc<Shared>,
    paused: Vec<Paused>,
}

impl Fleet {
    /// Starts every cluster of `config`; certificates go to `dir`, stores to `data_dir`
    /// (memory when `None`).
    pub async fn start(
        config: FleetConfig,
        dir: &Path,
        data_dir: Option<PathBuf>,
    ) -> anyhow::Result<Fleet> {
        config.check()?;
        let pki = crate::pki::generate(dir)?;
        let tls = tls::server_config(&TlsOptions {
            cert_file: Some(pki.cert_file.clone()),
            key_file: Some(pki.key_file.clone()),
            cert_dir: dir.to_path_buf(),
            client_ca_file: None,
            hosts: Vec::new(),
        })?;
        let shared = Arc::new(Shared {
            surface: Surface::new(Registry::new(member())),
            tls,
            ca_pem: pki.ca_pem.clone(),
            simulation: config.simulation.clone(),
            data_dir,
        });
        let starting: Vec<_> = config
            .clusters
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let shared = shared.clone();
                tokio::spawn(async move { LocalCluster::start(c, i, &shared).await })
            })
            .collect();
        let mut clusters = Vec::new();
        for s in starting {
            clusters.push(s.await.context("a cluster's start panicked")??);
        }
        Ok(Fleet {
            clusters,
            ca_pem: pki.ca_pem,
            shared,
            paused: Vec::new(),
        })
    }

    pub fn get(&self, name: &str) -> Option<&LocalCluster> {
        self.clusters.iter().find(|c| c.config.name == name)
    }

    /// Stops one cluster for good; the others go on.
    pub fn stop_cluster(&mut self, name: &str) -> bool {
        self.pause_cluster(name) && self.paused.pop().is_some()
    }

    /// Stops one cluster so that [`Self::resume_cluster`] can bring it back as it was.
    pub fn pause_cluster(&mut self, name: &str) -> bool {
        match self.clusters.iter().position(|c| c.config.name == name) {
            Some(i) => {
                let paused = self.clusters.remove(i).pause();
                self.paused.push(paused);
                true
            }
            None => false,
        }
    }

    /// A paused cluster back, on its port, with its content and token.
    pub async fn resume_cluster(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self
            .paused
            .iter()
            .position(|p| p.config.name == name)
            .with_context(|| format!("no paused cluster {name}"))?;
        let cluster = LocalCluster::resume(self.paused.remove(i), &self.shared).await?;
        self.clusters.push(cluster);
        Ok(())
    }

    pub fn contexts(&self) -> Vec<kubeconfig::Context> {
        self.clusters
            .iter()
            .map(|c| kubeconfig::Context {
                name: c.config.name.clone(),
                server: c.server(),
                ca_pem: self.ca_pem.clone(),
                token: c.token.clone(),
            })
            .collect()
    }

    pub fn stop(self) {
        for c in self.clusters {
            c.stop();
        }
    }
}
