//! Storage benchmark: prints the figures for the embedded and etcd backends, with the
//! raw baselines (redb batched writes, etcd-client puts from 64 tasks) measured in the same run.
//!
//! `cargo bench -p fellowship-storage --bench storage [-- embedded|memory|etcd ...]`
//! `FELLOWSHIP_BENCH_KEYS` sets the number of keys for the read and list figures (100000).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fellowship_storage::{
    EmbeddedConfig, EmbeddedStore, EtcdConfig, EtcdStore, ListOptions, Store,
};
use fellowship_testkit::{Etcd, bench_runtime, env_number, memory, reset_peak_memory};
use futures::StreamExt;

const VALUE_SIZE: usize = 1024;
const PHASE: Duration = Duration::from_secs(3);

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let keys = env_number("FELLOWSHIP_BENCH_KEYS", 100_000);
    let rt = bench_runtime();
    println!("storage benchmark: {keys} keys, {VALUE_SIZE} B values, 2 cores");
    rt.block_on(async {
        if wants("embedded") {
            let dir = tempfile::tempdir().unwrap();
            let raw = raw_redb(dir.path()).await;
            println!("\n== embedded (redb, durable)");
            println!("raw redb, 1000 puts per fsync'd txn: {raw:.0} puts/s");
            let path = dir.path().join("store");
            let store = Arc::new(
                EmbeddedStore::open(EmbeddedConfig::durable(&path))
                    .await
                    .unwrap(),
            );
            let c64 = common(store.clone(), keys).await;
            println!(
                "ratio ours/raw (64 writers vs raw batched): {:.2}",
                c64 / raw
            );
            drop(store);
            let t = Instant::now();
            let store = EmbeddedStore::open(EmbeddedConfig::durable(&path))
                .await
                .unwrap();
            let n = store
                .list("/bench/", ListOptions::default())
                .await
                .unwrap()
                .items
                .len();
            println!("reopen with {n} keys: {:.0} ms", ms(t.elapsed()));
        }
        if wants("memory") {
            println!("\n== embedded (memory only)");
            let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::memory()).await.unwrap());
            common(store, keys).await;
        }
        if wants("etcd") {
            let etcd = Etcd::start();
            let raw = raw_etcd(&etcd.endpoint(), false).await;
            let raw_txn = raw_etcd(&etcd.endpoint(), true).await;
            println!("\n== etcd ({})", etcd.endpoint());
            println!("raw etcd-client puts, 64 tasks: {raw:.0} puts/s");
            println!("raw etcd-client create-if-absent txns, 64 tasks: {raw_txn:.0} txns/s");
            let mut config = EtcdConfig::new(vec![etcd.endpoint()]);
            config.prefix = "/fellowship".into();
            let store = Arc::new(EtcdStore::connect(config).await.unwrap());
            let c64 = common(store, keys).await;
            let t = Instant::now();
            let n = raw_etcd_list(&etcd.endpoint(), "/fellowship/bench/").await;
            println!(
                "raw etcd-client range of {n} keys in one request: {:.0} ms",
                ms(t.elapsed())
            );
            println!("ratio ours/raw puts (64 writers): {:.2}", c64 / raw);
            println!("ratio ours/raw txns (64 writers): {:.2}", c64 / raw_txn);
        }
    });
}

/// The figures measured the same way on every backend; returns creates/s with 64 writers.
async fn common(store: Arc<dyn Store>, keys: usize) -> f64 {
    let c1 = creates(&store, 1, "/c1/").await;
    println!("creates, 1 writer: {c1:.0}/s");
    let c64 = creates(&store, 64, "/c64/").await;
    println!("creates, 64 writers: {c64:.0}/s");

    let t = Instant::now();
    fill(&store, keys).await;
    println!(
        "loaded {keys} keys for reads and lists in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let reads = point_reads(&store, keys).await;
    println!("point reads: {reads:.0}/s");

    let base = memory(None).0;
    reset_peak_memory(None);
    let t = Instant::now();
    let page = store.list("/bench/", ListOptions::default()).await.unwrap();
    let took = t.elapsed();
    let peak = memory(None).1.saturating_sub(base);
    assert_eq!(page.items.len(), keys);
    drop(page);
    println!(
        "list of {keys} keys: {:.0} ms, peak memory +{:.0} MiB",
        ms(took),
        peak as f64 / (1 << 20) as f64
    );

    let (p50, p99, n) = watch_latency(&store, 1000, 200).await;
    println!("watch delivery, 1000 watchers: p50 {p50:.2} ms, p99 {p99:.2} ms ({n} deliveries)");
    c64
}

fn value(i: usize) -> Bytes {
    let mut v = format!("{i:>16}").into_bytes();
    v.resize(VALUE_SIZE, b'x');
    Bytes::from(v)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `op(task, i)` from `tasks` concurrent tasks, each looping for a fixed time; each call
/// does `per_call` operations. Returns operations per second.
async fn throughput<F, Fut>(tasks: usize, per_call: u64, op: F) -> f64
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (op, done) = (op.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while start.elapsed() < PHASE {
                    op(t, i).await;
                    i += 1;
                }
                done.fetch_add(i as u64 * per_call, Ordering::Relaxed);
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Creates from `writers` concurrent tasks; returns creates/s.
async fn creates(store: &Arc<dyn Store>, writers: usize, prefix: &str) -> f64 {
    let (store, prefix) = (store.clone(), prefix.to_string());
    throughput(writers, 1, move |w, i| {
        let (store, key) = (store.clone(), format!("{prefix}{w}/{i}"));
        async move {
            store.create(&key, value(i), None).await.unwrap();
        }
    })
    .await
}

async fn fill(store: &Arc<dyn Store>, keys: usize) {
    let tasks: Vec<_> = (0..64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (w..keys).step_by(64) {
                    store
                        .create(&format!("/bench/{i:08}"), value(i), None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Random point reads of existing keys from 64 tasks, 256 per call (so the benchmark's own
/// bookkeeping stays out of the figure); returns reads/s.
async fn point_reads(store: &Arc<dyn Store>, keys: usize) -> f64 {
    let store = store.clone();
    throughput(64, 256, move |t, i| {
        let store = store.clone();
        async move {
            let mut x = ((t as u64) << 32 | i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for _ in 0..256 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = format!("/bench/{:08}", x as usize % keys);
                assert!(store.get(&key).await.unwrap().is_some());
            }
        }
    })
    .await
}

/// `watchers` watch one prefix while `writes` keys are created at 100/s; latency is from
/// just before the create call to each watcher's receipt. Returns (p50 ms, p99 ms, samples).
async fn watch_latency(
    store: &Arc<dyn Store>,
    watchers: usize,
    writes: usize,
) -> (f64, f64, usize) {
    let from = store.current_revision().await.unwrap();
    let sent: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let mut w = store.watch("/watch/", from).await.unwrap();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(writes);
            while lat.len() < writes {
                let e = w.next().await.expect("stream open").expect("no error");
                let at = Instant::now();
                let start = sent.lock().unwrap()[&*e.kv.key];
                lat.push(at.duration_since(start));
            }
            lat
        }));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for i in 0..writes {
        tick.tick().await;
        let key = format!("/watch/{i}");
        sent.lock().unwrap().insert(key.clone(), Instant::now());
        store.create(&key, value(i), None).await.unwrap();
    }
    let mut all: Vec<Duration> = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let pct = |p: f64| ms(all[((all.len() as f64 * p) as usize).min(all.len() - 1)]);
    (pct(0.50), pct(0.99), all.len())
}

/// The raw redb baseline: 100 transactions of 1000 1 KiB puts, each fsync'd; puts/s.
async fn raw_redb(dir: &std::path::Path) -> f64 {
    use redb::{Database, Durability, TableDefinition};
    const T: TableDefinition<&str, &[u8]> = TableDefinition::new("raw");
    let path = dir.join("raw.redb");
    tokio::task::spawn_blocking(move || {
        let db = Database::create(&path).unwrap();
        let v = value(0);
        let start = Instant::now();
        let mut n = 0;
        for batch in 0..100 {
            let mut txn = db.begin_write().unwrap();
            txn.set_durability(Durability::Immediate).unwrap();
            {
                let mut t = txn.open_table(T).unwrap();
                for i in 0..1000 {
                    t.insert(format!("/raw/{batch}/{i}").as_str(), &v[..])
                        .unwrap();
                    n += 1;
                }
            }
            txn.commit().unwrap();
        }
        n as f64 / start.elapsed().as_secs_f64()
    })
    .await
    .unwrap()
}

/// The raw etcd baselines from 64 tasks sharing one client: plain puts, or the
/// create-if-absent transaction every create needs.
async fn raw_etcd(endpoint: &str, txn: bool) -> f64 {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let client = etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap();
    throughput(64, 1, move |w, i| {
        let mut kv = client.kv_client();
        let key = format!("/raw/{txn}/{w}/{i}");
        async move {
            if txn {
                let t = Txn::new()
                    .when([Compare::mod_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, value(i).to_vec(), None)]);
                assert!(kv.txn(t).await.unwrap().succeeded());
            } else {
                kv.put(key, value(i).to_vec(), None).await.unwrap();
            }
        }
    })
    .await
}

/// The raw etcd list baseline: the whole prefix in one range request.
async fn raw_etcd_list(endpoint: &str, prefix: &str) -> usize {
    let client = etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap();
    let mut kv = client.kv_client().max_decoding_message_size(usize::MAX);
    let opts = etcd_client::GetOptions::new().with_prefix();
    kv.get(prefix, Some(opts)).await.unwrap().kvs().len()
}
