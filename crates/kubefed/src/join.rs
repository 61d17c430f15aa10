//! `kubefed join` (spec §3.1). Better than the original: the ClusterRole grants what
//! propagation and health checks need rather than everything, and the token Secret is
//! created explicitly, so the join works against clusters that no longer make one for each
//! service account (Kubernetes 1.24+) as well as those that do.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use fellowship_apimachinery::validation::{NameRule, name_errors};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::api::{DeleteParams, DynamicObject, ObjectMeta, PostParams};
use kube::{Api, Client};
use rand::Rng as _;
use serde_json::json;

use crate::contexts::Contexts;
use crate::{CLUSTER_NAME, CLUSTER_ROLE_NAME, FEDERATION_NAME, SERVICE_ACCOUNT_NAME};

pub struct JoinOptions {
    pub cluster: String,
    pub host_context: String,
    /// The joining cluster's context; the cluster's name when empty.
    pub cluster_context: String,
    /// The federation API's context; the current one when empty.
    pub federation_context: String,
    pub namespace: String,
    pub secret_name: Option<String>,
    /// Store this kubeconfig's context as the credentials instead of a service account's
    /// token (no RBAC objects are created).
    pub credentials_kubeconfig: Option<PathBuf>,
}

/// What the federation's control plane records about itself in the host cluster (kubefed
/// init's controller-manager Deployment): its name and its DNS `federations` entry.
pub struct Federation {
    pub name: String,
    pub federations: Option<String>,
    /// With the CoreDNS provider: the kube-dns `stubDomains` entry sending the zone to
    /// the federation's CoreDNS (`{"zone": ["ip:port"]}`, spec §3.1 step 6).
    pub stub_domains: Option<String>,
}

/// Creates, tolerating that it exists already.
/// Creates `object` unless it exists; whether this made it.
async fn create<K>(api: &Api<K>, object: &K) -> anyhow::Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What a join made, and the delete that removes it again should the join fail (run only
/// then): a join either completes or leaves nothing that would stop it from being tried
/// again.
type Undo = (
    String,
    Pin<Box<dyn Future<Output = kube::Result<()>> + Send>>,
);

fn undo<K>(what: String, api: &Api<K>, name: &str) -> Undo
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let (api, name) = (api.clone(), name.to_string());
    let delete = async move {
        api.delete(&name, &DeleteParams::default())
            .await
            .map(|_| ())
    };
    (what, Box::pin(delete))
}

/// Why `name` cannot be what a join names `what`, if it cannot.
fn check_name(what: &str, name: &str, rule: NameRule) -> anyhow::Result<()> {
    let errors = name_errors(rule, name);
    if errors.is_empty() {
        return Ok(());
    }
    bail!("{what} {name:?} is not a valid name: {}", errors.join("; "))
}

fn annotated(
    name: &str,
    namespace: Option<&str>,
    annotations: &BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(String::from),
        annotations: Some(annotations.clone()),
        ..Default::default()
    }
}

/// The federation's name and DNS entry, from the controller-manager Deployment in the
/// host cluster's federation namespace.
pub async fn federation(
    host: &Client,
    namespace: &str,
    host_context: &str,
) -> anyhow::Result<Federation> {
    let deployments: Api<Deployment> = Api::namespaced(host.clone(), namespace);
    let list = deployments.list(&Default::default()).await?;
    let manager = list
        .items
        .iter()
        .find(|d| d.metadata.name.as_deref().is_some_and(|n| n.ends_with("controller-manager")))
        .ok_or_else(|| anyhow!("no federation control plane in {host_context}: no controller-manager Deployment in namespace {namespace}"))?;
    let annotations = manager.metadata.annotations.clone().unwrap_or_default();
    let name = annotations
        .get(FEDERATION_NAME)
        .cloned()
        .ok_or_else(|| anyhow!("the controller-manager Deployment in {host_context} lacks the {FEDERATION_NAME} annotation"))?;
    let stub_domains = match (
        annotations.get("dns-provider").map(String::as_str),
        annotations.get("dns-zone-name"),
        annotations.get("nameserver"),
    ) {
        (Some("coredns"), Some(zone), Some(server)) => {
            Some(serde_json::to_string(&json!({ zone: [server] }))?)
        }
        _ => None,
    };
    Ok(Federation {
        name,
        federations: annotations.get("federations").cloned(),
        stub_domains,
    })
}

fn secret_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// What the federation's controllers need in a member: the federated types, the nodes'
/// zones, Pods that cannot be scheduled, and `/healthz`.
fn rules() -> Vec<PolicyRule> {
    let all = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    vec![
        rule(
            &[""],
            &["configmaps", "secrets", "namespaces", "services"],
            &all,
        ),
        rule(
            &["apps"],
            &["daemonsets", "deployments", "replicasets"],
            &all,
        ),
        rule(&["batch"], &["jobs"], &all),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], &all),
        rule(&["networking.k8s.io"], &["ingresses"], &all),
        rule(&[""], &["nodes", "pods"], &["get", "list", "watch"]),
        PolicyRule {
            non_resource_urls: Some(vec!["/healthz".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        },
    ]
}

pub async fn join(
    contexts: &Contexts,
    o: &JoinOptions,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let host_context = contexts.resolve(&o.host_context)?;
    let cluster_context = contexts.resolve(if o.cluster_context.is_empty() {
        &o.cluster
    } else {
        &o.cluster_context
    })?;
    let federation_context = contexts.resolve(&o.federation_context)?;
    let n = o.namespace.as_str();
    let joining = contexts.client(&cluster_context).await?;
    let host = contexts.client(&host_context).await?;
    let federation_client = contexts.client(&federation_context).await?;
    let server = contexts.server(&cluster_context)?;
    let account = format!("{}-{host_context}", o.cluster);

    // Preflight, before anything is created.
    check_name("cluster", &o.cluster, NameRule::Dns1035Label)?;
    if o.credentials_kubeconfig.is_none() {
        check_name("service account", &account, NameRule::Dns1123Subdomain)?;
    }
    if let Some(name) = &o.secret_name {
        check_name("secret", name, NameRule::Dns1123Subdomain)?;
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(joining.clone(), n);
    if o.credentials_kubeconfig.is_none() && accounts.get_opt(&account).await?.is_some() {
        bail!("service account already exists in joining cluster: {n}/{account}");
    }
    let clusters: Api<DynamicObject> = Api::all_with(
        federation_client,
        &fellowship_controllers::cluster::cluster_resource(),
    );
    if clusters.get_opt(&o.cluster).await?.is_some() {
        bail!(
            "cluster {:?} is already joined to the federation",
            o.cluster
        );
    }
    let fed = federation(&host, n, &host_context).await?;
    let annotations = BTreeMap::from([
        (FEDERATION_NAME.to_string(), fed.name.clone()),
        (CLUSTER_NAME.to_string(), o.cluster.clone()),
    ]);

    let mut made: Vec<Undo> = Vec::new();
    let joined: anyhow::Result<()> = async {
        writeln!(out, "Creating namespace {n:?} in {cluster_context}")?;
        let namespaces: Api<Namespace> = Api::all(joining.clone());
        create(
            &namespaces,
            &Namespace {
                metadata: annotated(n, None, &annotations),
                ..Default::default()
            },
        )
        .await?;
        let host_namespaces: Api<Namespace> = Api::all(host.clone());
        create(
            &host_namespaces,
            &Namespace {
                metadata: annotated(n, None, &BTreeMap::new()),
                ..Default::default()
            },
        )
        .await?;

        let secret_name = o
            .secret_name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", o.cluster, secret_suffix()));
        let mut cluster_annotations = BTreeMap::new();
        let data = match &o.credentials_kubeconfig {
            Some(path) => {
                writeln!(
                    out,
                    "Storing the credentials of context {cluster_context} from {}",
                    path.display()
                )?;
                let credentials = Contexts::load(Some(path))?;
                let kubeconfig = credentials.flattened(&cluster_context)?;
                BTreeMap::from([(
                    "kubeconfig".to_string(),
                    ByteString(kubeconfig.into_bytes()),
                )])
            }
            None => {
                let role = format!(
                    "federation-controller-manager:{}-{}-{host_context}",
                    fed.name, o.cluster
                );
                writeln!(
                    out,
                    "Creating service account {n}/{account} and cluster role {role} in {cluster_context}"
                )?;
                if create(
                    &accounts,
                    &ServiceAccount {
                        metadata: annotated(&account, Some(n), &annotations),
                        ..Default::default()
                    },
                )
                .await?
                {
                    made.push(undo(format!("service account {account}"), &accounts, &account));
                }
                let roles: Api<ClusterRole> = Api::all(joining.clone());
                if create(
                    &roles,
                    &ClusterRole {
                        metadata: annotated(&role, None, &annotations),
                        rules: Some(rules()),
                        ..Default::default()
                    },
                )
                .await?
                {
                    made.push(undo(format!("cluster role {role}"), &roles, &role));
                }
                let bindings: Api<ClusterRoleBinding> = Api::all(joining.clone());
                let binding = ClusterRoleBinding {
                    metadata: annotated(&role, None, &annotations),
                    role_ref: RoleRef {
                        api_group: "rbac.authorization.k8s.io".into(),
                        kind: "ClusterRole".into(),
                        name: role.clone(),
                    },
                    subjects: Some(vec![Subject {
                        kind: "ServiceAccount".into(),
                        name: account.clone(),
                        namespace: Some(n.into()),
                        ..Default::default()
                    }]),
                };
                if create(&bindings, &binding).await? {
                    made.push(undo(format!("cluster role binding {role}"), &bindings, &role));
                }
                cluster_annotations.insert(SERVICE_ACCOUNT_NAME.to_string(), account.clone());
                cluster_annotations.insert(CLUSTER_ROLE_NAME.to_string(), role);
                writeln!(out, "Waiting for the service account's token")?;
                token(&joining, n, &account).await?
            }
        };
        writeln!(
            out,
            "Storing the credentials in {host_context} as secret {n}/{secret_name}"
        )?;
        let host_secrets: Api<Secret> = Api::namespaced(host.clone(), n);
        host_secrets
            .create(
                &PostParams::default(),
                &Secret {
                    metadata: annotated(&secret_name, Some(n), &annotations),
                    data: Some(data),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("creating secret {n}/{secret_name} in {host_context}"))?;
        made.push(undo(format!("secret {secret_name}"), &host_secrets, &secret_name));

        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "federation/v1beta1", "kind": "Cluster",
            "metadata": {"name": o.cluster, "annotations": cluster_annotations},
            "spec": {
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
                "secretRef": {"name": secret_name},
            },
        }))?;
        clusters
            .create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("creating cluster {:?} in the federation", o.cluster))?;
        made.push(undo(format!("cluster {:?}", o.cluster), &clusters, &o.cluster));

        if let Some(entry) = &fed.federations {
            writeln!(
                out,
                "Adding {entry} to kube-system/kube-dns in {cluster_context}"
            )?;
            kube_dns(&joining, &annotations, entry, fed.stub_domains.as_deref()).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = joined {
        for (what, delete) in made.into_iter().rev() {
            match delete.await {
                Ok(()) => writeln!(out, "Removed {what} again")?,
                Err(u) => writeln!(out, "Could not remove {what}: {u}")?,
            }
        }
        return Err(e);
    }
    writeln!(out, "cluster {:?} created", o.cluster)?;
    Ok(())
}

/// The service account's token and CA: a token Secret created for it, once the cluster's
/// token controller has filled it in.
async fn token(
    joining: &Client,
    namespace: &str,
    account: &str,
) -> anyhow::Result<BTreeMap<String, ByteString>> {
    let secrets: Api<Secret> = Api::namespaced(joining.clone(), namespace);
    let secret = Secret {
        metadata: ObjectMeta {
            generate_name: Some(format!("{account}-token-")),
            namespace: Some(namespace.into()),
            annotations: Some(BTreeMap::from([(
                "kubernetes.io/service-account.name".to_string(),
                account.to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/service-account-token".into()),
        ..Default::default()
    };
    let created = secrets.create(&PostParams::default(), &secret).await?;
    let name = created.metadata.name.unwrap_or_default();
    for _ in 0..30 {
        if let Some(s) = secrets.get_opt(&name).await?
            && let Some(data) = s.data
            && data.contains_key("token")
            && data.contains_key("ca.crt")
        {
            return Ok(data
                .into_iter()
                .filter(|(k, _)| matches!(k.as_str(), "token" | "ca.crt" | "namespace"))
                .collect());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!("the token of service account {namespace}/{account} did not appear within 30 s")
}

/// Adds `entry` (`FED=zone`) to `data.federations` of kube-system/kube-dns, and sets its
/// `stubDomains` when the federation has them.
async fn kube_dns(
    joining: &Client,
    annotations: &BTreeMap<String, String>,
    entry: &str,
    stub_domains: Option<&str>,
) -> anyhow::Result<()> {
    let maps: Api<ConfigMap> = Api::namespaced(joining.clone(), "kube-system");
    let existing = maps.get_opt("kube-dns").await?;
    let exists = existing.is_some();
    let mut map = existing.unwrap_or_else(|| ConfigMap {
        metadata: annotated("kube-dns", Some("kube-system"), annotations),
        ..Default::default()
    });
    let data = map.data.get_or_insert_with(Default::default);
    let current = data.get("federations").cloned().unwrap_or_default();
    if !current.split(',').any(|e| e == entry) {
        let next = if current.is_empty() {
            entry.to_string()
        } else {
            format!("{current},{entry}")
        };
        data.insert("federations".into(), next);
    }
    if let Some(stubs) = stub_domains {
        data.insert("stubDomains".into(), stubs.to_string());
    }
    if exists {
        maps.replace("kube-dns", &PostParams::default(), &map)
            .await?;
    } else {
        maps.create(&PostParams::default(), &map).await?;
    }
    Ok(())
}
