//! The member clusters being kept in step: one started for each Ready cluster (its clients,
//! its watches of what it holds, its worker), stopped when the cluster stops being Ready
//! or its labels change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::api::DynamicObject;
use kube::runtime::reflector::Store;
use serde_json::Value;
use tokio::sync::mpsc;

use super::SyncController;
use super::queue::AbortOnDrop;
use super::report::Text;
use crate::copies::{Copies, Judge, Judgement, Key, Raw, key_of};
use crate::members;

/// How long a member cluster may take to list what it holds before its start is retried.
const MEMBER_START: Duration = Duration::from_secs(120);

/// A member cluster being kept in step: its clients, what it holds, its worker.
pub(super) struct Member {
    pub name: Text,
    pub labels: BTreeMap<String, String>,
    pub client: Client,
    /// Reads and writes copies (watches and deletes go through `client`).
    pub writer: members::Writer,
    pub copies: Vec<Arc<Copies>>,
    pub keys: mpsc::UnboundedSender<Key>,
    /// Its watches and worker, which stop with it.
    pub tasks: Mutex<Vec<AbortOnDrop>>,
}

impl SyncController {
    /// Starts keeping the Ready clusters in step, stops for the others. `stage` takes the
    /// spread objects to plan again when the members change.
    pub(super) fn clusters_changed(
        self: &Arc<Self>,
        clusters: &Store<DynamicObject>,
        stage: &mpsc::UnboundedSender<Key>,
    ) {
        let mut ready: BTreeMap<String, Value> = BTreeMap::new();
        for c in clusters.state() {
            let v = serde_json::to_value(&*c).unwrap_or_default();
            let is_ready =
                (v.pointer("/status/conditions").and_then(Value::as_array)).is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
            if is_ready {
                ready.insert(c.metadata.name.clone().unwrap_or_default(), v);
            }
        }
        let labels_of: BTreeMap<String, BTreeMap<String, String>> = (ready.iter())
            .map(|(name, c)| {
                let labels = serde_json::from_value(c["metadata"]["labels"].clone());
                (name.clone(), labels.unwrap_or_default())
            })
            .collect();
        *self.ready.lock().expect("not poisoned") = labels_of.clone();
        self.unstarted
            .lock()
            .expect("not poisoned")
            .retain(|c| ready.contains_key(c));
        let known: BTreeSet<String> = self
            .members
            .lock()
            .expect("not poisoned")
            .keys()
            .cloned()
            .collect();
        let mut stopped = false;
        for gone in known.iter().filter(|n| !ready.contains_key(*n)) {
            tracing::info!(cluster = %gone, "stopped propagating to a cluster that is not Ready");
            self.members.lock().expect("not poisoned").remove(gone);
            stopped = true;
        }
        for (name, cluster) in ready {
            let labels = labels_of[&name].clone();
            let existing = self
                .members
                .lock()
                .expect("not poisoned")
                .get(&name)
                .cloned();
            match existing {
                // Labels moved: what is selected may have changed.
                Some(m) if m.labels != labels => {
                    self.members.lock().expect("not poisoned").remove(&name);
                    stopped = true;
                }
                Some(_) => continue,
                None => {}
            }
            // Each member starts on its own (it lists all its copies first), so that one
            // slow to answer delays neither the others nor the federation's events; one
            // that does not finish is tried again.
            if !self
                .starting
                .lock()
                .expect("not poisoned")
                .insert(name.clone())
            {
                continue;
            }
            let (this, stage) = (self.clone(), stage.clone());
            tokio::spawn(async move {
                let start = this.start_member(&name, &cluster, labels, &stage);
                let started = match tokio::time::timeout(MEMBER_START, start).await {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        tracing::warn!(cluster = %name, error = %e, "cannot propagate to cluster");
                        false
                    }
                    Err(_) => {
                        tracing::warn!(cluster = %name, "listing the cluster's objects took too long; trying again");
                        false
                    }
                };
                // Planning waited for its first start: it goes on now, with the member or
                // without it. A start that failed before fails again without news.
                let news = {
                    let mut unstarted = this.unstarted.lock().expect("not poisoned");
                    if started {
                        unstarted.remove(&name);
                        true
                    } else {
                        unstarted.insert(name.clone())
                    }
                };
                this.starting.lock().expect("not poisoned").remove(&name);
                if news {
                    this.replan_all(&stage);
                }
            });
        }
        if stopped {
            self.replan_all(stage);
        }
    }

    async fn start_member(
        self: &Arc<Self>,
        name: &str,
        cluster: &Value,
        labels: BTreeMap<String, String>,
        stage: &mpsc::UnboundedSender<Key>,
    ) -> anyhow::Result<()> {
        let secret = members::secret(&self.host, &self.namespace, cluster).await?;
        let (client, writer) = members::clients(cluster, secret.as_ref()).await?;
        let (tx, rx) = mpsc::unbounded_channel::<Key>();
        let weak_self = Arc::downgrade(self);
        let cluster_name: Text = name.into();
        let judge: Judge = {
            let cluster = cluster_name.clone();
            Arc::new(move |key: &Key, copy: &Raw| {
                (weak_self.upgrade())
                    .map_or_else(Judgement::default, |this| this.judge(&cluster, key, copy))
            })
        };
        let mut copies = Vec::new();
        let mut tasks = Vec::new();
        for (i, t) in self.types.iter().enumerate() {
            let held = Arc::new(match &t.scheduling {
                Some(s) => Copies::summarized(s.clone(), i, stage.clone()),
                None => Copies::default(),
            });
            let follow = held.clone().follow(
                client.clone(),
                t.resource.clone(),
                i,
                tx.clone(),
                judge.clone(),
            );
            tasks.push(AbortOnDrop(tokio::spawn(follow)));
            copies.push(held);
        }
        // A member just (re)started knows its copies once its first listings are in.
        for held in &copies {
            held.ready().await;
        }
        let member = Arc::new(Member {
            name: cluster_name.clone(),
            labels,
            client,
            writer,
            copies,
            keys: tx.clone(),
            tasks: Mutex::new(tasks),
        });
        let this = self.clone();
        let weak = Arc::downgrade(&member);
        let worker = tokio::spawn(async move { this.work(cluster_name, weak, rx).await });
        member
            .tasks
            .lock()
            .expect("not poisoned")
            .push(AbortOnDrop(worker));
        // A member in the map is told of every change from now on; everything federated is
        // looked at for it after that, so no change made meanwhile is missed. Its cluster
        // must still be Ready as it was (unjoined meanwhile, it would be written to until
        // the next look at the clusters).
        {
            let ready = self.ready.lock().expect("not poisoned");
            if ready.get(name) != Some(&member.labels) {
                tracing::info!(cluster = %name, "the cluster changed while its member started; not kept");
                return Ok(());
            }
            self.members
                .lock()
                .expect("not poisoned")
                .insert(name.to_string(), member);
        }
        for i in 0..self.types.len() {
            for o in self.federated_store(i).state() {
                let _ = tx.send(key_of(i, &o.metadata));
            }
        }
        tracing::info!(cluster = %name, "propagating to cluster");
        Ok(())
    }
}
