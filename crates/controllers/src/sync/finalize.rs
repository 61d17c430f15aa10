//! The finalizers of spec §6 (kube-runtime's `finalizer` is the analogue): added to every
//! live federated object; on deletion, the member copies removed unless orphaned, then
//! the finalizers, so the federation API completes the delete.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::api::{DeleteParams, DynamicObject};
use kube::{Api, ResourceExt as _};
use serde_json::json;
use tokio::sync::mpsc;

use super::queue::work_through;
use super::watch::merge_patch;
use super::{Member, SyncController, not_found};
use crate::annotations::{DELETE_FROM_CLUSTERS, ORPHAN};
use crate::cluster::cluster_resource;
use crate::copies::Key;

impl SyncController {
    /// The finalizer worker: sees to the finalizers of each federated object sent to it, a
    /// few at a time, retrying until the object needs nothing more.
    pub(super) async fn finalizer(
        self: Arc<Self>,
        again: mpsc::UnboundedSender<Key>,
        keys: mpsc::UnboundedReceiver<Key>,
    ) {
        work_through(keys, again, "finalizing", |key| {
            let this = self.clone();
            async move { this.finalize_once(&key).await }
        })
        .await;
    }

    /// Whether the object needs nothing more.
    async fn finalize_once(&self, key: &Key) -> anyhow::Result<bool> {
        let (index, ns, name) = key;
        let t = &self.types[*index];
        let Some(object) = self.federated(key) else {
            self.reporter.forget(key);
            return Ok(true);
        };
        let have = object.finalizers().to_vec();
        // A merge patch: the propagation-state annotation may change meanwhile.
        let write = |list: Vec<String>| async move {
            let patch = json!({"metadata": {"finalizers": list}});
            merge_patch(
                &self.federation,
                &t.resource,
                t.namespaced,
                key,
                None,
                &patch,
            )
            .await
            .map(|_| ())
        };
        if object.metadata.deletion_timestamp.is_none() {
            if have.iter().any(|f| f == DELETE_FROM_CLUSTERS) && have.iter().any(|f| f == ORPHAN) {
                return Ok(true);
            }
            let mut list: BTreeSet<String> = have.into_iter().collect();
            list.insert(DELETE_FROM_CLUSTERS.into());
            list.insert(ORPHAN.into());
            write(list.into_iter().collect()).await?;
            return Ok(true);
        }
        if !have.iter().any(|f| f == DELETE_FROM_CLUSTERS) {
            return Ok(true);
        }
        if !have.iter().any(|f| f == ORPHAN) {
            // Cascade: the Ready members' copies go now; the object stays until every
            // registered cluster has been Ready to be cleared.
            let members: Vec<Arc<Member>> = self
                .members
                .lock()
                .expect("not poisoned")
                .values()
                .cloned()
                .collect();
            let mut waiting = false;
            for m in &members {
                // A copy being created now is deleted once it is there.
                if m.copies[*index].is_writing(ns, name) {
                    waiting = true;
                    continue;
                }
                if m.copies[*index].get(ns, name).is_some_and(|c| c.managed) {
                    waiting = true;
                    t.api(&m.client, ns)
                        .delete(name, &DeleteParams::background())
                        .await
                        .map(|_| ())
                        .or_else(not_found)?;
                }
            }
            if waiting {
                return Ok(false);
            }
            let registered =
                Api::<DynamicObject>::all_with(self.federation.clone(), &cluster_resource())
                    .list(&Default::default())
                    .await?
                    .items
                    .len();
            if members.len() < registered {
                anyhow::bail!("waiting for every cluster to be Ready to delete {name} from it");
            }
            // The member HPAs are gone: their target is planned again.
            self.release_target(&object).await?;
        }
        let kept: Vec<String> = have
            .into_iter()
            .filter(|f| f != DELETE_FROM_CLUSTERS && f != ORPHAN)
            .collect();
        write(kept).await?;
        Ok(true)
    }
}
