//! API server benchmark: starts the `federation-apiserver` binary on the embedded store and
//! drives it over HTTPS with a load generator of persistent HTTP/1.1 connections, whose own
//! ceiling (against `/healthz`) is printed first. Prints creates/s of 1 KiB ConfigMaps with 1,
//! 16 and 64 connections, GETs/s, a LIST of many objects (time and peak server memory), watch
//! delivery with 1,000 watchers, start-to-ready time and idle memory, and the storage
//! layer's own figures from the same run, so the API overhead shows as a ratio.
//!
//! `cargo bench -p fellowship-apiserver --bench apiserver`
//! `FELLOWSHIP_BENCH_OBJECTS` sets the number of objects listed (100000).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fellowship_storage::{EmbeddedConfig, EmbeddedStore, Store};
use fellowship_testkit::https::{self, Target, configmap, send};
use fellowship_testkit::{Pki, bench_runtime, env_number, free_port, memory, reset_peak_memory};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use tokio::net::TcpStream;

const TOKEN: &str = "bench-token";
const PHASE: Duration = Duration::from_secs(3);

fn request(method: &str, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    https::request(TOKEN, method, path, body)
}

/// Requests/s from `conns` connections for a fixed time; `make(conn, i)` builds each request.
async fn rate<F>(target: &Arc<Target>, conns: usize, make: F) -> f64
where
    F: Fn(usize, usize) -> Request<Full<Bytes>> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|c| {
            let (target, make, done) = (target.clone(), make.clone(), done.clone());
            tokio::spawn(async move {
                let mut conn = target.connect().await;
                let mut i = 0;
                while start.elapsed() < PHASE {
                    let status = send(&mut conn, make(c, i)).await;
                    assert!(status < 300, "HTTP {status}");
                    i += 1;
                }
                done.fetch_add(i as u64, Ordering::Relaxed);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// A process's memory in MiB: (current, peak).
fn mib(pid: u32) -> (f64, f64) {
    let (rss, peak) = memory(Some(pid));
    (
        rss as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64,
    )
}

fn main() {
    let objects = env_number("FELLOWSHIP_BENCH_OBJECTS", 100_000);
    let rt = bench_runtime();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let serving = pki.server("apiserver");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, format!("{TOKEN},bench,1\n")).unwrap();
    let port = free_port();
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_federation-apiserver"))
        .arg(format!("--secure-port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--tls-cert-file={}", serving.cert.display()))
        .arg(format!("--tls-private-key-file={}", serving.key.display()))
        .arg(format!("--token-auth-file={}", tokens.display()))
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();

    let ca = std::fs::read(pki.ca_file()).unwrap();
    let target = Arc::new(Target::new(port, &ca));

    rt.block_on(async {
        // Start to ready: until /readyz answers.
        loop {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                let mut conn = target.connect().await;
                if send(&mut conn, request("GET", "/readyz", Bytes::new())).await == 200 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        println!("federation-apiserver benchmark, embedded store, 2 cores");
        println!("start to ready: {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!("idle memory: {:.1} MiB RSS", mib(pid).0);

        let ceiling = rate(&target, 64, |_, _| request("GET", "/healthz", Bytes::new())).await;
        println!("load generator ceiling (GET /healthz, 64 connections): {ceiling:.0} req/s");

        let path = "/api/v1/namespaces/default/configmaps";
        let mut creates = HashMap::new();
        for conns in [1, 16, 64] {
            let r = rate(&target, conns, move |c, i| {
                request("POST", path, configmap(&format!("c{conns}-{c}-{i}")))
            })
            .await;
            println!("creates of 1 KiB ConfigMaps, {conns} connections: {r:.0}/s");
            creates.insert(conns, r);
        }
        let gets = rate(&target, 64, move |c, i| {
            request("GET", &format!("{path}/c64-{c}-{}", i % 50), Bytes::new())
        })
        .await;
        println!("GETs, 64 connections: {gets:.0}/s");

        // Storage's own figures, measured here, in this process.
        let store = Arc::new(
            EmbeddedStore::open(EmbeddedConfig::durable(dir.path().join("raw")))
                .await
                .unwrap(),
        );
        let raw_creates = storage_rate(&store, 64, true).await;
        let raw_gets = storage_rate(&store, 64, false).await;
        println!("storage alone: {raw_creates:.0} creates/s (64 writers), {raw_gets:.0} gets/s");
        println!(
            "ratio API/storage: creates {:.2}, gets {:.2}",
            creates[&64] / raw_creates,
            gets / raw_gets
        );
        drop(store);

        // Fill to `objects` in a namespace of their own, then list them all at once.
        let list_path = "/api/v1/namespaces/bench/configmaps";
        let mut conn = target.connect().await;
        let ns = serde_json::to_vec(&serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})).unwrap();
        send(&mut conn, request("POST", "/api/v1/namespaces", Bytes::from(ns))).await;
        // The create phases above left objects behind: the cost of these is the growth.
        let before_fill = mib(pid).0;
        let next = Arc::new(AtomicU64::new(0));
        let t = Instant::now();
        let fillers: Vec<_> = (0..64)
            .map(|_| {
                let (target, next) = (target.clone(), next.clone());
                tokio::spawn(async move {
                    let mut conn = target.connect().await;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if i >= objects {
                            break;
                        }
                        let status = send(&mut conn, request("POST", list_path, configmap(&format!("o{i}")))).await;
                        assert_eq!(status, 201);
                    }
                })
            })
            .collect();
        for f in fillers {
            f.await.unwrap();
        }
        println!("loaded {objects} objects in {:.1} s", t.elapsed().as_secs_f64());
        let held = mib(pid).0;
        println!(
            "memory holding them: {held:.0} MiB RSS, {:.0} MiB more than before they were loaded (with the create phases' objects)",
            held - before_fill
        );
        reset_peak_memory(Some(pid));
        let t = Instant::now();
        conn.ready().await.unwrap();
        let resp = conn.send_request(request("GET", list_path, Bytes::new())).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let took = t.elapsed();
        let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), objects);
        println!(
            "LIST of {objects} ConfigMaps: {:.0} ms ({:.0} MiB), server peak memory {:.0} MiB",
            took.as_secs_f64() * 1000.0,
            body.len() as f64 / (1 << 20) as f64,
            mib(pid).1
        );

        let (p50, p99) = watch_latency(&target, 1000, 200).await;
        println!("watch delivery, 1000 watchers on one namespace: p50 {p50:.2} ms, p99 {p99:.2} ms");
    });
    let _ = child.kill();
    let _ = child.wait();
}

async fn storage_rate(store: &Arc<EmbeddedStore>, tasks: usize, write: bool) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while start.elapsed() < PHASE {
                    if write {
                        store
                            .create(&format!("/raw/{t}/{i}"), configmap("x"), None)
                            .await
                            .unwrap();
                    } else {
                        store.get(&format!("/raw/{t}/{}", i % 50)).await.unwrap();
                    }
                    i += 1;
                }
                done.fetch_add(i, Ordering::Relaxed);
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// `watchers` watch the namespace from its current resource version while `writes` creates
/// arrive at 100/s; latency from before each create to each watcher reading its event.
async fn watch_latency(target: &Arc<Target>, watchers: usize, writes: usize) -> (f64, f64) {
    let path = "/api/v1/namespaces/watched/configmaps";
    let mut conn = target.connect().await;
    let ns = serde_json::to_vec(&serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "watched"}})).unwrap();
    send(
        &mut conn,
        request("POST", "/api/v1/namespaces", Bytes::from(ns)),
    )
    .await;
    conn.ready().await.unwrap();
    let resp = conn
        .send_request(request("GET", path, Bytes::new()))
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let sent: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let mut tasks = Vec::new();
    let ready = Arc::new(AtomicU64::new(0));
    for _ in 0..watchers {
        let (target, sent, rv, ready) = (target.clone(), sent.clone(), rv.clone(), ready.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = target.connect().await;
            let req = request(
                "GET",
                &format!("{path}?watch=true&resourceVersion={rv}"),
                Bytes::new(),
            );
            let mut body = conn.send_request(req).await.unwrap().into_body();
            ready.fetch_add(1, Ordering::Relaxed);
            let mut lat = Vec::with_capacity(writes);
            let mut buf = Vec::new();
            while lat.len() < writes {
                let frame = body.frame().await.unwrap().unwrap();
                let at = Instant::now();
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                    while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=nl).collect();
                        let e: serde_json::Value = serde_json::from_slice(&line).unwrap();
                        let name = e["object"]["metadata"]["name"]
                            .as_str()
                            .unwrap()
                            .to_string();
                        let start = sent.lock().unwrap()[&name];
                        lat.push(at.duration_since(start));
                    }
                }
            }
            lat
        }));
    }
    while ready.load(Ordering::Relaxed) < watchers as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for i in 0..writes {
        tick.tick().await;
        let name = format!("w{i}");
        sent.lock().unwrap().insert(name.clone(), Instant::now());
        assert_eq!(
            send(&mut conn, request("POST", path, configmap(&name))).await,
            201
        );
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    (pct(0.5), pct(0.99))
}
