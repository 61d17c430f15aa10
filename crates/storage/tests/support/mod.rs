//! The backends the conformance suite runs against: the embedded store on disk and in
//! memory, and a real etcd started on loopback for each test.

#![allow(dead_code)] // each test file uses its own part of this module

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fellowship_storage::{
    EmbeddedConfig, EmbeddedStore, EtcdConfig, EtcdStore, Event, ListOptions, Result, Revision,
    Store, WatchStream,
};
use fellowship_testkit::Etcd;
use futures::StreamExt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Durable,
    Memory,
    Etcd,
}

/// A backend of one kind, which can be opened (and for the durable kinds, reopened).
pub struct Backend {
    pub kind: Kind,
    dir: tempfile::TempDir,
    pub etcd: Option<Etcd>,
    pub history_limit: usize,
    pub watch_buffer: usize,
}

impl Backend {
    pub fn new(kind: Kind) -> Backend {
        Backend {
            kind,
            dir: tempfile::tempdir().unwrap(),
            etcd: (kind == Kind::Etcd).then(Etcd::start),
            history_limit: 100_000,
            watch_buffer: 1024,
        }
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        self.try_open().await.expect("open store")
    }

    pub async fn try_open(&self) -> Result<Arc<dyn Store>> {
        Ok(match self.kind {
            Kind::Durable | Kind::Memory => {
                let mut c = if self.kind == Kind::Durable {
                    EmbeddedConfig::durable(self.dir.path().join("data"))
                } else {
                    EmbeddedConfig::memory()
                };
                c.history_limit = self.history_limit;
                c.watch_buffer = self.watch_buffer;
                Arc::new(EmbeddedStore::open(c).await?)
            }
            Kind::Etcd => Arc::new(EtcdStore::connect(self.etcd_config()).await?),
        })
    }

    pub fn etcd_config(&self) -> EtcdConfig {
        let mut c = EtcdConfig::new(vec![self.etcd.as_ref().unwrap().endpoint()]);
        c.history_limit = self.history_limit;
        c.watch_buffer = self.watch_buffer;
        c.request_timeout = Duration::from_secs(3);
        c.dial_timeout = Duration::from_secs(3);
        c
    }
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// All keys and values under `prefix`, following continue tokens with the given page size.
pub async fn list_all(
    store: &dyn Store,
    prefix: &str,
    limit: usize,
    revision: Option<Revision>,
) -> Result<(Vec<(String, Bytes)>, Revision)> {
    let mut out = Vec::new();
    let mut options = ListOptions {
        revision,
        limit: Some(limit),
        continue_token: None,
    };
    loop {
        let page = store.list(prefix, options.clone()).await?;
        out.extend(
            page.items
                .iter()
                .map(|kv| (kv.key.to_string(), kv.value.clone())),
        );
        match page.continue_token {
            Some(t) => options.continue_token = Some(t),
            None => return Ok((out, page.revision)),
        }
    }
}

/// The next event, failing the test if none comes within 10 s.
pub async fn next_event(w: &mut WatchStream) -> Result<Event> {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("a watch event within 10 s")
        .expect("the watch stream stays open")
}

/// Asserts that no event arrives within `wait`.
pub async fn assert_quiet(w: &mut WatchStream, wait: Duration) {
    if let Ok(Some(e)) = tokio::time::timeout(wait, w.next()).await {
        panic!("unexpected watch event: {e:?}");
    }
}
