//! The namespace finalizer: a namespace being deleted is emptied, then removed.
//!
//! kube-apiserver leaves this to kube-controller-manager; the federation API server has none,
//! so it runs here: deleting a namespace removes everything in it, as the contract asks.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use fellowship_apimachinery::{ApiError, meta};
use fellowship_storage::ListOptions;
use futures::StreamExt;
use serde_json::Value;

use crate::objects::present;
use crate::rest::{Query, Target};
use crate::server::App;

const BACKGROUND: &[u8] = br#"{"propagationPolicy":"Background"}"#;

/// How often namespaces still holding content (objects with finalizers) are looked at again.
const RECHECK: Duration = Duration::from_secs(5);

/// Runs until the task is dropped.
pub async fn run(app: Arc<App>) {
    loop {
        if let Err(e) = follow(&app).await {
            tracing::warn!(error = %e, "namespace finalizer interrupted; restarting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn follow(app: &App) -> Result<(), ApiError> {
    let ns = app.rest.namespaces.clone();
    let prefix = ns.key("", "");
    let store = &app.rest.store;
    let from = store
        .current_revision()
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let mut events = store
        .watch(&prefix, from)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let mut tick = tokio::time::interval(RECHECK);
    loop {
        finalize_all(app).await?;
        tokio::select! {
            _ = tick.tick() => {}
            e = events.next() => match e {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ApiError::unavailable(e.to_string())),
                None => return Ok(()),
            },
        }
    }
}

async fn finalize_all(app: &App) -> Result<(), ApiError> {
    let ns = app.rest.namespaces.clone();
    let page = app
        .rest
        .store
        .list(&ns.key("", ""), ListOptions::default())
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    for kv in &page.items {
        let object = present(kv, &ns)?;
        if object.pointer("/metadata/deletionTimestamp").is_some() {
            finalize(app, meta::name(&object)).await?;
        }
    }
    Ok(())
}

/// Deletes what is in `namespace`; once nothing is left, removes the namespace.
async fn finalize(app: &App, namespace: &str) -> Result<(), ApiError> {
    let mut remaining = 0;
    let mut seen = BTreeSet::new();
    for kind in app.surface.registry.all() {
        // One stored resource may be served at several versions: empty it once.
        if !kind.namespaced() || !seen.insert(kind.storage) {
            continue;
        }
        let prefix = kind.key(namespace, "");
        let page = app
            .rest
            .store
            .list(&prefix, ListOptions::default())
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        for kv in &page.items {
            let object = present(kv, kind)?;
            let target = Target {
                kind: kind.clone(),
                namespace: namespace.to_string(),
                name: meta::name(&object).to_string(),
                subresource: None,
            };
            // Background, as kube-controller-manager's namespace deleter asks: the `orphan`
            // finalizer goes, so what the namespace held leaves the member clusters too,
            // even when the namespace itself was deleted with orphan (spec §4.9).
            match app.rest.delete(&target, &Query::new(), BACKGROUND).await {
                Ok(_) if meta::finalizers(&object).is_empty() => {}
                Ok(_) => remaining += 1,
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    if remaining > 0 {
        tracing::debug!(namespace, remaining, "namespace waits for finalizers");
        return Ok(());
    }
    // Empty: drop the namespace's own finalizer, which deletes it when nothing else holds it.
    let ns_kind = app.rest.namespaces.clone();
    let current = match app.rest.store.get(&ns_kind.key("", namespace)).await {
        Ok(Some(kv)) => present(&kv, &ns_kind)?,
        Ok(None) => return Ok(()),
        Err(e) => return Err(ApiError::unavailable(e.to_string())),
    };
    let others: Vec<Value> = current
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter(|f| *f != "kubernetes").cloned().collect())
        .unwrap_or_default();
    let target = Target {
        kind: app.rest.namespaces.clone(),
        namespace: String::new(),
        name: namespace.to_string(),
        subresource: Some("finalize".into()),
    };
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace},
        "spec": {"finalizers": Value::Array(others)},
    }))
    .expect("JSON serializes");
    match app.rest.update(&target, &Query::new(), &body).await {
        Ok(_) => {
            tracing::info!(namespace, "namespace deleted");
            Ok(())
        }
        Err(e) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
