//! The etcd v3 backend, for a highly available federation.
//!
//! Keys live under a prefix (`/registry` by default), as kube-apiserver keeps them. Writes are
//! single-key transactions guarded by `mod_revision`, so etcd's own revision is the store's
//! revision. One etcd watch on the whole prefix feeds the shared fan-out hub; only a watch from
//! a revision older than the hub's history opens an etcd watch of its own.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    Identity, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::continuation::{self, Continue};
use crate::hub::Hub;
use crate::{
    Deleted, Error, Event, EventKind, KeyValue, ListOptions, ListPage, Result, Revision, Store,
    WatchStream, check_key,
};

/// Keys fetched per etcd range request when a list asks for everything.
const LIST_CHUNK: i64 = 5_000;

#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// `host:port` or `http(s)://host:port`, one per member.
    pub endpoints: Vec<String>,
    /// Every key is stored under this prefix.
    pub prefix: String,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// A call that takes longer fails with `Unavailable`.
    pub request_timeout: Duration,
    pub dial_timeout: Duration,
    /// Compact etcd's history this often, to the revision seen one interval earlier (as
    /// kube-apiserver's `--etcd-compaction-interval`); `None` leaves it to the operator.
    pub compaction_interval: Option<Duration>,
    pub history_limit: usize,
    pub watch_buffer: usize,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: "/registry".into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            request_timeout: Duration::from_secs(10),
            dial_timeout: Duration::from_secs(5),
            compaction_interval: Some(Duration::from_secs(300)),
            history_limit: 100_000,
            watch_buffer: 1024,
        }
    }
}

pub struct EtcdStore {
    client: Client,
    /// Without a trailing '/': stored key = prefix + key.
    prefix: String,
    hub: Arc<Hub>,
    timeout: Duration,
    /// Leases by TTL in seconds, reused for a while so that short-lived keys (events) do not
    /// cost a lease grant each, as kube-apiserver does.
    leases: tokio::sync::Mutex<HashMap<u64, (i64, Instant)>>,
    /// The etcd watch feeding the hub, started by the first watch: a store nobody watches
    /// does not pay for every write coming back to it.
    root: tokio::sync::OnceCell<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl EtcdStore {
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.dial_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some(tls) = tls_options(&config)? {
            options = options.with_tls(tls);
        }
        let client = tokio::time::timeout(
            config.dial_timeout,
            Client::connect(&config.endpoints, Some(options)),
        )
        .await
        .map_err(|_| Error::Unavailable("timed out connecting to etcd".into()))?
        .map_err(map_err)?;
        let prefix = config.prefix.trim_end_matches('/').to_string();
        let mut store = EtcdStore {
            client,
            prefix,
            // No history until the root watch starts: every watch goes to etcd until then.
            hub: Arc::new(Hub::new(
                Revision::MAX,
                0,
                Default::default(),
                config.history_limit,
                config.watch_buffer,
            )),
            timeout: config.request_timeout,
            leases: Default::default(),
            root: Default::default(),
            tasks: Vec::new(),
        };
        // Fail now, with a retryable error, if etcd cannot be reached.
        store.current_revision().await?;
        if let Some(interval) = config.compaction_interval {
            let task = compact_periodically(store.client.clone(), store.hub.clone(), interval);
            store.tasks.push(tokio::spawn(task));
        }
        Ok(store)
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Runs an etcd call within the request timeout. A call that failed to reach any member
    /// (it was never sent) is retried on the next endpoint, as is an idempotent read that etcd
    /// could not serve; a write that may have been applied is not.
    async fn call<T, F>(&self, idempotent: bool, mut f: impl FnMut() -> F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = match tokio::time::timeout(left, f()).await {
                Err(_) => return Err(Error::Unavailable("etcd request timed out".into())),
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
            };
            let never_sent = is_connect_error(&e);
            let e = map_err(e);
            if !(e.is_retryable() && (idempotent || never_sent))
                || Instant::now() + backoff >= deadline
            {
                return Err(e);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    fn kv(&self, kv: etcd_client::KeyValue) -> Result<KeyValue> {
        convert(&self.prefix, kv)
    }

    async fn lease(&self, ttl: Duration) -> Result<i64> {
        // Whole seconds, rounded up: a key lives at least its TTL.
        let secs = ttl
            .as_secs()
            .saturating_add(u64::from(ttl.subsec_nanos() > 0))
            .max(1);
        // Reused for 5% of the TTL, at most a minute; keys attached to it live at least `ttl`.
        let reuse = (secs / 20).min(60);
        let mut leases = self.leases.lock().await;
        if let Some((id, granted)) = leases.get(&secs)
            && granted.elapsed() < Duration::from_secs(reuse)
        {
            return Ok(*id);
        }
        let ttl = i64::try_from(secs.saturating_add(reuse)).unwrap_or(i64::MAX);
        let asked = Instant::now();
        let granted = self
            .call(true, || {
                let mut lc = self.client.lease_client();
                async move { lc.grant(ttl, None).await }
            })
            .await?;
        leases.insert(secs, (granted.id(), asked));
        Ok(granted.id())
    }

    async fn put_options(&self, ttl: Option<Duration>) -> Result<PutOptions> {
        Ok(match ttl {
            Some(t) => PutOptions::new().with_lease(self.lease(t).await?),
            None => PutOptions::new(),
        })
    }

    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse> {
        self.call(false, || {
            let (mut kvc, txn) = (self.client.kv_client(), txn.clone());
            async move { kvc.txn(txn).await }
        })
        .await
    }

    /// Runs a write guarded by the key's existence (and revision) whose else-branch reads the
    /// key: the revision and responses on success, else `Conflict` with what the key holds,
    /// or `NotFound`.
    async fn guarded(
        &self,
        key: &str,
        txn: Txn,
        expected: Revision,
    ) -> Result<(Revision, Vec<TxnOpResponse>)> {
        let mut resp = self.txn(txn).await?;
        let revision = resp.take_header().map_or(0, |h| h.revision() as u64);
        let responses = resp.op_responses();
        if resp.succeeded() {
            return Ok((revision, responses));
        }
        let current = match responses.into_iter().next() {
            Some(TxnOpResponse::Get(mut g)) => g.take_kvs().into_iter().next(),
            _ => None,
        };
        Err(match current {
            Some(kv) => Error::Conflict {
                expected,
                current: Box::new(self.kv(kv)?),
            },
            None => Error::NotFound {
                key: key.to_string(),
            },
        })
    }

    async fn too_old_or(&self, e: Error, requested: Revision) -> Error {
        match e {
            Error::TooOld { .. } => Error::TooOld {
                requested,
                compacted: 0,
            },
            Error::FutureRevision { .. } => Error::FutureRevision {
                requested,
                current: self.current_revision().await.unwrap_or_default(),
            },
            e => e,
        }
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        for t in self.tasks.iter().chain(self.root.get()) {
            t.abort();
        }
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        check_key(key)?;
        let key = self.full(key);
        let mut resp = self
            .call(true, || {
                let (mut kvc, key) = (self.client.kv_client(), key.clone());
                async move { kvc.get(key, None).await }
            })
            .await?;
        resp.take_kvs()
            .into_iter()
            .next()
            .map(|kv| self.kv(kv))
            .transpose()
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListPage> {
        check_key(prefix)?;
        let (at, start) = continuation::resolve(prefix, &options)?;
        let end = crate::prefix_end(&self.full(prefix)).unwrap_or_default();
        let limit = options.limit.filter(|l| *l > 0);
        let mut revision = at.unwrap_or(0);
        let mut from = self.full(&start).into_bytes();
        let mut items = Vec::new();
        loop {
            let want = limit.map_or(LIST_CHUNK, |l| (l - items.len()) as i64);
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(want)
                .with_revision(etcd_revision(revision)?);
            let get = || {
                let mut kvc = self
                    .client
                    .kv_client()
                    .max_decoding_message_size(usize::MAX);
                let (from, opts) = (from.clone(), opts.clone());
                async move { kvc.get(from, Some(opts)).await }
            };
            let mut resp = match self.call(true, get).await {
                Ok(r) => r,
                Err(e) => return Err(self.too_old_or(e, revision).await),
            };
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision() as u64);
            }
            let more = resp.more();
            let count = resp.count() as u64;
            let kvs = resp.take_kvs();
            let got = kvs.len() as u64;
            for kv in kvs {
                items.push(self.kv(kv)?);
            }
            let next = items.last().map(|kv| format!("{}\0", kv.key));
            if !more {
                return Ok(ListPage {
                    items,
                    revision,
                    continue_token: None,
                    remaining: Some(0),
                });
            }
            let next = next.unwrap_or_default();
            if limit.is_some() {
                return Ok(ListPage {
                    items,
                    revision,
                    continue_token: Some(Continue::new(revision, prefix, &next).encode()),
                    remaining: Some(count - got),
                });
            }
            from = self.full(&next).into_bytes();
        }
    }

    async fn create(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<KeyValue> {
        check_key(key)?;
        let k = self.full(key);
        let put = self.put_options(ttl).await?;
        let txn = Txn::new()
            .when([Compare::mod_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k, Vec::from(value.clone()), Some(put))]);
        let mut resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists {
                key: key.to_string(),
            });
        }
        let revision = resp.take_header().map_or(0, |h| h.revision() as u64);
        Ok(KeyValue {
            key: key.into(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
        ttl: Option<Duration>,
    ) -> Result<KeyValue> {
        check_key(key)?;
        let k = self.full(key);
        let put = self.put_options(ttl).await?.with_prev_key();
        let txn = Txn::new()
            .when([
                Compare::version(k.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(k.clone(), CompareOp::Equal, etcd_revision(expected)?),
            ])
            .and_then([TxnOp::put(k.clone(), Vec::from(value.clone()), Some(put))])
            .or_else([TxnOp::get(k, None)]);
        let (revision, responses) = self.guarded(key, txn, expected).await?;
        let create_revision = match responses.into_iter().next() {
            Some(TxnOpResponse::Put(p)) => p
                .prev_key()
                .map_or(revision, |p| p.create_revision() as u64),
            _ => revision,
        };
        Ok(KeyValue {
            key: key.into(),
            value,
            create_revision,
            mod_revision: revision,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted> {
        check_key(key)?;
        let k = self.full(key);
        let mut when = vec![Compare::version(k.clone(), CompareOp::Greater, 0)];
        if let Some(e) = expected {
            when.push(Compare::mod_revision(
                k.clone(),
                CompareOp::Equal,
                etcd_revision(e)?,
            ));
        }
        let txn = Txn::new()
            .when(when)
            .and_then([TxnOp::delete(
                k.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(k, None)]);
        let (revision, responses) = self.guarded(key, txn, expected.unwrap_or_default()).await?;
        let prev = match responses.into_iter().next() {
            Some(TxnOpResponse::Delete(mut d)) => d.take_prev_kvs().into_iter().next(),
            _ => None,
        }
        .ok_or_else(|| Error::Internal("etcd returned no deleted value".into()))?;
        Ok(Deleted {
            prev: self.kv(prev)?,
            revision,
        })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        check_key(prefix)?;
        self.root
            .get_or_try_init(|| async {
                let now = self.current_revision().await?;
                self.hub.reset(now + 1);
                let root = RootWatch {
                    client: self.client.clone(),
                    prefix: self.prefix.clone(),
                    hub: self.hub.clone(),
                };
                Ok::<_, Error>(tokio::spawn(root.run(now + 1)))
            })
            .await?;
        match self.hub.subscribe(prefix, after) {
            Err(Error::TooOld { .. }) => self.direct_watch(prefix, after).await,
            other => other,
        }
    }

    async fn current_revision(&self) -> Result<Revision> {
        let opts = GetOptions::new().with_count_only();
        let get = || {
            let (mut kvc, key, opts) = (self.client.kv_client(), self.prefix.clone(), opts.clone());
            async move { kvc.get(key, Some(opts)).await }
        };
        let resp = self.call(true, get).await?;
        Ok(resp.header().map_or(0, |h| h.revision() as u64))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let at = etcd_revision(revision)?;
        let compact = || {
            let mut kvc = self.client.kv_client();
            async move { kvc.compact(at, None).await }
        };
        match self.call(true, compact).await {
            Ok(_) | Err(Error::TooOld { .. }) => {
                // Watches from before the compaction fail here as they would in etcd.
                self.hub.publish(Vec::new(), 0, Some(revision), || ());
                Ok(())
            }
            Err(e) => Err(self.too_old_or(e, revision).await),
        }
    }
}

impl EtcdStore {
    /// A watch from before the hub's history: etcd serves it from its own, if not compacted.
    async fn direct_watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let start = etcd_revision(after.saturating_add(1))?;
        // etcd reports a compacted start revision only in a later message of the watch; a
        // read at that revision tells at once, so the caller gets TooOld from this call.
        let key = self.full(prefix);
        let probe = GetOptions::new().with_count_only().with_revision(start);
        let get = || {
            let (mut kvc, key, probe) = (self.client.kv_client(), key.clone(), probe.clone());
            async move { kvc.get(key, Some(probe)).await }
        };
        if let Err(e) = self.call(true, get).await {
            return Err(self.too_old_or(e, after).await);
        }
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(start);
        let watch = || {
            let (mut wc, key, opts) = (self.client.watch_client(), key.clone(), opts.clone());
            async move { wc.watch(key, Some(opts)).await }
        };
        let stream = self.call(true, watch).await?;
        let prefix = self.prefix.clone();
        let events = futures::stream::unfold(Some(stream), move |stream| {
            let prefix = prefix.clone();
            async move {
                let mut stream = stream?;
                loop {
                    match stream.message().await {
                        Ok(Some(r)) if r.compact_revision() > 0 => {
                            let e = Error::TooOld {
                                requested: after,
                                compacted: r.compact_revision() as u64,
                            };
                            return Some((vec![Err(e)], None));
                        }
                        Ok(Some(r)) if r.canceled() => {
                            let e = Error::Unavailable(format!(
                                "watch canceled: {}",
                                r.cancel_reason()
                            ));
                            return Some((vec![Err(e)], None));
                        }
                        Ok(Some(r)) => {
                            let batch: Vec<Result<Event>> = r
                                .events()
                                .iter()
                                .map(|e| convert_event(&prefix, e))
                                .collect();
                            if !batch.is_empty() {
                                return Some((batch, Some(stream)));
                            }
                        }
                        Ok(None) => return None,
                        Err(e) => return Some((vec![Err(map_err(e))], None)),
                    }
                }
            }
        });
        Ok(events.flat_map(futures::stream::iter).boxed())
    }
}

/// The one etcd watch that feeds the hub. It resumes after the last revision it saw when the
/// connection drops; if etcd compacted past that meanwhile, the hub is reset and every watcher
/// told to re-list.
struct RootWatch {
    client: Client,
    prefix: String,
    hub: Arc<Hub>,
}

impl RootWatch {
    async fn run(self, mut next: Revision) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.follow(&mut next).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => tracing::warn!(error = %e, next, "etcd watch interrupted; resuming"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn follow(&self, next: &mut Revision) -> Result<()> {
        let mut wc = self.client.watch_client();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(etcd_revision(*next)?);
        let mut stream = wc
            .watch(format!("{}/", self.prefix), Some(opts))
            .await
            .map_err(map_err)?;
        while let Some(resp) = stream.message().await.map_err(map_err)? {
            if resp.compact_revision() > 0 {
                let mut kvc = self.client.kv_client();
                let now = kvc
                    .get(
                        self.prefix.clone(),
                        Some(GetOptions::new().with_count_only()),
                    )
                    .await
                    .map_err(map_err)?;
                let now = now.header().map_or(0, |h| h.revision() as u64);
                tracing::warn!(
                    compacted = resp.compact_revision(),
                    now,
                    "etcd history lost; watchers must re-list"
                );
                *next = now + 1;
                self.hub.reset(*next);
                return Ok(());
            }
            if resp.canceled() {
                return Err(Error::Unavailable(format!(
                    "watch canceled: {}",
                    resp.cancel_reason()
                )));
            }
            // A foreign key that is not ours to read is skipped, not fatal to every watcher.
            let events: Vec<Event> = resp
                .events()
                .iter()
                .filter_map(|e| {
                    convert_event(&self.prefix, e)
                        .inspect_err(|err| tracing::warn!(error = %err, "skipping an etcd event"))
                        .ok()
                })
                .collect();
            if let Some(last) = events.last().map(Event::revision) {
                let trim = self.hub.trim_point(&events);
                self.hub.publish(events, last, trim, || ());
                *next = last + 1;
            }
        }
        Ok(())
    }
}

async fn compact_periodically(client: Client, hub: Arc<Hub>, interval: Duration) {
    let mut previous: Option<i64> = None;
    loop {
        tokio::time::sleep(interval).await;
        let mut kvc = client.kv_client();
        if let Some(rev) = previous {
            match kvc.compact(rev, None).await {
                Ok(_) => hub.publish(Vec::new(), 0, Some(rev as u64), || ()),
                Err(e) => tracing::debug!(error = %e, rev, "etcd compaction skipped"),
            }
        }
        previous = kvc
            .get("/", Some(GetOptions::new().with_count_only()))
            .await
            .ok()
            .and_then(|r| r.header().map(|h| h.revision()));
    }
}

fn tls_options(config: &EtcdConfig) -> Result<Option<TlsOptions>> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| Error::Internal(format!("{}: {e}", p.display())))
    };
    if config.ca_file.is_none() && config.cert_file.is_none() {
        return Ok(None);
    }
    let mut tls = TlsOptions::new();
    if let Some(ca) = &config.ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?)),
        (None, None) => {}
        _ => {
            return Err(Error::Internal(
                "etcd client certificate and key must be given together".into(),
            ));
        }
    }
    Ok(Some(tls))
}

fn convert(prefix: &str, kv: etcd_client::KeyValue) -> Result<KeyValue> {
    let (create_revision, mod_revision) = (kv.create_revision() as u64, kv.mod_revision() as u64);
    let (key, value) = kv.into_key_value();
    let key = String::from_utf8(key)
        .ok()
        .and_then(|k| k.strip_prefix(prefix).map(Arc::<str>::from))
        .ok_or_else(|| Error::Internal("etcd returned a key outside the prefix".into()))?;
    Ok(KeyValue {
        key,
        value: Bytes::from(value),
        create_revision,
        mod_revision,
    })
}

fn convert_event(prefix: &str, e: &etcd_client::Event) -> Result<Event> {
    let kv = e
        .kv()
        .cloned()
        .ok_or_else(|| Error::Internal("etcd event without a key".into()))?;
    let kv = convert(prefix, kv)?;
    let prev = e
        .prev_kv()
        .cloned()
        .map(|p| convert(prefix, p))
        .transpose()?;
    let kind = match e.event_type() {
        EventType::Delete => EventKind::Deleted,
        EventType::Put if kv.create_revision == kv.mod_revision => EventKind::Added,
        EventType::Put => EventKind::Modified,
    };
    let kv = KeyValue {
        create_revision: prev
            .as_ref()
            .map_or(kv.create_revision, |p| p.create_revision),
        ..kv
    };
    Ok(Event { kind, kv, prev })
}

/// Whether the call failed before reaching etcd: no connection could be made. Failures
/// after sending (a reset, a closed stream) do not count: the write may have been applied.
fn is_connect_error(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            let m = s.message();
            s.code() == tonic::Code::Unavailable
                && (m.contains("tcp connect error")
                    || m.contains("error trying to connect")
                    || m.contains("dns error"))
        }
        _ => false,
    }
}

/// etcd revisions are i64: a larger one cannot exist there yet.
fn etcd_revision(revision: Revision) -> Result<i64> {
    i64::try_from(revision).map_err(|_| Error::FutureRevision {
        requested: revision,
        current: 0,
    })
}

fn map_err(e: etcd_client::Error) -> Error {
    use etcd_client::Error as E;
    use tonic::Code;
    match e {
        E::GRpcStatus(s) => {
            let msg = s.message().to_string();
            match s.code() {
                Code::OutOfRange if msg.contains("compacted") => Error::TooOld {
                    requested: 0,
                    compacted: 0,
                },
                Code::OutOfRange if msg.contains("future") => Error::FutureRevision {
                    requested: 0,
                    current: 0,
                },
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Aborted
                | Code::ResourceExhausted
                | Code::Unknown => Error::Unavailable(msg),
                _ => Error::Internal(format!("etcd: {msg}")),
            }
        }
        E::TransportError(e) => Error::Unavailable(e.to_string()),
        E::IoError(e) => Error::Unavailable(e.to_string()),
        E::WatchError(e) => Error::Unavailable(e),
        other => Error::Internal(format!("etcd: {other}")),
    }
}
