//! federation-apiserver driven by the real kubectl: the guide's commands, output formats,
//! watch, authentication and bad input, on the embedded store and on etcd.
//!
//! kubectl 1.27 and 1.31 send typed objects as JSON, kubectl 1.32 (on PATH) and 1.33 as
//! protobuf: creates run on both kinds.

mod support;

use serde_json::Value;
use support::{Backend, Server};

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(#[test]
            fn $test() { super::$test(super::Backend::Embedded) })*
        }
        mod etcd {
            $(#[test]
            fn $test() { super::$test(super::Backend::Etcd) })*
        }
    };
}

on_both_backends!(
    namespaces_and_configmaps,
    clusters_print_name_status_age,
    watch_streams_changes,
    authentication,
    bad_input_is_refused_and_changes_nothing,
    protobuf_bodies_from_new_kubectl,
    guide_manifests_and_explain,
    deletion_follows_propagation_policy,
    apply_patch_and_scale,
    server_side_apply,
    versions_convert_and_fields_validate,
);

const READERS: [&str; 3] = ["", "1.27", "1.33"];

fn namespaces_and_configmaps(backend: Backend) {
    let s = Server::start(backend);
    // The default namespace exists from the start.
    assert!(s.ok("", &["get", "namespaces"]).contains("default"));
    s.ok("1.33", &["create", "namespace", "prod"]);
    s.ok("1.27", &["create", "namespace", "staging"]);
    s.ok("", &["create", "namespace", "dev"]);
    let file = s.file("game.properties", b"lives=3\nenemies=aliens\n");
    s.ok(
        "1.31",
        &[
            "-n",
            "prod",
            "create",
            "configmap",
            "game",
            &format!("--from-file={file}"),
        ],
    );
    s.ok(
        "1.27",
        &[
            "-n",
            "prod",
            "create",
            "configmap",
            "ui",
            "--from-literal=color=blue",
        ],
    );
    for v in READERS {
        let table = s.ok(v, &["-n", "prod", "get", "configmaps"]);
        assert!(table.starts_with("NAME"), "kubectl {v}: {table}");
        assert!(
            table.contains("game") && table.contains("ui"),
            "kubectl {v}: {table}"
        );
        let json: Value =
            serde_json::from_str(&s.ok(v, &["-n", "prod", "get", "cm", "game", "-o", "json"]))
                .unwrap();
        assert_eq!(json["data"]["game.properties"], "lives=3\nenemies=aliens\n");
        assert_eq!(json["metadata"]["namespace"], "prod");
        assert!(
            json["metadata"]["uid"]
                .as_str()
                .is_some_and(|u| !u.is_empty())
        );
        assert!(json["metadata"]["resourceVersion"].as_str().is_some());
        let yaml = s.ok(v, &["-n", "prod", "get", "cm", "ui", "-o", "yaml"]);
        assert!(yaml.contains("color: blue"), "{yaml}");
        let names = s.ok(v, &["-n", "prod", "get", "cm", "-o", "name"]);
        assert_eq!(names, "configmap/game\nconfigmap/ui\n");
        assert!(
            s.ok(v, &["-n", "prod", "get", "cm", "-o", "wide"])
                .contains("game")
        );
    }
    for v in READERS {
        s.ok(
            v,
            &[
                "-n",
                "prod",
                "label",
                "--overwrite",
                "cm",
                "ui",
                &format!("tier=t{}", v.replace('.', "")),
            ],
        );
        s.ok(
            v,
            &[
                "-n",
                "prod",
                "annotate",
                "--overwrite",
                "cm",
                "ui",
                "note=hi",
            ],
        );
    }
    assert_eq!(
        s.ok(
            "",
            &["-n", "prod", "get", "cm", "-l", "tier=t133", "-o", "name"]
        ),
        "configmap/ui\n"
    );
    assert_eq!(
        s.ok(
            "",
            &[
                "-n",
                "prod",
                "get",
                "cm",
                "ui",
                "-o",
                "jsonpath={.metadata.annotations.note}"
            ]
        ),
        "hi"
    );
    assert!(s.ok("", &["get", "namespaces"]).contains("staging"));
    s.ok("", &["-n", "prod", "delete", "cm", "game"]);
    let err = s.fails("", &["-n", "prod", "get", "cm", "game"]);
    assert!(err.contains("NotFound"), "{err}");
    // A create in a namespace that does not exist is refused.
    let err = s.fails(
        "1.31",
        &[
            "-n",
            "nowhere",
            "create",
            "configmap",
            "x",
            "--from-literal=a=b",
        ],
    );
    assert!(err.contains("namespaces \"nowhere\" not found"), "{err}");

    // The namespace finalizer cannot be patched away: deleting still empties the namespace.
    s.ok(
        "",
        &[
            "patch",
            "namespace",
            "prod",
            "--type=merge",
            "-p",
            r#"{"spec":null}"#,
        ],
    );
    let finalizers = s.ok(
        "",
        &[
            "get",
            "namespace",
            "prod",
            "-o",
            "jsonpath={.spec.finalizers}",
        ],
    );
    assert!(finalizers.contains("kubernetes"), "{finalizers}");

    // Deleting a namespace empties it, then removes it.
    s.ok(
        "",
        &[
            "delete",
            "namespace",
            "prod",
            "--wait=true",
            "--timeout=60s",
        ],
    );
    let err = s.fails("", &["get", "namespace", "prod"]);
    assert!(err.contains("NotFound"), "{err}");
    assert_eq!(s.ok("", &["-n", "prod", "get", "cm", "-o", "name"]), "");
    assert!(s.ok("", &["get", "namespaces"]).contains("staging"));
}

const CLUSTER: &str = r#"apiVersion: federation/v1beta1
kind: Cluster
metadata:
  name: gondor
spec:
  serverAddressByClientCIDRs:
  - clientCIDR: "0.0.0.0/0"
    serverAddress: "https://127.0.0.1:7001"
  secretRef:
    name: gondor
"#;

fn clusters_print_name_status_age(backend: Backend) {
    let s = Server::start(backend);
    let file = s.file("cluster.yaml", CLUSTER.as_bytes());
    s.ok("1.31", &["create", "--validate=false", "-f", &file]);
    for v in READERS {
        let out = s.ok(v, &["get", "clusters"]);
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["NAME", "STATUS", "AGE"], "kubectl {v}: {out}");
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(&row[..2], ["gondor", "Unknown"], "kubectl {v}: {out}");
    }
    s.ok(
        "",
        &["annotate", "clusters", "gondor", "pci-certified=true"],
    );
    let annotations = s.ok(
        "",
        &[
            "get",
            "clusters",
            "gondor",
            "-o",
            "jsonpath={.metadata.annotations}",
        ],
    );
    assert!(
        annotations.contains("\"pci-certified\":\"true\""),
        "{annotations}"
    );
    // Invalid clusters are refused with the field that is wrong.
    let bad = CLUSTER
        .replace("0.0.0.0/0", "not-a-cidr")
        .replace("gondor", "rohan");
    let file = s.file("bad-cluster.yaml", bad.as_bytes());
    let err = s.fails("1.31", &["create", "--validate=false", "-f", &file]);
    assert!(
        err.contains("spec.serverAddressByClientCIDRs[0].clientCIDR"),
        "{err}"
    );
}

fn watch_streams_changes(backend: Backend) {
    let s = Server::start(backend);
    let mut watch = std::process::Command::new(support::kubectl_binary(""))
        .arg(format!("--kubeconfig={}", s.kubeconfig.display()))
        .args([
            "get",
            "configmaps",
            "-w",
            "-o",
            "name",
            "--request-timeout=20s",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match lines.next() {
                Some(Ok(l)) => seen.push(l),
                _ => break,
            }
        }
        seen
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    s.ok(
        "1.31",
        &["create", "configmap", "first", "--from-literal=a=1"],
    );
    s.ok(
        "1.31",
        &["create", "configmap", "second", "--from-literal=a=2"],
    );
    let seen = reader.join().unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(seen, ["configmap/first", "configmap/second"]);
}

fn authentication(backend: Backend) {
    let s = Server::start(backend);
    for context in ["token", "basic", "cert"] {
        let out = s.ok("", &["--context", context, "get", "namespaces"]);
        assert!(out.contains("default"), "{context}: {out}");
    }
    for context in ["badtoken", "badpassword"] {
        let err = s.fails("", &["--context", context, "get", "namespaces"]);
        assert!(err.contains("Unauthorized"), "{context}: {err}");
    }
    // Without credentials kubectl would prompt for a password; curl asks plainly.
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--cacert"])
        .arg(s.pki.ca_file())
        .arg(format!("https://127.0.0.1:{}/api/v1/namespaces", s.port))
        .output()
        .expect("run curl");
    let out = String::from_utf8(out.stdout).unwrap();
    let (body, code) = out.rsplit_once('\n').unwrap();
    assert_eq!(code, "401", "{out}");
    let status: Value = serde_json::from_str(body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Unauthorized");
}

fn bad_input_is_refused_and_changes_nothing(backend: Backend) {
    let s = Server::start(backend);
    let path = "/api/v1/namespaces/default/configmaps";
    let raw = |name: &str, body: &[u8]| {
        let file = s.file(name, body);
        s.fails("", &["create", "--raw", path, "-f", &file])
    };
    let err = raw("malformed.json", b"{\"kind\": ");
    assert!(err.contains("BadRequest"), "{err}");
    let err = raw(
        "wrong-kind.json",
        br#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}"#,
    );
    assert!(err.contains("BadRequest") && err.contains("kind"), "{err}");
    let err = raw(
        "wrong-version.json",
        br#"{"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}}"#,
    );
    assert!(err.contains("BadRequest"), "{err}");
    let err = raw(
        "bad-name.json",
        br#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}}"#,
    );
    assert!(
        err.contains("Invalid") && err.contains("metadata.name"),
        "{err}"
    );
    let mut huge = br#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "huge"}, "data": {"a": ""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 4 << 20));
    huge.extend(b"\"}}");
    let err = raw("huge.json", &huge);
    assert!(err.contains("RequestEntityTooLarge"), "{err}");
    let err = s.fails("", &["get", "--raw", "/api/v1/nothings"]);
    assert!(err.contains("NotFound"), "{err}");

    // A stale resourceVersion loses with 409.
    s.ok("1.31", &["create", "configmap", "cm", "--from-literal=a=1"]);
    let current: Value =
        serde_json::from_str(&s.ok("", &["get", "cm", "cm", "-o", "json"])).unwrap();
    s.ok("", &["label", "cm", "cm", "changed=yes"]);
    let stale = s.file(
        "stale.json",
        serde_json::to_string(&current).unwrap().as_bytes(),
    );
    let err = s.fails(
        "",
        &["replace", "--raw", &format!("{path}/cm"), "-f", &stale],
    );
    assert!(
        err.contains("Conflict") && err.contains("modified"),
        "{err}"
    );
    // So does a patch carrying a stale resourceVersion.
    let stale_rv = current["metadata"]["resourceVersion"].as_str().unwrap();
    let patch = format!(r#"{{"metadata":{{"resourceVersion":"{stale_rv}"}},"data":{{"a":"9"}}}}"#);
    let err = s.fails("", &["patch", "cm", "cm", "--type=merge", "-p", &patch]);
    assert!(err.contains("Conflict"), "{err}");
    let err = s.fails("1.31", &["create", "configmap", "cm", "--from-literal=a=2"]);
    assert!(err.contains("already exists"), "{err}");

    // Nothing any failed request sent was stored.
    let names = s.ok("", &["get", "cm", "-o", "name"]);
    assert_eq!(names, "configmap/cm\n");
    let kept: Value = serde_json::from_str(&s.ok("", &["get", "cm", "cm", "-o", "json"])).unwrap();
    assert_eq!(kept["data"]["a"], "1");
    assert_eq!(kept["metadata"]["labels"]["changed"], "yes");
}

/// Typed objects as kubectl 1.32+ sends them, in protobuf, land as the same JSON objects.
fn protobuf_bodies_from_new_kubectl(backend: Backend) {
    let s = Server::start(backend);
    for (v, ns) in [("1.33", "a"), ("", "b"), ("1.31", "c")] {
        s.ok(v, &["create", "namespace", ns]);
        s.ok(
            v,
            &[
                "-n",
                ns,
                "create",
                "secret",
                "generic",
                "s",
                "--from-literal=pw=hunter2",
            ],
        );
        s.ok(
            v,
            &[
                "-n",
                ns,
                "create",
                "deployment",
                "web",
                "--image=nginx",
                "--replicas=3",
                "--port=80",
            ],
        );
        s.ok(
            v,
            &[
                "-n",
                ns,
                "create",
                "service",
                "clusterip",
                "web",
                "--tcp=80:8080",
            ],
        );
        s.ok(
            v,
            &[
                "-n",
                ns,
                "create",
                "job",
                "once",
                "--image=busybox",
                "--",
                "echo",
                "hi",
            ],
        );
        let secret: Value =
            serde_json::from_str(&s.ok("", &["-n", ns, "get", "secret", "s", "-o", "json"]))
                .unwrap();
        assert_eq!(secret["data"]["pw"], "aHVudGVyMg==", "kubectl {v}");
        assert_eq!(secret["type"], "Opaque", "kubectl {v}");
        // Go's protobuf writes an unset generation as 0; JSON never shows it.
        assert!(
            secret["metadata"].get("generation").is_none(),
            "kubectl {v}: {secret}"
        );
        let deploy: Value =
            serde_json::from_str(&s.ok("", &["-n", ns, "get", "deploy", "web", "-o", "json"]))
                .unwrap();
        assert_eq!(deploy["spec"]["replicas"], 3, "kubectl {v}");
        assert_eq!(
            deploy["spec"]["selector"]["matchLabels"]["app"], "web",
            "kubectl {v}"
        );
        assert_eq!(
            deploy["spec"]["template"]["spec"]["containers"][0]["image"], "nginx",
            "kubectl {v}"
        );
        assert_eq!(
            deploy["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], 80,
            "kubectl {v}"
        );
        let svc: Value =
            serde_json::from_str(&s.ok("", &["-n", ns, "get", "svc", "web", "-o", "json"]))
                .unwrap();
        assert_eq!(svc["spec"]["ports"][0]["port"], 80, "kubectl {v}");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080, "kubectl {v}");
        assert_eq!(svc["spec"]["type"], "ClusterIP", "kubectl {v}");
        let job: Value =
            serde_json::from_str(&s.ok("", &["-n", ns, "get", "job", "once", "-o", "json"]))
                .unwrap();
        assert_eq!(
            job["spec"]["template"]["spec"]["containers"][0]["command"],
            serde_json::json!(["echo", "hi"]),
            "kubectl {v}"
        );
    }
}

const GUIDE_RS_EXTENSIONS: &str = r#"apiVersion: extensions/v1beta1
kind: ReplicaSet
metadata:
  name: nginx-pci
  annotations:
    requires-pci: "true"
spec:
  replicas: 3
  template:
    metadata:
      labels:
        app: nginx-pci
    spec:
      containers:
      - image: nginx
        name: nginx-pci
"#;

const GUIDE_RS_APPS: &str = r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: nginx-apps
spec:
  replicas: 2
  selector:
    matchLabels:
      app: nginx-apps
  template:
    metadata:
      labels:
        app: nginx-apps
    spec:
      containers:
      - image: nginx
        name: nginx
"#;

const GUIDE_SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: nginx
  labels:
    run: nginx
spec:
  ports:
  - port: 80
    protocol: TCP
  selector:
    run: nginx
  type: LoadBalancer
"#;

/// The guide's manifests with `kubectl create -f`, validated (the server advertises field
/// validation in its OpenAPI documents), and `kubectl explain`.
fn guide_manifests_and_explain(backend: Backend) {
    let s = Server::start(backend);
    let ext = s.file("rs-ext.yaml", GUIDE_RS_EXTENSIONS.as_bytes());
    let apps = s.file("rs-apps.yaml", GUIDE_RS_APPS.as_bytes());
    let svc = s.file("svc.yaml", GUIDE_SERVICE.as_bytes());
    s.ok("", &["create", "-f", &ext]);
    s.ok("1.33", &["create", "-f", &apps]);
    s.ok("", &["create", "-f", &svc]);
    let annotations = s.ok(
        "",
        &[
            "get",
            "rs",
            "nginx-pci",
            "-o",
            "jsonpath={.metadata.annotations}",
        ],
    );
    assert_eq!(annotations, r#"{"requires-pci":"true"}"#);
    // One stored object, seen through both groups.
    let via_ext = s.ok(
        "",
        &[
            "get",
            "replicasets.v1beta1.extensions",
            "nginx-apps",
            "-o",
            "jsonpath={.apiVersion}",
        ],
    );
    assert_eq!(via_ext, "extensions/v1beta1");
    let words = |out: &str, line: usize| -> Vec<String> {
        out.lines()
            .nth(line)
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let svc = s.ok("", &["get", "services"]);
    assert_eq!(
        words(&svc, 0),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(
        words(&svc, 1)[..5],
        ["nginx", "LoadBalancer", "<none>", "<pending>", "80/TCP"]
    );
    let rs = s.ok("1.27", &["get", "replicasets"]);
    assert_eq!(
        words(&rs, 0),
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    );
    assert_eq!(words(&rs, 1)[..4], ["nginx-apps", "2", "0", "0"]);
    let wide = s.ok("", &["get", "services", "-o", "wide"]);
    assert_eq!(
        words(&wide, 0).last().map(String::as_str),
        Some("SELECTOR"),
        "{wide}"
    );
    assert_eq!(
        words(&wide, 1).last().map(String::as_str),
        Some("run=nginx"),
        "{wide}"
    );
    // Events list as kube-apiserver lists them.
    let event = s.file(
        "event.json",
        br#"{"apiVersion": "v1", "kind": "Event", "metadata": {"name": "nginx.1"},
            "involvedObject": {"kind": "Service", "name": "nginx"}, "reason": "Seen",
            "message": "hello", "type": "Normal", "source": {"component": "test"},
            "lastTimestamp": "2026-01-01T00:00:00Z", "count": 2}"#,
    );
    s.ok("", &["create", "-f", &event]);
    let events = s.ok("", &["get", "events"]);
    assert_eq!(
        words(&events, 0),
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{events}"
    );
    assert_eq!(
        words(&events, 1)[1..],
        ["Normal", "Seen", "service/nginx", "hello"]
    );
    let wide = s.ok("", &["get", "events", "-o", "wide"]);
    assert_eq!(
        words(&wide, 1).last().map(String::as_str),
        Some("nginx.1"),
        "{wide}"
    );
    let described = s.ok("", &["describe", "services", "nginx"]);
    assert!(
        described.contains("nginx") && described.contains("LoadBalancer"),
        "{described}"
    );
    let metrics = s.ok("", &["get", "--raw", "/metrics"]);
    assert!(
        metrics.contains(
            "apiserver_request_total{verb=\"POST\",resource=\"replicasets\",code=\"201\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        "apiserver_request_duration_seconds_bucket{verb=\"GET\",resource=\"replicasets\""
    ));
    let explained = s.ok("", &["explain", "clusters"]);
    assert!(
        explained.contains("KIND:") && explained.contains("Cluster"),
        "{explained}"
    );
    for v in ["1.27", "1.33"] {
        assert!(
            s.ok(v, &["explain", "configmaps.metadata"])
                .contains("labels")
        );
    }
}

/// spec §6: the `orphan` finalizer follows the propagation policy of each delete, and an
/// object held by finalizers is marked deleted until they are removed.
fn deletion_follows_propagation_policy(backend: Backend) {
    let s = Server::start(backend);
    let held = |name: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {{"name": "{name}", "finalizers": ["federation.kubernetes.io/delete-from-underlying-clusters", "orphan"]}}}}"#
        )
    };
    let finalizers = |name: &str| {
        s.ok(
            "",
            &["get", "cm", name, "-o", "jsonpath={.metadata.finalizers}"],
        )
    };
    for (name, cascade, keeps_orphan) in [
        ("orphaned", "orphan", true),
        ("background", "background", false),
        ("foreground", "foreground", false),
    ] {
        let file = s.file(&format!("{name}.json"), held(name).as_bytes());
        s.ok("", &["create", "-f", &file]);
        s.ok(
            "",
            &[
                "delete",
                "cm",
                name,
                &format!("--cascade={cascade}"),
                "--wait=false",
            ],
        );
        let deleting = s.ok(
            "",
            &[
                "get",
                "cm",
                name,
                "-o",
                "jsonpath={.metadata.deletionTimestamp}",
            ],
        );
        assert!(!deleting.is_empty(), "{name} is marked deleted");
        assert_eq!(
            finalizers(name).contains("\"orphan\""),
            keeps_orphan,
            "{name}: {}",
            finalizers(name)
        );
        // Writes still work while finalizers hold it; removing the last one deletes it.
        s.ok(
            "",
            &[
                "patch",
                "cm",
                name,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ],
        );
        let err = s.fails("", &["get", "cm", name]);
        assert!(err.contains("NotFound"), "{name}: {err}");
    }
    // A plain object goes at once, whatever the policy: nothing collects orphans here.
    s.ok(
        "1.31",
        &["create", "configmap", "plain", "--from-literal=a=b"],
    );
    s.ok("", &["delete", "cm", "plain", "--cascade=orphan"]);
    assert!(s.fails("", &["get", "cm", "plain"]).contains("NotFound"));
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1
        env: [{name: A, value: "1"}]
      - name: side
        image: busybox
"#;

/// Client-side apply, strategic merge patches (`set image`, `patch`), merge and JSON
/// patches, and `scale` through the scale subresource, from old and new kubectl.
fn apply_patch_and_scale(backend: Backend) {
    let s = Server::start(backend);
    let file = s.file("deploy.yaml", DEPLOYMENT.as_bytes());
    s.ok("", &["apply", "-f", &file]);
    let changed = DEPLOYMENT
        .replace("nginx:1", "nginx:2")
        .replace("replicas: 2", "replicas: 3");
    let file = s.file("deploy.yaml", changed.as_bytes());
    // kubectl 1.27 computes its client-side patch from the protobuf OpenAPI v2 document.
    assert!(s.ok("1.27", &["apply", "-f", &file]).contains("configured"));
    let changed = changed.replace("replicas: 3", "replicas: 4");
    let file = s.file("deploy.yaml", changed.as_bytes());
    assert!(s.ok("1.33", &["apply", "-f", &file]).contains("configured"));
    let get = |path: &str| s.jsonpath("deployment", "web", path);
    assert_eq!(get("{.spec.replicas}"), "4");
    assert_eq!(
        get("{.spec.template.spec.containers[*].image}"),
        "nginx:2 busybox"
    );
    assert_eq!(
        get("{.metadata.generation}"),
        "3",
        "each spec change bumps the generation"
    );
    s.ok(
        "1.27",
        &["set", "image", "deployment/web", "side=busybox:2"],
    );
    assert_eq!(
        get("{.spec.template.spec.containers[*].image}"),
        "nginx:2 busybox:2"
    );
    // A strategic patch merges the env list of the container named web.
    s.ok("", &["patch", "deployment", "web", "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"B","value":"2"}]}]}}}}"#]);
    assert_eq!(
        get("{.spec.template.spec.containers[0].env[*].name}"),
        "A B"
    );
    s.ok("", &["patch", "deployment", "web", "--type=json", "-p",
        r#"[{"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "busybox:3"}]"#]);
    assert_eq!(
        get("{.spec.template.spec.containers[1].image}"),
        "busybox:3"
    );
    let err = s.fails(
        "",
        &[
            "patch",
            "deployment",
            "web",
            "--type=json",
            "-p",
            r#"[{"op": "test", "path": "/spec/replicas", "value": 99}]"#,
        ],
    );
    assert!(err.contains("Invalid") || err.contains("failed"), "{err}");
    for (v, n) in [("", "3"), ("1.27", "5"), ("1.33", "0")] {
        s.ok(
            v,
            &["scale", "deployment", "web", &format!("--replicas={n}")],
        );
        assert_eq!(get("{.spec.replicas}"), n, "kubectl {v} scale");
    }
    let scale: Value = serde_json::from_str(&s.ok(
        "",
        &[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
        ],
    ))
    .unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["status"]["selector"], "app=web");
}

/// `--profiling` (on by default): a CPU profile, pprof-encoded, for authenticated clients
/// (`kubectl get --raw`), one at a time.
#[test]
fn a_cpu_profile_for_authenticated_clients() {
    let s = Server::start(Backend::Embedded);
    let out = s.kubectl("", &["get", "--raw", "/debug/pprof/profile?seconds=1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A pprof profile's string table names its sample types.
    let has = |text: &[u8]| out.stdout.windows(text.len()).any(|w| w == text);
    assert!(has(b"cpu") && has(b"nanoseconds"), "not a CPU profile");
    let err = s.fails("", &["get", "--raw", "/debug/pprof/profile?seconds=0"]);
    assert!(err.contains("a whole number from 1 to 600"), "{err}");
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(s.pki.ca_file())
        .arg(format!(
            "https://127.0.0.1:{}/debug/pprof/profile?seconds=1",
            s.port
        ))
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
}

/// Bad flags stop the server at start with one clear line and a non-zero exit.
#[test]
fn bad_flags_are_one_clear_error() {
    for (args, expected) in [
        (vec!["--no-such-flag"], "--no-such-flag"),
        (
            vec!["--enable-admission-plugins=Nope"],
            "unknown admission plugin \"Nope\"",
        ),
        (vec!["--authorization-mode=RBAC"], "RBAC"),
        (vec!["--event-ttl=0s"], "must be positive"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_federation-apiserver"))
            .args(&args)
            .arg(format!("--cert-dir={}", dir.path().join("certs").display()))
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg("--secure-port=1")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(
            !dir.path().join("data").exists(),
            "{args:?} created the store"
        );
    }
}

/// Server-side apply: creates, re-applies, owns fields in managedFields, conflicts with
/// another manager's change unless forced, and drops fields left out of the configuration.
fn server_side_apply(backend: Backend) {
    let s = Server::start(backend);
    let file = s.file("deploy.yaml", DEPLOYMENT.as_bytes());
    // kubectl 1.27 and 1.28 read OpenAPI v2 in its protobuf form.
    for v in ["", "1.27", "1.28", "1.31", "1.33"] {
        assert!(
            s.ok(v, &["apply", "--server-side", "-f", &file])
                .contains("serverside-applied")
        );
    }
    let get = |path: &str| s.jsonpath("deployment", "web", path);
    assert!(get("{.metadata.managedFields[*].manager}").contains("kubectl"));
    assert!(get("{.metadata.managedFields[*].operation}").contains("Apply"));
    s.ok("", &["scale", "deployment", "web", "--replicas=5"]);
    let changed = DEPLOYMENT.replace("nginx:1", "nginx:2");
    let file = s.file("deploy.yaml", changed.as_bytes());
    let err = s.fails("", &["apply", "--server-side", "-f", &file]);
    assert!(
        err.contains("conflict") && err.contains(".spec.replicas"),
        "{err}"
    );
    assert_eq!(
        get("{.spec.replicas}"),
        "5",
        "a refused apply changes nothing"
    );
    s.ok(
        "",
        &["apply", "--server-side", "--force-conflicts", "-f", &file],
    );
    assert_eq!(get("{.spec.replicas}"), "2");
    assert_eq!(get("{.spec.template.spec.containers[0].image}"), "nginx:2");
    // The side container leaves the configuration: it leaves the object.
    let smaller = changed.replace("      - name: side\n        image: busybox\n", "");
    let file = s.file("deploy.yaml", smaller.as_bytes());
    s.ok("", &["apply", "--server-side", "-f", &file]);
    assert_eq!(get("{.spec.template.spec.containers[*].name}"), "web");
}

const INGRESS_EXTENSIONS: &str = r#"
apiVersion: extensions/v1beta1
kind: Ingress
metadata:
  name: nginx
spec:
  backend:
    serviceName: nginx
    servicePort: 80
  rules:
  - host: nginx.example.com
    http:
      paths:
      - path: /
        backend:
          serviceName: nginx
          servicePort: http
"#;

const HPA_V1: &str = r#"
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata:
  name: nginx
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: nginx}
  minReplicas: 1
  maxReplicas: 5
  targetCPUUtilizationPercentage: 60
"#;

const DEPLOYMENT_WITH_TYPO: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: typo
spec:
  replicass: 2
  selector: {matchLabels: {app: typo}}
  template:
    metadata: {labels: {app: typo}}
    spec:
      containers:
      - name: nginx
        image: nginx
        imagePullPolicyy: Always
"#;

/// One object seen through each version of its resource, converted both ways; fields a kind
/// does not have refused under kubectl's default strict validation, warned about or dropped
/// otherwise; schemas deep enough for `explain`; aggregated discovery.
fn versions_convert_and_fields_validate(backend: Backend) {
    let s = Server::start(backend);
    s.ok(
        "",
        &[
            "create",
            "-f",
            &s.file("ing.yaml", INGRESS_EXTENSIONS.as_bytes()),
        ],
    );
    let v1 = |path: &str| s.jsonpath("ingresses.v1.networking.k8s.io", "nginx", path);
    assert_eq!(v1("{.spec.defaultBackend.service.name}"), "nginx");
    assert_eq!(v1("{.spec.defaultBackend.service.port.number}"), "80");
    assert_eq!(
        v1("{.spec.rules[0].http.paths[0].backend.service.port.name}"),
        "http"
    );
    assert_eq!(
        v1("{.spec.rules[0].http.paths[0].pathType}"),
        "ImplementationSpecific"
    );
    let old = |path: &str| s.jsonpath("ingresses.v1beta1.extensions", "nginx", path);
    assert_eq!(old("{.spec.backend.serviceName}"), "nginx");
    assert_eq!(
        old("{.spec.rules[0].http.paths[0].backend.servicePort}"),
        "http"
    );

    s.ok(
        "",
        &["create", "-f", &s.file("hpa.yaml", HPA_V1.as_bytes())],
    );
    let hpa_v2 = "horizontalpodautoscalers.v2.autoscaling";
    assert_eq!(
        s.jsonpath(
            hpa_v2,
            "nginx",
            "{.spec.metrics[0].resource.target.averageUtilization}"
        ),
        "60"
    );
    s.ok(
        "",
        &[
            "patch",
            "horizontalpodautoscalers.v1.autoscaling",
            "nginx",
            "--type=merge",
            "-p",
            r#"{"spec":{"targetCPUUtilizationPercentage":75}}"#,
        ],
    );
    assert_eq!(
        s.jsonpath(
            hpa_v2,
            "nginx",
            "{.spec.metrics[0].resource.target.averageUtilization}"
        ),
        "75"
    );

    // kubectl validates strictly by default: the server refuses, and nothing is stored.
    let typo = s.file("typo.yaml", DEPLOYMENT_WITH_TYPO.as_bytes());
    for v in ["", "1.27", "1.33"] {
        let refused = s.fails(v, &["create", "-f", &typo]);
        assert!(
            refused.contains(r#"unknown field "spec.replicass""#)
                && refused.contains(
                    r#"unknown field "spec.template.spec.containers[0].imagePullPolicyy""#
                ),
            "kubectl {v}: {refused}"
        );
    }
    s.fails("", &["get", "deployment", "typo"]);
    let warned = s.kubectl("", &["create", "-f", &typo, "--validate=warn"]);
    assert!(warned.status.success());
    assert!(
        String::from_utf8_lossy(&warned.stderr).contains(r#"unknown field "spec.replicass""#),
        "{warned:?}"
    );
    let stored: Value =
        serde_json::from_str(&s.ok("", &["get", "deployment", "typo", "-o", "json"])).unwrap();
    assert!(stored["spec"].get("replicass").is_none(), "{stored}");
    assert_eq!(
        stored["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx"
    );

    let explained = s.ok(
        "",
        &["explain", "deployments.spec.template.spec.containers.image"],
    );
    assert!(explained.contains("Container image name"), "{explained}");
    let explained = s.ok(
        "1.33",
        &["explain", "clusters.spec.serverAddressByClientCIDRs"],
    );
    assert!(explained.contains("clientCIDR"), "{explained}");

    // kubectl 1.33 reads aggregated discovery; 1.27 the per-group documents.
    for v in ["1.33", "1.27"] {
        let resources = s.ok(v, &["api-resources"]);
        for line in [
            "clusters",
            "federation/v1beta1",
            "ingresses",
            "horizontalpodautoscalers",
        ] {
            assert!(resources.contains(line), "kubectl {v}: {resources}");
        }
    }
}
