//! The etcd backend when etcd misbehaves: down, unreachable, or reached over TLS. Each test
//! runs its own real etcd on loopback.

mod support;

use std::time::{Duration, Instant};

use fellowship_storage::{Error, EtcdConfig, EtcdStore, ListOptions, Store};
use fellowship_testkit::{Etcd, free_port};
use support::{b, next_event};

fn config(etcd: &Etcd) -> EtcdConfig {
    let mut c = EtcdConfig::new(vec![etcd.endpoint()]);
    c.request_timeout = Duration::from_secs(2);
    c.dial_timeout = Duration::from_secs(2);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_gives_retryable_errors_and_recovers() {
    let mut etcd = Etcd::start();
    let store = EtcdStore::connect(config(&etcd)).await.unwrap();
    let before = store.create("/o/before", b("1"), None).await.unwrap();
    let mut w = store.watch("/o/", before.mod_revision).await.unwrap();

    etcd.kill();
    let started = Instant::now();
    let errors = [
        store.create("/o/during", b("2"), None).await.err(),
        store.get("/o/before").await.err(),
        store.list("/o/", ListOptions::default()).await.err(),
        store.current_revision().await.err(),
    ];
    for e in errors {
        let e = e.expect("an operation fails while etcd is down");
        assert!(e.is_retryable(), "retryable: {e}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "failures are bounded by the request timeout"
    );

    etcd.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        match store.create("/o/after", b("3"), None).await {
            Ok(kv) => break kv,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("etcd back, but: {e}"),
        }
    };
    assert!(after.mod_revision > before.mod_revision);
    // The watch opened before the outage carries on from where it was.
    let e = next_event(&mut w).await.unwrap();
    assert_eq!(e.kv, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_fails_to_connect_retryably() {
    let mut c = EtcdConfig::new(vec![format!("127.0.0.1:{}", free_port())]);
    c.dial_timeout = Duration::from_secs(1);
    c.request_timeout = Duration::from_secs(1);
    match EtcdStore::connect(c).await {
        Err(e) => assert!(e.is_retryable(), "retryable: {e}"),
        Ok(_) => panic!("connected to nothing"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let etcd = Etcd::start_tls();
    let tls = etcd.tls().unwrap();
    let mut c = config(&etcd);
    c.ca_file = Some(tls.pki.ca_file());
    c.cert_file = Some(tls.client.cert.clone());
    c.key_file = Some(tls.client.key.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let store = loop {
        match EtcdStore::connect(c.clone()).await {
            Ok(s) => break s,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("TLS connect: {e}"),
        }
    };
    let kv = store.create("/tls/a", b("secret"), None).await.unwrap();
    assert_eq!(store.get("/tls/a").await.unwrap(), Some(kv.clone()));
    let mut w = store.watch("/tls/", kv.mod_revision - 1).await.unwrap();
    assert_eq!(next_event(&mut w).await.unwrap().kv, kv);

    // Without a client certificate etcd refuses the connection: an error, not a panic.
    let mut anonymous = config(&etcd);
    anonymous.ca_file = Some(tls.pki.ca_file());
    assert!(EtcdStore::connect(anonymous).await.is_err());

    // A key without its certificate is a configuration error.
    let mut half = c.clone();
    half.cert_file = None;
    assert!(matches!(
        EtcdStore::connect(half).await,
        Err(Error::Internal(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_endpoints_one_down() {
    let etcd = Etcd::start();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut c = config(&etcd);
    c.endpoints = vec![dead, etcd.endpoint()];
    c.prefix = "/custom-prefix".into();
    let store = EtcdStore::connect(c).await.unwrap();
    for i in 0..20 {
        let key = format!("/e/{i}");
        let kv = store.create(&key, b("v"), None).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap(), Some(kv));
    }
    // Keys live under the configured prefix in etcd itself.
    let mut raw = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let found = raw.get("/custom-prefix/e/0", None).await.unwrap();
    assert_eq!(found.kvs().len(), 1);
}
