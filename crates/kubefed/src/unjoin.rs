//! `kubefed unjoin` (spec §3.2): the Cluster, its credentials in the host cluster, the
//! kube-dns entry and the RBAC objects the join made go; it says what it leaves behind.

use std::io::Write;

use anyhow::Context;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use std::collections::{BTreeMap, BTreeSet};

use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;

use fellowship_controllers::copies::is_managed;

use crate::contexts::Contexts;
use crate::{CLUSTER_ROLE_NAME, SERVICE_ACCOUNT_NAME};

pub struct UnjoinOptions {
    pub cluster: String,
    pub host_context: String,
    pub cluster_context: String,
    pub federation_context: String,
    pub namespace: String,
    /// Also delete from the cluster what the federation propagated to it.
    pub remove_propagated: bool,
}

/// Deletes, a missing object being no error; other errors are warnings.
async fn remove<K>(api: &Api<K>, name: &str, what: &str, out: &mut impl Write) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => writeln!(out, "Deleted {what}")?,
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => {}
        Err(e) => writeln!(out, "warning: could not delete {what}: {e}")?,
    }
    Ok(())
}

pub async fn unjoin(
    contexts: &Contexts,
    o: &UnjoinOptions,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let host_context = contexts.resolve(&o.host_context)?;
    let federation_context = contexts.resolve(&o.federation_context)?;
    let n = o.namespace.as_str();
    let federation_client = contexts.client(&federation_context).await?;
    let clusters: Api<DynamicObject> = Api::all_with(
        federation_client,
        &fellowship_controllers::cluster::cluster_resource(),
    );
    let Some(cluster) = clusters.get_opt(&o.cluster).await? else {
        writeln!(
            out,
            "warning: cluster {:?} is not in the federation",
            o.cluster
        )?;
        return Ok(());
    };
    let cluster = serde_json::to_value(&cluster)?;
    let annotation = |key: &str| {
        cluster
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .map(String::from)
    };

    let host = contexts.client(&host_context).await?;
    let federation_name = crate::join::federation(&host, n, &host_context)
        .await
        .map(|f| f.name)
        .ok();
    let host_secrets: Api<Secret> = Api::namespaced(host, n);
    let secret = match cluster
        .pointer("/spec/secretRef/name")
        .and_then(Value::as_str)
    {
        Some(name) => host_secrets.get_opt(name).await?,
        None => None,
    };
    // The member: from its context, else from the credentials the federation held.
    let context = contexts.resolve(if o.cluster_context.is_empty() {
        &o.cluster
    } else {
        &o.cluster_context
    });
    let member: anyhow::Result<Client> = match context {
        Ok(c) => contexts.client(&c).await,
        Err(e) => match fellowship_controllers::members::client(&cluster, secret.as_ref()).await {
            Ok(c) => Ok(c),
            Err(_) => Err(e),
        },
    };
    // Everything it needs is at hand: from here on, a step that fails is reported and the
    // others still run, and it says what it leaves.
    clusters
        .delete(&o.cluster, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting cluster {:?}", o.cluster))?;
    writeln!(out, "Deleted cluster {:?} from the federation", o.cluster)?;
    if let Some(s) = &secret {
        let name = s.metadata.name.clone().unwrap_or_default();
        remove(
            &host_secrets,
            &name,
            &format!("secret {n}/{name} in {host_context}"),
            out,
        )
        .await?;
    }
    let member = match member {
        Ok(m) => m,
        Err(e) => {
            writeln!(
                out,
                "warning: the cluster is not reachable ({e:#}); left in it: the kube-dns entry, the RBAC objects and namespace {n}"
            )?;
            return removed(&o.cluster, out);
        }
    };
    // kube-dns: this federation's entry and the stub domains go.
    let maps: Api<ConfigMap> = Api::namespaced(member.clone(), "kube-system");
    let kube_dns = maps.get_opt("kube-dns").await.unwrap_or_else(|e| {
        let _ = writeln!(out, "warning: could not read kube-system/kube-dns: {e}");
        None
    });
    if let Some(mut map) = kube_dns {
        let data = map.data.get_or_insert_with(Default::default);
        if let (Some(list), Some(fed)) = (data.get("federations").cloned(), &federation_name) {
            let kept: Vec<&str> = list
                .split(',')
                .filter(|e| !e.starts_with(&format!("{fed}=")))
                .collect();
            data.insert("federations".into(), kept.join(","));
        }
        data.remove("stubDomains");
        match maps.replace("kube-dns", &PostParams::default(), &map).await {
            Ok(_) => writeln!(out, "Removed the federation from kube-system/kube-dns")?,
            Err(e) => writeln!(out, "warning: could not update kube-system/kube-dns: {e}")?,
        }
    }
    // Before the RBAC objects go: the member's client may be the federation's own account.
    let left = match propagated(&member).await {
        Ok(copies) if o.remove_propagated => {
            let handled = remove_propagated(&member, copies, out).await?;
            // A controller manager that had not yet seen the Cluster go may have put some
            // back.
            match propagated(&member).await.map(|now| {
                now.into_iter()
                    .filter(|c| !handled.contains(&c.uid))
                    .count()
            }) {
                Ok(0) => format!("namespace {n}"),
                Ok(back) => format!(
                    "namespace {n} and {back} objects the federation propagated, put back while they were removed"
                ),
                Err(e) => {
                    format!("namespace {n}, and perhaps objects the federation propagated ({e:#})")
                }
            }
        }
        Ok(copies) => format!(
            "namespace {n} and {} objects the federation propagated (--remove-propagated removes them)",
            copies.len()
        ),
        Err(e) => format!(
            "namespace {n} and the objects the federation propagated, which could not be listed ({e:#})"
        ),
    };
    if let Some(account) = annotation(SERVICE_ACCOUNT_NAME) {
        let accounts: Api<ServiceAccount> = Api::namespaced(member.clone(), n);
        remove(
            &accounts,
            &account,
            &format!("service account {n}/{account}"),
            out,
        )
        .await?;
    }
    if let Some(role) = annotation(CLUSTER_ROLE_NAME) {
        let bindings: Api<ClusterRoleBinding> = Api::all(member.clone());
        remove(
            &bindings,
            &role,
            &format!("cluster role binding {role}"),
            out,
        )
        .await?;
        let roles: Api<ClusterRole> = Api::all(member);
        remove(&roles, &role, &format!("cluster role {role}"), out).await?;
    }
    writeln!(out, "Left in the cluster: {left}")?;
    removed(&o.cluster, out)
}

/// An object the federation created in a member.
struct Copy {
    ar: ApiResource,
    namespaced: bool,
    namespace: String,
    name: String,
    uid: String,
}

/// The objects in a member that the federation created there (they carry its marker).
async fn propagated(member: &Client) -> anyhow::Result<Vec<Copy>> {
    let mut out = Vec::new();
    for (ar, namespaced) in fellowship_controllers::federatedtypes::resources() {
        let list = match Api::<DynamicObject>::all_with(member.clone(), &ar)
            .list(&ListParams::default())
            .await
        {
            // A type this cluster does not serve holds nothing of the federation's.
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            r => r.with_context(|| format!("listing {} in the cluster", ar.plural))?,
        };
        for o in list.items {
            if is_managed(&o.metadata) {
                out.push(Copy {
                    ar: ar.clone(),
                    namespaced,
                    namespace: o.metadata.namespace.clone().unwrap_or_default(),
                    name: o.metadata.name.clone().unwrap_or_default(),
                    uid: o.metadata.uid.clone().unwrap_or_default(),
                });
            }
        }
    }
    Ok(out)
}

/// Deletes the propagated objects, namespaced ones first; a namespace the federation made
/// goes only when nothing else of the federated types is left in it. A controller manager
/// that had not yet seen the Cluster go may put a copy back: a few passes settle it. The
/// uids of the copies it deleted or kept.
async fn remove_propagated(
    member: &Client,
    mut copies: Vec<Copy>,
    out: &mut impl Write,
) -> anyhow::Result<BTreeSet<String>> {
    let mut removed: BTreeMap<String, usize> = BTreeMap::new();
    // By uid: a copy put back is a new object; one still terminating is done with.
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut kept: BTreeSet<String> = BTreeSet::new();
    for pass in 0..3 {
        copies.sort_by_key(|c| !c.namespaced);
        for c in &copies {
            if !c.namespaced {
                // A namespace that cannot be looked into is kept.
                let why = match holds_foreign(member, &c.name).await {
                    Ok(false) => None,
                    Ok(true) => Some("it holds objects the federation did not create".to_string()),
                    Err(e) => Some(format!("could not look into it ({e:#})")),
                };
                if let Some(why) = why {
                    kept.insert(c.uid.clone());
                    writeln!(out, "Kept namespace {}: {why}", c.name)?;
                    continue;
                }
            }
            let api = if c.namespaced {
                Api::<DynamicObject>::namespaced_with(member.clone(), &c.namespace, &c.ar)
            } else {
                Api::<DynamicObject>::all_with(member.clone(), &c.ar)
            };
            match api.delete(&c.name, &DeleteParams::background()).await {
                Ok(_) => *removed.entry(c.ar.plural.clone()).or_default() += 1,
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => writeln!(
                    out,
                    "warning: could not delete {} {}: {e}",
                    c.ar.plural, c.name
                )?,
            }
            done.insert(c.uid.clone());
        }
        if pass == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let Ok(now) = propagated(member).await else {
            break;
        };
        copies = now
            .into_iter()
            .filter(|c| !done.contains(&c.uid) && !kept.contains(&c.uid))
            .collect();
        if copies.is_empty() {
            break;
        }
    }
    let summary: Vec<String> = removed.iter().map(|(k, n)| format!("{n} {k}")).collect();
    writeln!(
        out,
        "Removed what the federation propagated: {}",
        if summary.is_empty() {
            "nothing".to_string()
        } else {
            summary.join(", ")
        }
    )?;
    done.extend(kept);
    Ok(done)
}

/// What a cluster makes for itself in every namespace: the root CA ConfigMap, service
/// account token Secrets.
fn made_by_member(ar: &ApiResource, o: &DynamicObject) -> bool {
    match ar.plural.as_str() {
        "configmaps" => o.metadata.name.as_deref() == Some("kube-root-ca.crt"),
        "secrets" => o.data["type"] == "kubernetes.io/service-account-token",
        _ => false,
    }
}

/// Whether a namespace holds objects of the federated types that the federation did not
/// create.
async fn holds_foreign(member: &Client, namespace: &str) -> anyhow::Result<bool> {
    for (ar, namespaced) in fellowship_controllers::federatedtypes::resources() {
        if !namespaced {
            continue;
        }
        let list = match Api::<DynamicObject>::namespaced_with(member.clone(), namespace, &ar)
            .list(&ListParams::default())
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            r => r?,
        };
        let foreign = list
            .items
            .iter()
            .any(|o| !is_managed(&o.metadata) && !made_by_member(&ar, o));
        if foreign {
            return Ok(true);
        }
    }
    Ok(false)
}

fn removed(cluster: &str, out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "Successfully removed cluster {cluster:?} from federation"
    )?;
    Ok(())
}
