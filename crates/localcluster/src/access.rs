//! In-process access to one cluster's objects for its simulated control loops: reads from
//! the store, writes through the same REST layer as HTTP requests (validation, admission,
//! resourceVersion checks, managedFields), without the HTTP.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, Method};
use bytes::Bytes;
use fellowship_apimachinery::{ApiError, ResourceKind};
use fellowship_apiserver::App;
use fellowship_apiserver::objects::present;
use fellowship_apiserver::reply::Reply;
use fellowship_apiserver::rest::{Query, Target};
use fellowship_storage::ListOptions;
use serde_json::Value;

/// The resources the control loops use, looked up once.
pub struct Kinds {
    pub namespaces: Arc<ResourceKind>,
    pub nodes: Arc<ResourceKind>,
    pub pods: Arc<ResourceKind>,
    pub services: Arc<ResourceKind>,
    pub endpoints: Arc<ResourceKind>,
    pub endpoint_slices: Arc<ResourceKind>,
    pub service_accounts: Arc<ResourceKind>,
    pub secrets: Arc<ResourceKind>,
    pub deployments: Arc<ResourceKind>,
    pub replica_sets: Arc<ResourceKind>,
    pub daemon_sets: Arc<ResourceKind>,
    pub jobs: Arc<ResourceKind>,
    pub hpas: Arc<ResourceKind>,
}

pub struct Access {
    pub app: Arc<App>,
    pub kinds: Kinds,
}

impl Access {
    pub fn new(app: Arc<App>) -> anyhow::Result<Access> {
        let find = |group: &str, version: &str, plural: &str| {
            app.surface
                .registry
                .get(group, version, plural)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("the member registry lacks {plural}"))
        };
        let kinds = Kinds {
            namespaces: find("", "v1", "namespaces")?,
            nodes: find("", "v1", "nodes")?,
            pods: find("", "v1", "pods")?,
            services: find("", "v1", "services")?,
            endpoints: find("", "v1", "endpoints")?,
            endpoint_slices: find("discovery.k8s.io", "v1", "endpointslices")?,
            service_accounts: find("", "v1", "serviceaccounts")?,
            secrets: find("", "v1", "secrets")?,
            deployments: find("apps", "v1", "deployments")?,
            replica_sets: find("apps", "v1", "replicasets")?,
            daemon_sets: find("apps", "v1", "daemonsets")?,
            jobs: find("batch", "v1", "jobs")?,
            hpas: find("autoscaling", "v2", "horizontalpodautoscalers")?,
        };
        Ok(Access { app, kinds })
    }

    /// The objects of `kind` in `namespace` (every namespace when empty).
    pub async fn list(&self, kind: &ResourceKind, namespace: &str) -> Result<Vec<Value>, ApiError> {
        let page = self
            .app
            .rest
            .store
            .list(&kind.key(namespace, ""), ListOptions::default())
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        page.items.iter().map(|kv| present(kv, kind)).collect()
    }

    pub async fn get(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let kv = self
            .app
            .rest
            .store
            .get(&kind.key(namespace, name))
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        kv.map(|kv| present(&kv, kind)).transpose()
    }

    async fn call(
        &self,
        method: Method,
        target: Target,
        manager: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, ApiError> {
        let query: Query = HashMap::from([("fieldManager".to_string(), manager.to_string())]);
        let body = body
            .map(|b| Bytes::from(serde_json::to_vec(b).expect("JSON values serialize")))
            .unwrap_or_default();
        let reply = self
            .app
            .rest
            .serve(&method, &target, &query, &HeaderMap::new(), body)
            .await?;
        Ok(match reply {
            Reply::Object { object, .. } => Some(object),
            _ => None,
        })
    }

    pub async fn create(
        &self,
        kind: &Arc<ResourceKind>,
        namespace: &str,
        manager: &str,
        object: &Value,
    ) -> Result<Option<Value>, ApiError> {
        let t = target(kind, namespace, "", None);
        self.call(Method::POST, t, manager, Some(object)).await
    }

    /// Replaces `object` (its resourceVersion a precondition), or its status.
    pub async fn update(
        &self,
        kind: &Arc<ResourceKind>,
        object: &Value,
        status: bool,
        manager: &str,
    ) -> Result<Option<Value>, ApiError> {
        let namespace = fellowship_apimachinery::meta::namespace(object).to_string();
        let name = fellowship_apimachinery::meta::name(object).to_string();
        let sub = status.then_some("status");
        let t = target(kind, &namespace, &name, sub);
        self.call(Method::PUT, t, manager, Some(object)).await
    }

    /// Deletes in the background (dependents go after); a missing object is no error.
    pub async fn delete(
        &self,
        kind: &Arc<ResourceKind>,
        namespace: &str,
        name: &str,
        manager: &str,
    ) -> Result<(), ApiError> {
        match self
            .call(
                Method::DELETE,
                target(kind, namespace, name, None),
                manager,
                None,
            )
            .await
        {
            Err(e) if e.code == 404 => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

fn target(
    kind: &Arc<ResourceKind>,
    namespace: &str,
    name: &str,
    subresource: Option<&str>,
) -> Target {
    Target {
        kind: kind.clone(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        subresource: subresource.map(String::from),
    }
}
