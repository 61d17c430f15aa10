//! The HTTPS server: TLS with optional client certificates, authentication, routing of
//! discovery and resource paths, health and metrics endpoints.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::Response;
use fellowship_apimachinery::ApiError;
use fellowship_apimachinery::profiling::{self, ProfileError};
use fellowship_storage::Store;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::auth::{Authenticator, User, user_from_certificate};
use crate::discovery;
use crate::metrics::Metrics;
use crate::objects::MAX_BODY;
use crate::openapi::OpenApi;
use crate::registry::Registry;
use crate::reply::{Reply, error_response};
use crate::rest::{Query, Rest, Target};
use crate::schemas::Schemas;

/// A CPU profile of the whole process, pprof-encoded, for `?seconds=N` (30 by default).
async fn cpu_profile(query: &Query) -> Result<Reply, ApiError> {
    match profiling::cpu(query.get("seconds").map(String::as_str)).await {
        Ok(body) => Ok(Reply::Binary {
            content_type: "application/octet-stream",
            body: body.into(),
        }),
        Err(e @ ProfileError::Seconds) => Err(ApiError::bad_request(e.to_string())),
        Err(e @ ProfileError::Busy) => Err(ApiError::too_many_requests(e.to_string(), 10)),
        Err(e @ ProfileError::Failed(_)) => Err(ApiError::internal(e.to_string())),
    }
}

/// What a server serves, built once from its registry and shared by every server that
/// serves the same resources (the many local clusters of one process).
pub struct Surface {
    pub registry: Registry,
    pub schemas: Arc<Schemas>,
    openapi: OpenApi,
}

impl Surface {
    pub fn new(registry: Registry) -> Arc<Surface> {
        let schemas = Arc::new(Schemas::new(registry.all().map(|k| &**k)));
        let openapi = OpenApi::new(&registry, &schemas);
        Arc::new(Surface {
            registry,
            schemas,
            openapi,
        })
    }
}

/// Everything a request needs.
pub struct App {
    pub surface: Arc<Surface>,
    pub rest: Rest,
    pub auth: Authenticator,
    /// The address `/api` advertises to clients.
    pub advertise: String,
    /// Serve a CPU profile of the process at `/debug/pprof/profile` (`--profiling`).
    pub profiling: bool,
    metrics: Metrics,
}

impl App {
    pub fn new(
        surface: Arc<Surface>,
        store: Arc<dyn Store>,
        auth: Authenticator,
        advertise: String,
    ) -> anyhow::Result<App> {
        let namespaces = surface
            .registry
            .get("", "v1", "namespaces")
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("the registry must serve namespaces"))?;
        let schemas = surface.schemas.clone();
        Ok(App {
            surface,
            rest: Rest {
                store,
                admission: Arc::new(crate::admission::chain(&[], &[], &[], namespaces.clone())?),
                namespaces,
                event_ttl: Duration::from_secs(3600),
                schemas,
                garbage_collector: false,
            },
            auth,
            advertise,
            profiling: false,
            metrics: Metrics::default(),
        })
    }

    /// Creates the `default` namespace (and others given) if missing.
    pub async fn ensure_namespaces(&self, names: &[&str]) -> anyhow::Result<()> {
        for name in names {
            let t = Target {
                kind: self.rest.namespaces.clone(),
                namespace: String::new(),
                name: String::new(),
                subresource: None,
            };
            let body = serde_json::to_vec(&json!({"metadata": {"name": name}}))?;
            match self.rest.create(&t, &Query::new(), &body).await {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => anyhow::bail!("creating namespace {name}: {e}"),
            }
        }
        Ok(())
    }

    pub async fn handle(&self, req: Request<Body>, cert_user: Option<&Arc<User>>) -> Response {
        let started = std::time::Instant::now();
        let (method, uri) = (req.method().clone(), req.uri().clone());
        let (verb, resource) = crate::metrics::labels(method.as_str(), uri.path(), uri.query());
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let result = match self.auth.authenticate(req.headers(), cert_user) {
            Ok(_user) => self.route(req).await,
            Err(e) => Err(e),
        };
        let response = match result {
            Ok(reply) => reply.into_response(&accept),
            Err(e) => error_response(&e),
        };
        self.metrics.observe(
            verb,
            resource,
            response.status().as_u16(),
            started.elapsed(),
        );
        response
    }

    async fn route(&self, req: Request<Body>) -> Result<Reply, ApiError> {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let query: Query = req
            .uri()
            .query()
            .map(|q| {
                axum::extract::Query::<HashMap<String, String>>::try_from_uri(req.uri())
                    .map(|axum::extract::Query(q)| q)
                    .map_err(|e| ApiError::bad_request(format!("invalid query {q:?}: {e}")))
            })
            .transpose()?
            .unwrap_or_default();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let ok = |body| Ok(Reply::json(StatusCode::OK, body));
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .unwrap_or("");
        if let (["api"] | ["apis"], Some(version)) =
            (segments.as_slice(), discovery::aggregated_version(accept))
        {
            let api_version = format!("apidiscovery.k8s.io/{version}");
            let body =
                discovery::aggregated(&self.surface.registry, segments == ["api"], &api_version);
            return Ok(Reply::Discovery { version, body });
        }
        match segments.as_slice() {
            ["healthz" | "livez" | "readyz", ..] => return Ok(Reply::Text("ok".into())),
            ["version"] => return ok(discovery::version()),
            ["metrics"] => return Ok(Reply::Text(self.metrics.render())),
            ["debug", "pprof", "profile"] if self.profiling => return cpu_profile(&query).await,
            ["api"] => return ok(discovery::core_versions(&self.advertise)),
            ["openapi", "v2"]
                if accept.contains("application/com.github.proto-openapi.spec.v2") =>
            {
                return Ok(Reply::Binary {
                    content_type: crate::openapi_proto::CONTENT_TYPE,
                    body: self.surface.openapi.v2_protobuf(),
                });
            }
            ["openapi", "v2"] => return ok(self.surface.openapi.v2().clone()),
            ["openapi", "v3"] => return ok(self.surface.openapi.v3_index()),
            ["openapi", "v3", gv @ ..] => {
                let doc = self
                    .surface
                    .openapi
                    .v3(&gv.join("/"))
                    .ok_or_else(ApiError::no_route)?;
                return ok(doc.clone());
            }
            ["apis"] => return ok(discovery::groups(&self.surface.registry)),
            ["api", "v1"] => {
                return ok(discovery::resources(&self.surface.registry, "", "v1")
                    .ok_or_else(ApiError::no_route)?);
            }
            ["apis", g] => {
                return ok(
                    discovery::group(&self.surface.registry, g).ok_or_else(ApiError::no_route)?
                );
            }
            ["apis", g, v] => {
                return ok(discovery::resources(&self.surface.registry, g, v)
                    .ok_or_else(ApiError::no_route)?);
            }
            _ => {}
        }
        let (group, version, rest) = match segments.as_slice() {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return Err(ApiError::no_route()),
        };
        let target = self.target(group, version, rest)?;
        let method = req.method().clone();
        let headers = req.headers().clone();
        let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| {
                ApiError::too_large(format!("the request body is larger than {MAX_BODY} bytes"))
            })?;
        self.rest
            .serve(&method, &target, &query, &headers, body)
            .await
    }

    /// Resolves the path after `/api/v1` or `/apis/{group}/{version}`.
    fn target(&self, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
        let find = |plural: &str| self.surface.registry.get(group, version, plural).cloned();
        let target = |kind, namespace: &str, name: &str, sub: Option<&&str>| Target {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            subresource: sub.map(|s| s.to_string()),
        };
        let t = match rest {
            ["namespaces", ns, plural, tail @ ..]
                if find(plural).is_some_and(|k| k.namespaced()) =>
            {
                let kind = find(plural).expect("checked");
                match tail {
                    [] => target(kind, ns, "", None),
                    [name] => target(kind, ns, name, None),
                    [name, sub] if kind.subresources.contains(sub) => {
                        target(kind, ns, name, Some(sub))
                    }
                    _ => return Err(ApiError::no_route()),
                }
            }
            [plural, tail @ ..] => {
                let kind = find(plural).ok_or_else(ApiError::no_route)?;
                match tail {
                    [] => target(kind, "", "", None),
                    [name] if !kind.namespaced() => target(kind, "", name, None),
                    [name, sub] if !kind.namespaced() && kind.subresources.contains(sub) => {
                        target(kind, "", name, Some(sub))
                    }
                    _ => return Err(ApiError::no_route()),
                }
            }
            [] => return Err(ApiError::no_route()),
        };
        Ok(t)
    }
}

/// Serves HTTPS on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, app: Arc<App>) {
    let acceptor = TlsAcceptor::from(tls);
    // Connections live in this set, so a server stopped (this future dropped) closes them
    // all, watches included, as a process exiting would.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        connections.spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let cert_user: Option<Arc<User>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| user_from_certificate(c))
                .map(Arc::new);
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (app, cert_user) = (app.clone(), cert_user.clone());
                async move {
                    let req = req.map(Body::new);
                    let mut resp = app.handle(req, cert_user.as_ref()).await;
                    resp.headers_mut().insert(
                        "cache-control",
                        HeaderValue::from_static("no-cache, private"),
                    );
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}
