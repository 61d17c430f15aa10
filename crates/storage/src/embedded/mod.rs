//! The embedded backend: the whole current state in memory (a persistent ordered map, so a
//! reader takes an immutable snapshot in O(1) and never blocks a writer), and, unless it runs
//! in memory only, a redb data file that makes every acknowledged write durable.
//!
//! With a data file, all writes go through one committer thread, which takes every request
//! waiting at the time (group commit), checks each against the state as left by the previous
//! ones, writes the batch in one fsync'd transaction, and only then publishes the new snapshot
//! and the events. In memory only there is nothing to batch for: a write commits on the
//! caller's thread under a lock (no hand-over to another thread and back), and a thread only
//! wakes to expire keys whose time-to-live is up.

mod disk;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use imbl::OrdMap;
use tokio::sync::oneshot;

use self::disk::{Change, Disk};
use crate::continuation::{self, Continue};
use crate::hub::Hub;
use crate::{
    Deleted, Error, Event, EventKind, KeyValue, ListOptions, ListPage, Result, Revision, Store,
    WatchStream, check_key,
};

#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// The data directory; `None` keeps everything in memory (local member clusters, tests).
    pub data_dir: Option<PathBuf>,
    /// Events kept for watches and paginated lists at older revisions; beyond it the oldest
    /// are compacted.
    pub history_limit: usize,
    /// Batches a watcher may fall behind before it is dropped with `TooOld`.
    pub watch_buffer: usize,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
}

impl EmbeddedConfig {
    pub fn memory() -> Self {
        EmbeddedConfig {
            data_dir: None,
            history_limit: 100_000,
            watch_buffer: 1024,
            max_batch: 4096,
        }
    }

    pub fn durable(data_dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            data_dir: Some(data_dir.into()),
            ..Self::memory()
        }
    }
}

/// A stored key's value and revisions; `expires_at` is Unix milliseconds, 0 for never.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub value: Bytes,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub expires_at: u64,
}

impl Entry {
    fn kv(&self, key: &Arc<str>) -> KeyValue {
        KeyValue {
            key: key.clone(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }
}

/// The state at one revision.
#[derive(Clone)]
struct Snapshot {
    revision: Revision,
    map: OrdMap<Arc<str>, Entry>,
}

struct Shared {
    /// A lock rather than an `ArcSwap`: swapping one waits on every thread that ever read
    /// any `ArcSwap` in the process, and a hundred local clusters run two threads each.
    snapshot: RwLock<Arc<Snapshot>>,
    hub: Hub,
}

impl Shared {
    /// The current state, kept for as long as the caller reads it.
    fn snapshot(&self) -> Arc<Snapshot> {
        self.current().clone()
    }

    /// The current state, for a short read: no snapshot is held, so the next write can
    /// change the map in place rather than copy the path to the key it writes.
    fn current(&self) -> std::sync::RwLockReadGuard<'_, Arc<Snapshot>> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner())
    }
}

enum Op {
    Create {
        key: Arc<str>,
        value: Bytes,
        ttl: Option<Duration>,
    },
    Update {
        key: Arc<str>,
        value: Bytes,
        expected: Revision,
        ttl: Option<Duration>,
    },
    Delete {
        key: Arc<str>,
        expected: Option<Revision>,
    },
    Compact(Revision),
}

enum Outcome {
    Written(KeyValue),
    Deleted(Deleted),
    Compacted,
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Outcome>>,
}

pub struct EmbeddedStore {
    shared: Arc<Shared>,
    writer: Writer,
}

enum Writer {
    /// With a data file: the committer thread and the queue to it.
    Thread {
        requests: Option<mpsc::Sender<Request>>,
        committer: Option<JoinHandle<()>>,
    },
    /// In memory: writes commit under the lock; `wake` tells the expiry thread that a key
    /// with a time-to-live was written.
    Inline {
        committer: Arc<Mutex<Committer>>,
        wake: Option<mpsc::Sender<()>>,
        expirer: Option<JoinHandle<()>>,
    },
}

impl EmbeddedStore {
    pub async fn open(config: EmbeddedConfig) -> Result<Self> {
        tokio::task::spawn_blocking(move || Self::open_blocking(config))
            .await
            .map_err(|e| Error::Internal(format!("open task failed: {e}")))?
    }

    fn open_blocking(config: EmbeddedConfig) -> Result<Self> {
        let (disk, loaded) = match &config.data_dir {
            Some(dir) => {
                let (disk, loaded) = Disk::open(dir)?;
                (Some(disk), Some(loaded))
            }
            None => (None, None),
        };
        let (revision, compacted, map, events) = match loaded {
            Some(l) => (l.revision, l.compacted, l.map, l.events),
            None => (1, 1, OrdMap::new(), VecDeque::new()),
        };
        let expiries = map
            .iter()
            .filter(|(_, e): &(&Arc<str>, &Entry)| e.expires_at != 0)
            .map(|(k, e)| (e.expires_at, k.clone()))
            .collect();
        tracing::debug!(
            revision,
            compacted,
            keys = map.len(),
            "embedded store opened"
        );
        let shared = Arc::new(Shared {
            snapshot: RwLock::new(Arc::new(Snapshot { revision, map })),
            hub: Hub::new(
                compacted,
                revision,
                events,
                config.history_limit,
                config.watch_buffer,
            ),
        });
        let in_memory = disk.is_none();
        let committer = Committer {
            shared: shared.clone(),
            disk,
            expiries,
            max_batch: config.max_batch.max(1),
            last_batch: 0,
        };
        let spawn_error =
            |e: std::io::Error| Error::Internal(format!("cannot start the committer: {e}"));
        let writer = if in_memory {
            let committer = Arc::new(Mutex::new(committer));
            let (wake, woken) = mpsc::channel();
            let expiring = committer.clone();
            let expirer = std::thread::Builder::new()
                .name("store-expirer".into())
                .spawn(move || Committer::expire(&expiring, &woken))
                .map_err(spawn_error)?;
            Writer::Inline {
                committer,
                wake: Some(wake),
                expirer: Some(expirer),
            }
        } else {
            let (tx, rx) = mpsc::channel();
            let handle = std::thread::Builder::new()
                .name("store-committer".into())
                .spawn(move || committer.run(&rx))
                .map_err(spawn_error)?;
            Writer::Thread {
                requests: Some(tx),
                committer: Some(handle),
            }
        };
        Ok(EmbeddedStore { shared, writer })
    }

    async fn submit(&self, op: Op) -> Result<Outcome> {
        let (reply, rx) = oneshot::channel();
        let closed = || Error::Unavailable("the store is closed".into());
        match &self.writer {
            Writer::Thread { requests, .. } => requests
                .as_ref()
                .ok_or_else(closed)?
                .send(Request { op, reply })
                .map_err(|_| closed())?,
            Writer::Inline {
                committer, wake, ..
            } => {
                let expires = matches!(
                    op,
                    Op::Create { ttl: Some(_), .. } | Op::Update { ttl: Some(_), .. }
                );
                committer
                    .lock()
                    .map_err(|_| closed())?
                    .commit(vec![Request { op, reply }]);
                if expires && let Some(w) = wake {
                    let _ = w.send(());
                }
            }
        }
        rx.await.map_err(|_| closed())?
    }

    async fn write(&self, op: Op) -> Result<KeyValue> {
        match self.submit(op).await? {
            Outcome::Written(kv) => Ok(kv),
            _ => Err(Error::Internal("unexpected outcome".into())),
        }
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the channel stops the committer after its current batch; joining it closes
        // the data file, so the directory can be opened again at once.
        let thread = match &mut self.writer {
            Writer::Thread {
                requests,
                committer,
            } => {
                requests.take();
                committer.take()
            }
            Writer::Inline { wake, expirer, .. } => {
                wake.take();
                expirer.take()
            }
        };
        if let Some(h) = thread {
            let _ = h.join();
        }
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        check_key(key)?;
        let current = self.shared.current();
        Ok(current.map.get_key_value(key).map(|(k, e)| e.kv(k)))
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListPage> {
        check_key(prefix)?;
        let (at, start) = continuation::resolve(prefix, &options)?;
        let snap = self.shared.snapshot();
        let revision = at.unwrap_or(snap.revision);
        if revision > snap.revision {
            return Err(Error::FutureRevision {
                requested: revision,
                current: snap.revision,
            });
        }
        let in_range = |k: &str| k >= start.as_str() && k.starts_with(prefix);
        // Reading an older revision: the keys changed since then hold, for that revision, the
        // value before their first later change (or nothing, if they were created later).
        let mut then: BTreeMap<Arc<str>, Option<KeyValue>> = BTreeMap::new();
        if revision < snap.revision {
            let h = self.shared.hub.read();
            if revision < h.start() {
                return Err(Error::TooOld {
                    requested: revision,
                    compacted: h.start(),
                });
            }
            for e in h.since(revision) {
                if e.revision() > snap.revision {
                    break;
                }
                if in_range(&e.kv.key) {
                    then.entry(e.kv.key.clone())
                        .or_insert_with(|| e.prev.clone());
                }
            }
        }
        let current = snap
            .map
            .range::<_, str>((Bound::Included(start.as_str()), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), Some(e.kv(k))));
        let mut merged = merge(current, then.into_iter()).filter_map(|(_, kv)| kv);
        let limit = options.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let items: Vec<KeyValue> = merged.by_ref().take(limit).collect();
        let next = merged.next();
        let (continue_token, remaining) = match &next {
            Some(kv) => (
                Some(Continue::new(revision, prefix, &kv.key).encode()),
                Some(1 + merged.count() as u64),
            ),
            None => (None, Some(0)),
        };
        Ok(ListPage {
            items,
            revision,
            continue_token,
            remaining,
        })
    }

    async fn create(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<KeyValue> {
        check_key(key)?;
        self.write(Op::Create {
            key: key.into(),
            value,
            ttl,
        })
        .await
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
        ttl: Option<Duration>,
    ) -> Result<KeyValue> {
        check_key(key)?;
        self.write(Op::Update {
            key: key.into(),
            value,
            expected,
            ttl,
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted> {
        check_key(key)?;
        match self
            .submit(Op::Delete {
                key: key.into(),
                expected,
            })
            .await?
        {
            Outcome::Deleted(d) => Ok(d),
            _ => Err(Error::Internal("unexpected outcome".into())),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        check_key(prefix)?;
        self.shared.hub.subscribe(prefix, after)
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.current().revision)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.submit(Op::Compact(revision)).await.map(|_| ())
    }
}

/// Merges two key-ordered sequences; on equal keys the second wins.
fn merge<A, B, V>(a: A, b: B) -> impl Iterator<Item = (Arc<str>, V)>
where
    A: Iterator<Item = (Arc<str>, V)>,
    B: Iterator<Item = (Arc<str>, V)>,
{
    let mut a = a.peekable();
    let mut b = b.peekable();
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some((ka, _)), Some((kb, _))) => match ka.cmp(kb) {
            std::cmp::Ordering::Less => a.next(),
            std::cmp::Ordering::Greater => b.next(),
            std::cmp::Ordering::Equal => {
                a.next();
                b.next()
            }
        },
        (Some(_), None) => a.next(),
        (None, _) => b.next(),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn expiry(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |t| {
        let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
        now_ms().saturating_add(ms).max(1)
    })
}

struct Committer {
    shared: Arc<Shared>,
    disk: Option<Disk>,
    /// Keys with a time-to-live, by expiry. Entries go stale when a key is rewritten; they are
    /// checked against the key's current expiry when due.
    expiries: BTreeSet<(u64, Arc<str>)>,
    max_batch: usize,
    last_batch: usize,
}

/// The longest a commit waits for the writers of the previous batch (a fraction of an fsync).
const GATHER: Duration = Duration::from_micros(200);

impl Committer {
    /// How long until the next key expires.
    fn next_expiry(&self) -> Option<Duration> {
        self.expiries
            .first()
            .map(|(at, _)| Duration::from_millis(at.saturating_sub(now_ms())))
    }

    /// The expiry thread of an in-memory store: commits the due expiries (an empty batch),
    /// then sleeps until the next one or until a write with a time-to-live wakes it.
    fn expire(committer: &Mutex<Committer>, woken: &mpsc::Receiver<()>) {
        loop {
            let wait = match committer.lock() {
                Ok(mut c) => {
                    c.commit(Vec::new());
                    c.next_expiry()
                }
                Err(_) => return,
            };
            let woke = match wait {
                Some(w) => woken.recv_timeout(w),
                None => woken
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            if woke == Err(mpsc::RecvTimeoutError::Disconnected) {
                return;
            }
        }
    }

    fn run(mut self, rx: &mpsc::Receiver<Request>) {
        loop {
            let first = match self.next_expiry() {
                Some(wait) => match rx.recv_timeout(wait) {
                    Ok(r) => Some(r),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
                None => match rx.recv() {
                    Ok(r) => Some(r),
                    Err(_) => return,
                },
            };
            let mut batch: Vec<Request> = first.into_iter().collect();
            while batch.len() < self.max_batch
                && let Ok(r) = rx.try_recv()
            {
                batch.push(r);
            }
            // Writers acknowledged by the last commit are usually about to write again: when
            // fewer are waiting than the last batch held, wait for them a moment, so that one
            // fsync serves them all rather than the next one. A lone writer never waits.
            if self.disk.is_some() && !batch.is_empty() {
                let deadline = std::time::Instant::now() + GATHER;
                let target = self.last_batch.min(self.max_batch);
                while batch.len() < target {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
            }
            self.last_batch = batch.len();
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Request>) {
        let shared = self.shared.clone();
        // In memory, nothing can fail after the checks: the state is changed in place under
        // the lock (a persistent map copies only the nodes a reader's snapshot still shares,
        // none at all when no reader holds one). With a data file, the batch is applied to a
        // copy that replaces the state once it is on disk.
        let mut next = if self.disk.is_none() {
            Next::InPlace(shared.snapshot.write().unwrap_or_else(|e| e.into_inner()))
        } else {
            Next::Copy(Snapshot::clone(&shared.snapshot()))
        };
        let snap: &mut Snapshot = match &mut next {
            Next::InPlace(guard) => Arc::make_mut(guard),
            Next::Copy(copy) => copy,
        };
        let map = &mut snap.map;
        let mut revision = snap.revision;
        let mut changes: Vec<Change> = Vec::with_capacity(batch.len());
        let mut compact_to: Option<Revision> = None;

        let now = now_ms();
        let due: Vec<(u64, Arc<str>)> = self
            .expiries
            .iter()
            .take_while(|(at, _)| *at <= now)
            .cloned()
            .collect();
        for (at, key) in &due {
            if let Some(e) = map.get(key).filter(|e| e.expires_at == *at) {
                let prev = e.kv(key);
                map.remove(key);
                revision += 1;
                changes.push(deleted_change(prev, revision));
            }
        }

        let mut replies = Vec::with_capacity(batch.len());
        for Request { op, reply } in batch {
            let outcome = match op {
                Op::Create { key, value, ttl } => {
                    let entry = Entry {
                        value,
                        create_revision: revision + 1,
                        mod_revision: revision + 1,
                        expires_at: expiry(ttl),
                    };
                    // One descent of the map, not a lookup and then an insert: a key that
                    // exists (rare) is put back as it was.
                    match map.insert(key.clone(), entry.clone()) {
                        Some(existing) => {
                            map.insert(key.clone(), existing);
                            Err(Error::AlreadyExists {
                                key: key.to_string(),
                            })
                        }
                        None => {
                            revision += 1;
                            Ok(Outcome::Written(Self::record(
                                &mut changes,
                                &key,
                                &entry,
                                None,
                            )))
                        }
                    }
                }
                Op::Update {
                    key,
                    value,
                    expected,
                    ttl,
                } => match map.get(&key) {
                    None => Err(Error::NotFound {
                        key: key.to_string(),
                    }),
                    Some(e) if e.mod_revision != expected => Err(Error::Conflict {
                        expected,
                        current: Box::new(e.kv(&key)),
                    }),
                    Some(e) => {
                        let prev = e.kv(&key);
                        revision += 1;
                        let entry = Entry {
                            value,
                            create_revision: e.create_revision,
                            mod_revision: revision,
                            expires_at: expiry(ttl),
                        };
                        let kv = Self::record(&mut changes, &key, &entry, Some(prev));
                        map.insert(key, entry);
                        Ok(Outcome::Written(kv))
                    }
                },
                Op::Delete { key, expected } => match map.get(&key) {
                    None => Err(Error::NotFound {
                        key: key.to_string(),
                    }),
                    Some(e) if expected.is_some_and(|x| x != e.mod_revision) => {
                        Err(Error::Conflict {
                            expected: expected.unwrap_or_default(),
                            current: Box::new(e.kv(&key)),
                        })
                    }
                    Some(e) => {
                        let prev = e.kv(&key);
                        map.remove(&key);
                        revision += 1;
                        changes.push(deleted_change(prev.clone(), revision));
                        Ok(Outcome::Deleted(Deleted { prev, revision }))
                    }
                },
                Op::Compact(to) if to > revision => Err(Error::FutureRevision {
                    requested: to,
                    current: revision,
                }),
                Op::Compact(to) => {
                    compact_to = compact_to.max(Some(to));
                    Ok(Outcome::Compacted)
                }
            };
            replies.push((reply, outcome));
        }

        let events: Vec<Event> = changes.iter().map(|c| c.event.clone()).collect();
        let hub = &self.shared.hub;
        let trim = hub.trim_point(&events).max(compact_to);
        let (new_start, obsolete) = {
            let h = hub.read();
            let new_start = trim.filter(|s| *s > h.start());
            let obsolete = new_start.map_or_else(Vec::new, |start| {
                obsolete_records(h.since(0).chain(&events), start)
            });
            (new_start, obsolete)
        };
        if (!changes.is_empty() || new_start.is_some())
            && let Some(disk) = &self.disk
            && let Err(e) = disk.commit(&changes, revision, new_start.map(|s| (s, &obsolete[..])))
        {
            tracing::error!(error = %e, "store commit failed");
            for (reply, outcome) in replies {
                let _ = reply.send(outcome.and(Err(e.clone())));
            }
            // A failing disk is not retried in a tight loop (due expiries come back at once).
            std::thread::sleep(Duration::from_millis(100));
            return;
        }
        for (at, key) in due {
            self.expiries.remove(&(at, key));
        }
        for c in &changes {
            if c.expires_at != 0 {
                self.expiries.insert((c.expires_at, c.event.kv.key.clone()));
            }
        }
        snap.revision = revision;
        hub.publish(events, revision, new_start, || {
            if let Next::Copy(copy) = next {
                *shared.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(copy);
            }
        });
        for (reply, outcome) in replies {
            // The caller may have given up waiting; the write stands all the same.
            let _ = reply.send(outcome);
        }
    }

    /// The change a write makes, for the disk and the watchers.
    fn record(
        changes: &mut Vec<Change>,
        key: &Arc<str>,
        entry: &Entry,
        prev: Option<KeyValue>,
    ) -> KeyValue {
        let kv = entry.kv(key);
        changes.push(Change {
            event: Event {
                kind: if prev.is_some() {
                    EventKind::Modified
                } else {
                    EventKind::Added
                },
                kv: kv.clone(),
                prev,
            },
            expires_at: entry.expires_at,
        });
        kv
    }
}

/// The state a commit writes: the current one, under its lock, or a copy of it.
enum Next<'a> {
    InPlace(std::sync::RwLockWriteGuard<'a, Arc<Snapshot>>),
    Copy(Snapshot),
}

/// The records that compacting to `start` makes unnecessary, given the events from the
/// current history start on: each version superseded by a change below `start`, and each
/// deletion below it. What remains below `start` is the state at `start`.
fn obsolete_records<'a>(events: impl Iterator<Item = &'a Event>, start: Revision) -> Vec<Revision> {
    let mut obsolete = Vec::new();
    for e in events.take_while(|e| e.revision() < start) {
        if let Some(prev) = &e.prev {
            obsolete.push(prev.mod_revision);
        }
        if e.kind == EventKind::Deleted {
            obsolete.push(e.revision());
        }
    }
    obsolete
}

fn deleted_change(prev: KeyValue, revision: Revision) -> Change {
    Change {
        event: Event {
            kind: EventKind::Deleted,
            kv: KeyValue {
                key: prev.key.clone(),
                value: Bytes::new(),
                create_revision: prev.create_revision,
                mod_revision: revision,
            },
            prev: Some(prev),
        },
        expires_at: 0,
    }
}
