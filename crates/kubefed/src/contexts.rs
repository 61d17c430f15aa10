//! The kubeconfig the commands work from: clients for its contexts, their servers, and a
//! minified, flattened copy of one context for the kubeconfig credential path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub struct Contexts {
    pub kubeconfig: Kubeconfig,
    pub path: String,
}

/// How long a cluster may take to answer before it counts as unreachable.
const REACH: Duration = Duration::from_secs(10);

impl Contexts {
    /// The file given, else `$KUBECONFIG` or `~/.kube/config`.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Contexts> {
        let (kubeconfig, path) = match path {
            Some(p) => (
                Kubeconfig::read_from(p).with_context(|| format!("reading {}", p.display()))?,
                p.display().to_string(),
            ),
            None => (
                Kubeconfig::read()
                    .context("reading the kubeconfig ($KUBECONFIG or ~/.kube/config)")?,
                std::env::var("KUBECONFIG").unwrap_or_else(|_| "~/.kube/config".into()),
            ),
        };
        Ok(Contexts { kubeconfig, path })
    }

    /// The context named, or the current one when `name` is empty.
    pub fn resolve(&self, name: &str) -> anyhow::Result<String> {
        let name = if name.is_empty() {
            self.kubeconfig.current_context.clone().ok_or_else(|| {
                anyhow!("no context given and no current context in {}", self.path)
            })?
        } else {
            name.to_string()
        };
        if !self.kubeconfig.contexts.iter().any(|c| c.name == name) {
            bail!("context {name:?} is not in {}", self.path);
        }
        Ok(name)
    }

    /// A client for a context, checked to answer.
    pub async fn client(&self, context: &str) -> anyhow::Result<Client> {
        let options = KubeConfigOptions {
            context: Some(context.to_string()),
            ..Default::default()
        };
        let mut config = Config::from_custom_kubeconfig(self.kubeconfig.clone(), &options)
            .await
            .with_context(|| format!("context {context:?}"))?;
        config.connect_timeout = Some(REACH);
        config.read_timeout = Some(REACH);
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config)?;
        match tokio::time::timeout(REACH, client.apiserver_version()).await {
            Ok(Ok(_)) => Ok(client),
            Ok(Err(e)) => {
                bail!("the cluster of context {context:?} ({server}) does not answer: {e}")
            }
            Err(_) => bail!("the cluster of context {context:?} ({server}) is unreachable"),
        }
    }

    fn cluster_of(&self, context: &str) -> anyhow::Result<&kube::config::Cluster> {
        let ctx = self
            .kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == context)
            .and_then(|c| c.context.as_ref())
            .ok_or_else(|| anyhow!("context {context:?} is not in {}", self.path))?;
        self.kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == ctx.cluster)
            .and_then(|c| c.cluster.as_ref())
            .ok_or_else(|| {
                anyhow!(
                    "context {context:?} names cluster {:?}, which is not in {}",
                    ctx.cluster,
                    self.path
                )
            })
    }

    /// The API server address of a context, with a scheme.
    pub fn server(&self, context: &str) -> anyhow::Result<String> {
        let server = self
            .cluster_of(context)?
            .server
            .clone()
            .ok_or_else(|| anyhow!("context {context:?} has no server"))?;
        Ok(if server.contains("://") {
            server
        } else {
            format!("https://{server}")
        })
    }

    /// One context alone, its certificate files read into the file (what the kubeconfig
    /// credential path stores in the host cluster).
    pub fn flattened(&self, context: &str) -> anyhow::Result<String> {
        let ctx = self
            .kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == context)
            .cloned()
            .ok_or_else(|| anyhow!("context {context:?} is not in {}", self.path))?;
        let inner = ctx
            .context
            .clone()
            .ok_or_else(|| anyhow!("context {context:?} is empty"))?;
        let mut cluster = self
            .kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == inner.cluster)
            .cloned()
            .ok_or_else(|| anyhow!("cluster {:?} is not in {}", inner.cluster, self.path))?;
        let mut user = self
            .kubeconfig
            .auth_infos
            .iter()
            .find(|u| Some(&u.name) == inner.user.as_ref())
            .cloned();
        let inline = |file: &mut Option<String>, data: &mut Option<String>| -> anyhow::Result<()> {
            if let Some(f) = file.take() {
                let bytes =
                    std::fs::read(PathBuf::from(&f)).with_context(|| format!("reading {f}"))?;
                *data = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
            Ok(())
        };
        if let Some(c) = cluster.cluster.as_mut() {
            inline(
                &mut c.certificate_authority,
                &mut c.certificate_authority_data,
            )?;
        }
        if let Some(u) = user.as_mut().and_then(|u| u.auth_info.as_mut()) {
            inline(&mut u.client_certificate, &mut u.client_certificate_data)?;
            let mut key_data = None;
            inline(&mut u.client_key, &mut key_data)?;
            if let Some(k) = key_data {
                u.client_key_data = Some(k.into());
            }
        }
        let minified = Kubeconfig {
            clusters: vec![cluster],
            auth_infos: user.into_iter().collect(),
            contexts: vec![ctx],
            current_context: Some(context.to_string()),
            api_version: Some("v1".into()),
            kind: Some("Config".into()),
            ..Default::default()
        };
        Ok(serde_saphyr::to_string(&minified)?)
    }
}
