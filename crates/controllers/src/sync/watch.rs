//! Reading the federation: reflectors that send the key of every federated object that
//! changed (complete relistings included), and the merge patches this controller writes.

use std::collections::HashSet;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::Request;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource as _, ResourceExt as _};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::copies::{Key, key_of};

/// A merge patch of a federated object, or of its `subresource`; the reply is read for its
/// version only.
pub async fn merge_patch(
    client: &Client,
    ar: &ApiResource,
    namespaced: bool,
    (_, ns, name): &Key,
    subresource: Option<&str>,
    patch: &Value,
) -> Result<Written, kube::Error> {
    let url = DynamicObject::url_path(ar, namespaced.then_some(&**ns));
    let (params, patch) = (PatchParams::default(), Patch::Merge(patch));
    let request = match subresource {
        Some(sub) => Request::new(url).patch_subresource(sub, name, &params, &patch),
        None => Request::new(url).patch(name, &params, &patch),
    }
    .map_err(kube::Error::BuildRequest)?;
    client.request::<Written>(request).await
}

/// Runs a reflector into a new store, sending the key of every object it sees. A relisting
/// (after a watch fell too far behind) replaces the store's contents only when it is
/// complete, so the keys it brings, and those of objects it no longer has, are sent then:
/// reconciled earlier, they would find the old contents, and an object created meanwhile
/// would look gone.
pub fn follow(
    client: &Client,
    ar: &ApiResource,
    index: usize,
    keys: mpsc::UnboundedSender<Key>,
) -> (Store<DynamicObject>, JoinHandle<()>) {
    let writer = reflector::store::Writer::new(ar.clone());
    let store = writer.as_reader();
    let stream = watcher(
        Api::<DynamicObject>::all_with(client.clone(), ar),
        watcher::Config::default(),
    )
    .default_backoff();
    let held = store.clone();
    let task = tokio::spawn(async move {
        // managedFields are never read here and are often the bulk of an object.
        let stream = stream.modify(|o| o.managed_fields_mut().clear());
        let mut events = reflector::reflector(writer, stream).boxed();
        let key = |o: &DynamicObject| key_of(index, &o.metadata);
        let mut listing: Vec<Key> = Vec::new();
        // What the store held when a relisting began: those not listed again were deleted
        // while the watch was down, and no event says so.
        let mut before: HashSet<Key> = HashSet::new();
        while let Some(event) = events.next().await {
            let ready: Vec<Key> = match event {
                Ok(watcher::Event::Init) => {
                    listing.clear();
                    before = held.state().iter().map(|o| key(o)).collect();
                    Vec::new()
                }
                Ok(watcher::Event::InitApply(o)) => {
                    let k = key(&o);
                    before.remove(&k);
                    listing.push(k);
                    Vec::new()
                }
                Ok(watcher::Event::InitDone) => {
                    listing.extend(before.drain());
                    std::mem::take(&mut listing)
                }
                Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => vec![key(&o)],
                Err(_) => Vec::new(),
            };
            for k in ready {
                if keys.send(k).is_err() {
                    return;
                }
            }
        }
    });
    (store, task)
}

/// What a write's reply says that matters here: the version it made, and the generation.
/// (The rest of the object is skipped unread.)
#[derive(serde::Deserialize)]
pub struct Written {
    pub metadata: WrittenMeta,
}

#[derive(serde::Deserialize)]
pub struct WrittenMeta {
    #[serde(rename = "resourceVersion", default)]
    pub resource_version: String,
    #[serde(default)]
    pub generation: Option<i64>,
}
