//! Clients for member clusters, built from what the federation holds for each: the Cluster's
//! server address and the credentials Secret it names, in the host cluster's federation
//! namespace (spec §3.1): a `token` with its `ca.crt`, or a whole `kubeconfig`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Secret;
use kube::client::ConfigExt as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Status;
use kube::{Api, Client, Config};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt as _};

/// How long one request to a member may take: a slow member must not hold up the others.
pub const MEMBER_TIMEOUT: Duration = Duration::from_secs(5);

/// The server address a Cluster gives for clients anywhere (`0.0.0.0/0`), else its first.
pub fn server_address(cluster: &Value) -> Option<String> {
    let entries = cluster
        .pointer("/spec/serverAddressByClientCIDRs")?
        .as_array()?;
    let entry = entries
        .iter()
        .find(|e| e["clientCIDR"] == "0.0.0.0/0")
        .or_else(|| entries.first())?;
    let address = entry["serverAddress"].as_str()?;
    Some(if address.contains("://") {
        address.to_string()
    } else {
        format!("https://{address}")
    })
}

fn data(secret: &Secret) -> BTreeMap<&str, &[u8]> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
        .collect()
}

/// A kubeconfig of one context from a cluster entry and a user entry.
fn kubeconfig(cluster: Value, user: Value) -> anyhow::Result<Kubeconfig> {
    let document = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "member", "cluster": cluster}],
        "users": [{"name": "member", "user": user}],
        "contexts": [{"name": "member", "context": {"cluster": "member", "user": "member"}}],
        "current-context": "member",
    });
    Ok(Kubeconfig::from_yaml(&serde_json::to_string(&document)?)?)
}

/// A client for the member a Cluster describes, with the credentials of `secret`, for
/// short requests (health probes, `kubefed unjoin`): a member that stops answering
/// mid-request fails it after [`MEMBER_TIMEOUT`] instead of holding it.
pub async fn client(cluster: &Value, secret: Option<&Secret>) -> anyhow::Result<Client> {
    let mut config = config(cluster, secret).await?;
    config.read_timeout = Some(MEMBER_TIMEOUT);
    Ok(Client::try_from(config)?)
}

/// A client for the member a Cluster describes, and a [`Writer`] of copies to it.
pub async fn clients(cluster: &Value, secret: Option<&Secret>) -> anyhow::Result<(Client, Writer)> {
    let config = config(cluster, secret).await?;
    // Through a proxy, copies go as everything else does: the lean path connects directly.
    let direct = match config.proxy_url {
        None => Some(Writer::direct(&config)?),
        Some(_) => None,
    };
    let client = Client::try_from(config)?;
    let writer = direct.unwrap_or_else(|| Writer::Kube(client.clone()));
    Ok((client, writer))
}

async fn config(cluster: &Value, secret: Option<&Secret>) -> anyhow::Result<Config> {
    let server = server_address(cluster).context("the cluster has no server address")?;
    let data = secret.map(data).unwrap_or_default();
    let kubeconfig = match (data.get("token"), data.get("ca.crt")) {
        (Some(token), Some(ca)) => {
            let token = std::str::from_utf8(token).context("the token is not text")?;
            let ca = base64::engine::general_purpose::STANDARD.encode(ca);
            kubeconfig(
                json!({"server": server, "certificate-authority-data": ca}),
                json!({"token": token.trim()}),
            )?
        }
        (Some(_), None) | (None, Some(_)) => {
            bail!("the credentials Secret has only one of token and ca.crt")
        }
        (None, None) => match data.get("kubeconfig") {
            Some(k) => {
                Kubeconfig::from_yaml(std::str::from_utf8(k).context("kubeconfig is not text")?)
                    .context("the credentials Secret's kubeconfig")?
            }
            None if secret.is_some() => {
                bail!("the credentials Secret has neither token and ca.crt nor kubeconfig")
            }
            // No secretRef: anonymous access, as the original allowed.
            None => kubeconfig(
                json!({"server": server, "insecure-skip-tls-verify": true}),
                json!({}),
            )?,
        },
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("the member's client configuration")?;
    config.cluster_url = server.parse().context("the server address")?;
    // Only connecting is bounded here: a read limit would also cut the long-lived watches
    // the sync controller keeps open (requests that must be quick are bounded by callers).
    config.connect_timeout = Some(MEMBER_TIMEOUT);
    Ok(config)
}

type Requests = BoxCloneSyncService<Request<Full<Bytes>>, Response<Incoming>, BoxError>;

/// Reads and writes copies in a member: the connections and credentials of a kube
/// client, without the layers a kube client stacks on every request (a hand-over to
/// another task and back, a copy of the body kept for a retry, a tracing span, a body
/// copied twice on the way back). Propagation writes a copy every few microseconds; those
/// layers cost more than the controller's own work per copy. Retries are the sync
/// controller's. Each request is bounded by [`MEMBER_TIMEOUT`].
#[derive(Clone)]
pub enum Writer {
    Direct(Requests),
    /// Through the member's kube client (a proxy is configured).
    Kube(Client),
}

impl Writer {
    fn direct(config: &Config) -> anyhow::Result<Writer> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(config.connect_timeout);
        let https = config.rustls_https_connector_with_connector(http)?;
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
        let service = ServiceBuilder::new()
            .layer(config.base_uri_layer())
            .option_layer(config.auth_layer()?)
            .layer(config.extra_headers_layer()?)
            .map_err(BoxError::from)
            .service(client);
        Ok(Writer::Direct(BoxCloneSyncService::new(service)))
    }

    /// Sends `request`; its reply is read as `T`, an error reply as kube's `Api` error.
    pub async fn send<T: DeserializeOwned>(&self, request: Request<Vec<u8>>) -> kube::Result<T> {
        let sent = async {
            match self {
                Writer::Direct(service) => Self::send_direct(service, request).await,
                Writer::Kube(client) => client.request(request).await,
            }
        };
        tokio::time::timeout(MEMBER_TIMEOUT, sent)
            .await
            .unwrap_or_else(|_| {
                let late = format!("no answer within {}s", MEMBER_TIMEOUT.as_secs());
                Err(kube::Error::Service(late.into()))
            })
    }

    async fn send_direct<T: DeserializeOwned>(
        service: &Requests,
        request: Request<Vec<u8>>,
    ) -> kube::Result<T> {
        let request = request.map(|body| Full::new(Bytes::from(body)));
        let response = service
            .clone()
            .oneshot(request)
            .await
            .map_err(kube::Error::Service)?;
        let code = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(kube::Error::HyperError)?
            .to_bytes();
        if code.is_client_error() || code.is_server_error() {
            let status = serde_json::from_slice::<Status>(&body).unwrap_or_else(|_| {
                let text = String::from_utf8_lossy(&body);
                Status::failure(text.trim(), "Failed to parse error data").with_code(code.as_u16())
            });
            return Err(kube::Error::Api(status.boxed()));
        }
        serde_json::from_slice(&body).map_err(kube::Error::SerdeError)
    }
}

/// The Secret a Cluster names, from the host cluster's federation namespace.
pub async fn secret(
    host: &Client,
    namespace: &str,
    cluster: &Value,
) -> anyhow::Result<Option<Secret>> {
    let Some(name) = cluster
        .pointer("/spec/secretRef/name")
        .and_then(Value::as_str)
    else {
        return Ok(None);
    };
    let secrets: Api<Secret> = Api::namespaced(host.clone(), namespace);
    match secrets.get_opt(name).await? {
        Some(s) => Ok(Some(s)),
        None => bail!("the credentials Secret {namespace}/{name} does not exist (yet)"),
    }
}
