//! The federation's object store: a revisioned key-value store with watch.
//!
//! One interface ([`Store`]) and two backends that behave the same, so that a
//! `resourceVersion` means the same thing whichever one serves it:
//! - [`embedded::EmbeddedStore`], the default: a single data directory (redb), or memory only;
//! - [`etcd::EtcdStore`]: etcd v3, for high availability.
//!
//! Every write gets the next value of one global, strictly increasing revision, as in etcd.
//! Keys are strings that start with `/`; values are opaque bytes.

mod continuation;
pub mod embedded;
mod error;
pub mod etcd;
mod hub;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;

pub use continuation::Continue;
pub use embedded::{EmbeddedConfig, EmbeddedStore};
pub use error::{Error, Result};
pub use etcd::{EtcdConfig, EtcdStore};

/// The global revision counter. Every successful write gets the next value.
pub type Revision = u64;

/// One stored key with its value and the revisions that created and last modified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Arc<str>,
    pub value: Bytes,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// A change to one key. For `Deleted`, `kv.value` is empty and `kv.mod_revision` is the
/// revision of the deletion; `prev` holds the value that was deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// What a list reads.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Read at this revision (it must not be compacted); `None` reads the latest.
    /// Ignored when `continue_token` is set: a continued list stays at its first page's revision.
    pub revision: Option<Revision>,
    /// At most this many items; `None` or `Some(0)` returns all.
    pub limit: Option<usize>,
    /// The token a previous page returned.
    pub continue_token: Option<String>,
}

/// One page of a list.
#[derive(Clone, Debug)]
pub struct ListPage {
    pub items: Vec<KeyValue>,
    /// The revision the page was read at.
    pub revision: Revision,
    /// Present when more items follow: pass it back for the next page.
    pub continue_token: Option<String>,
    /// How many items follow this page, where the backend can tell cheaply.
    pub remaining: Option<u64>,
}

/// The value a delete removed, and the revision of the deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    pub prev: KeyValue,
    pub revision: Revision,
}

/// A stream of events in revision order. It ends with `Err(Error::TooOld)` if the watcher
/// fell too far behind, or if the history it needs was compacted; the caller then re-lists.
pub type WatchStream = BoxStream<'static, Result<Event>>;

/// The storage interface. Both backends implement it with the same semantics; the
/// conformance suite in `tests/` runs against each.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The current value of `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys under `prefix`, in key order, consistent at one revision across pages.
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListPage>;

    /// Creates `key`; fails with [`Error::AlreadyExists`] if it exists. With `ttl`, the key is
    /// deleted (with a `Deleted` event) once it has lived that long.
    async fn create(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<KeyValue>;

    /// Replaces the value of `key` if its `mod_revision` is still `expected`; otherwise fails
    /// with [`Error::Conflict`] (carrying the current value) or [`Error::NotFound`].
    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
        ttl: Option<Duration>,
    ) -> Result<KeyValue>;

    /// Deletes `key`, only if its `mod_revision` is `expected` when that is given.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted>;

    /// Events under `prefix` with a revision greater than `after`, first those already in the
    /// history, then live ones. Fails with [`Error::TooOld`] if `after` was compacted.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// The revision of the latest write.
    async fn current_revision(&self) -> Result<Revision>;

    /// Forgets history before `revision`: reads and watches from earlier revisions then fail
    /// with [`Error::TooOld`]. Compacting to an already compacted revision succeeds.
    async fn compact(&self, revision: Revision) -> Result<()>;
}

/// Where the store lives: the choice the API server's flags make.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    Embedded(EmbeddedConfig),
    Etcd(EtcdConfig),
}

/// Opens the configured backend.
pub async fn open(config: StoreConfig) -> Result<Arc<dyn Store>> {
    Ok(match config {
        StoreConfig::Embedded(c) => Arc::new(EmbeddedStore::open(c).await?),
        StoreConfig::Etcd(c) => Arc::new(EtcdStore::connect(c).await?),
    })
}

/// The end of the key range that starts with `prefix`: every key under it sorts below this.
/// `None` when no such bound exists (a prefix of only 0xff bytes never happens for our keys).
pub(crate) fn prefix_end(prefix: &str) -> Option<Vec<u8>> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Keys are absolute paths: the etcd backend puts them under its prefix, and a watch of a
/// directory must never match a sibling that merely shares its first letters.
pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.starts_with('/') && !key.contains('\0') {
        Ok(())
    } else {
        Err(Error::InvalidKey(key.to_string()))
    }
}
