//! federation-apiserver driven by kube-rs: typed and dynamic clients, and `watcher` +
//! `reflector` on every served type, surviving a SIGKILL and restart of the server.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use support::{Backend, Server};

async fn client(server: &Server) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(&server.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Every type of the federation API, with a minimal valid object of it.
fn every_type() -> Vec<(ApiResource, bool, serde_json::Value)> {
    let types = [
        ("", "v1", "Namespace", "namespaces", false),
        ("", "v1", "ConfigMap", "configmaps", true),
        ("", "v1", "Secret", "secrets", true),
        ("", "v1", "Service", "services", true),
        ("", "v1", "Event", "events", true),
        ("apps", "v1", "Deployment", "deployments", true),
        ("apps", "v1", "ReplicaSet", "replicasets", true),
        ("apps", "v1", "DaemonSet", "daemonsets", true),
        ("extensions", "v1beta1", "Ingress", "ingresses", true),
        ("batch", "v1", "Job", "jobs", true),
        (
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
        ),
        ("networking.k8s.io", "v1", "Ingress", "ingresses", true),
        ("coordination.k8s.io", "v1", "Lease", "leases", true),
        ("federation", "v1beta1", "Cluster", "clusters", false),
    ];
    types
        .into_iter()
        .map(|(g, v, k, plural, namespaced)| {
            let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), plural);
            let spec = if k == "Cluster" {
                json!({"serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "https://127.0.0.1:1"}]})
            } else {
                json!({})
            };
            (ar, namespaced, spec)
        })
        .collect()
}

fn api(client: &kube::Client, ar: &ApiResource, namespaced: bool) -> Api<DynamicObject> {
    if namespaced {
        Api::namespaced_with(client.clone(), "default", ar)
    } else {
        Api::all_with(client.clone(), ar)
    }
}

async fn create(
    client: &kube::Client,
    ar: &ApiResource,
    namespaced: bool,
    spec: &serde_json::Value,
    name: &str,
) {
    let mut obj = DynamicObject::new(name, ar);
    obj.data = json!({"spec": spec});
    api(client, ar, namespaced)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {} {name}: {e}", ar.kind));
}

/// Waits until `check` holds, for at most 60 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::Backend::Embedded).await })*
        }
        mod etcd {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::Backend::Etcd).await })*
        }
    };
}

on_both_backends!(
    typed_client_round_trip,
    reflectors_on_every_type_survive_a_restart
);

async fn typed_client_round_trip(backend: Backend) {
    let server = Server::start(backend);
    let client = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("typed".into()),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    };
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert!(created.metadata.uid.is_some());
    let got = cms.get("typed").await.unwrap();
    assert_eq!(got.data, cm.data);
    let list = cms.list(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    match cms.get("absent").await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 404),
        other => panic!("expected 404, got {other:?}"),
    }
    // Aggregated discovery finds every group, the federation's own among them.
    let discovery = kube::Discovery::new(client).run_aggregated().await.unwrap();
    let federation = discovery.get("federation").expect("the federation group");
    assert!(
        federation
            .recommended_resources()
            .iter()
            .any(|(r, _)| r.plural == "clusters")
    );
    assert!(discovery.get("apps").is_some() && discovery.get("").is_some());
}

async fn reflectors_on_every_type_survive_a_restart(backend: Backend) {
    let mut server = Server::start(backend);
    let client = client(&server).await;
    let mut stores = Vec::new();
    // Names differ by type: a resource served at two versions (ingresses) is one object.
    for (i, (ar, namespaced, spec)) in every_type().into_iter().enumerate() {
        let writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
        let reader = writer.as_reader();
        let stream = reflector(
            writer,
            watcher(api(&client, &ar, namespaced), watcher::Config::default()),
        )
        .default_backoff()
        .applied_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while stream.next().await.is_some() {}
        });
        create(&client, &ar, namespaced, &spec, &format!("before-{i}")).await;
        stores.push((i, ar, namespaced, spec, reader));
    }
    let has = |reader: &reflector::Store<DynamicObject>, name: &str| {
        reader
            .state()
            .iter()
            .any(|o| o.metadata.name.as_deref() == Some(name))
    };
    for (i, ar, _, _, reader) in &stores {
        eventually(&format!("{} before the restart", ar.kind), || {
            has(reader, &format!("before-{i}"))
        })
        .await;
    }
    server.restart();
    for (i, ar, namespaced, spec, _) in &stores {
        // The first write after a restart may race the server's start: retry briefly.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut obj = DynamicObject::new(&format!("after-{i}"), ar);
            obj.data = json!({"spec": spec});
            match api(&client, ar, *namespaced)
                .create(&PostParams::default(), &obj)
                .await
            {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("retrying create after restart: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("create {} after restart: {e}", ar.kind),
            }
        }
    }
    for (i, ar, _, _, reader) in &stores {
        eventually(&format!("{} after the restart", ar.kind), || {
            has(reader, &format!("before-{i}")) && has(reader, &format!("after-{i}"))
        })
        .await;
    }
}
