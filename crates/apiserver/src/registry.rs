//! The table of resources the server serves, and lookups into it.

use std::collections::BTreeMap;
use std::sync::Arc;

use fellowship_apimachinery::validation::NameRule;
use fellowship_apimachinery::{ResourceKind, Scope};

#[allow(clippy::too_many_arguments)]
const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    scope: Scope,
    subresources: &'static [&'static str],
    name_rule: NameRule,
    storage: &'static str,
) -> ResourceKind {
    ResourceKind {
        group,
        version,
        kind,
        plural,
        singular,
        short_names,
        categories: &[],
        scope,
        subresources,
        name_rule,
        fields: &[],
        storage,
    }
}

use NameRule::{
    Dns1035Label as DNS1035, Dns1123Label as LABEL, Dns1123Subdomain as SUBDOMAIN,
    PathSegment as SEGMENT,
};
use Scope::{Cluster as CLUSTER, Namespaced as NS};

/// What every server here serves: the core of the Kubernetes API that the federation
/// propagates (spec §4.1).
#[rustfmt::skip] // one resource a line reads as a table
fn common() -> Vec<ResourceKind> {
    let status: &'static [&'static str] = &["status"];
    vec![
        kind("", "v1", "Namespace", "namespaces", "namespace", &["ns"], CLUSTER, &["status", "finalize"], LABEL, "namespaces"),
        kind("", "v1", "ConfigMap", "configmaps", "configmap", &["cm"], NS, &[], SUBDOMAIN, "configmaps"),
        kind("", "v1", "Secret", "secrets", "secret", &[], NS, &[], SUBDOMAIN, "secrets"),
        kind("", "v1", "Service", "services", "service", &["svc"], NS, status, DNS1035, "services"),
        kind("", "v1", "Event", "events", "event", &["ev"], NS, &[], SUBDOMAIN, "events"),
        kind("apps", "v1", "Deployment", "deployments", "deployment", &["deploy"], NS, &["status", "scale"], SUBDOMAIN, "deployments"),
        kind("apps", "v1", "ReplicaSet", "replicasets", "replicaset", &["rs"], NS, &["status", "scale"], SUBDOMAIN, "replicasets"),
        kind("apps", "v1", "DaemonSet", "daemonsets", "daemonset", &["ds"], NS, status, SUBDOMAIN, "daemonsets"),
        kind("batch", "v1", "Job", "jobs", "job", &[], NS, status, SUBDOMAIN, "jobs"),
        kind("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", &["hpa"], NS, status, SUBDOMAIN, "horizontalpodautoscalers"),
        kind("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", &["hpa"], NS, status, SUBDOMAIN, "horizontalpodautoscalers"),
        kind("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", &["ing"], NS, status, SUBDOMAIN, "ingresses"),
        kind("coordination.k8s.io", "v1", "Lease", "leases", "lease", &[], NS, &[], SUBDOMAIN, "leases"),
    ]
}

/// The federation API: the contract's resources (spec §1, §4.1). The seed-era
/// `extensions/v1beta1` versions have no short names, so that `rs` or `deploy` name the
/// current group alone, as kubectl expects.
#[rustfmt::skip]
pub fn federation() -> Vec<ResourceKind> {
    let status: &'static [&'static str] = &["status"];
    let mut kinds = common();
    kinds.extend([
        kind("extensions", "v1beta1", "Deployment", "deployments", "deployment", &[], NS, &["status", "scale"], SUBDOMAIN, "deployments"),
        kind("extensions", "v1beta1", "ReplicaSet", "replicasets", "replicaset", &[], NS, &["status", "scale"], SUBDOMAIN, "replicasets"),
        kind("extensions", "v1beta1", "DaemonSet", "daemonsets", "daemonset", &[], NS, status, SUBDOMAIN, "daemonsets"),
        kind("extensions", "v1beta1", "Ingress", "ingresses", "ingress", &[], NS, status, SUBDOMAIN, "ingresses"),
        kind("federation", "v1beta1", "Cluster", "clusters", "cluster", &[], CLUSTER, status, DNS1035, "clusters"),
    ]);
    finish(kinds)
}

/// A member cluster's API (the local clusters): the common resources and what a cluster
/// runs its workloads with, and the RBAC objects `kubefed join` creates (spec §3.1).
#[rustfmt::skip]
pub fn member() -> Vec<ResourceKind> {
    let status: &'static [&'static str] = &["status"];
    let rbac = "rbac.authorization.k8s.io";
    let mut kinds = common();
    kinds.extend([
        kind("", "v1", "Node", "nodes", "node", &["no"], CLUSTER, status, SUBDOMAIN, "minions"),
        kind("", "v1", "Pod", "pods", "pod", &["po"], NS, status, SUBDOMAIN, "pods"),
        kind("", "v1", "Endpoints", "endpoints", "endpoints", &["ep"], NS, &[], SUBDOMAIN, "endpoints"),
        kind("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", &["sa"], NS, &[], SUBDOMAIN, "serviceaccounts"),
        kind("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", &[], NS, &[], SUBDOMAIN, "endpointslices"),
        kind(rbac, "v1", "ClusterRole", "clusterroles", "clusterrole", &[], CLUSTER, &[], SEGMENT, "clusterroles"),
        kind(rbac, "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", &[], CLUSTER, &[], SEGMENT, "clusterrolebindings"),
        kind(rbac, "v1", "Role", "roles", "role", &[], NS, &[], SEGMENT, "roles"),
        kind(rbac, "v1", "RoleBinding", "rolebindings", "rolebinding", &[], NS, &[], SEGMENT, "rolebindings"),
    ]);
    finish(kinds)
}

/// Field selectors and categories, as kube-apiserver has them per type.
fn finish(mut kinds: Vec<ResourceKind>) -> Vec<ResourceKind> {
    for k in &mut kinds {
        k.fields = match k.plural {
            "namespaces" => &["status.phase"],
            "secrets" => &["type"],
            "events" => &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "reason",
                "source",
                "type",
            ],
            "pods" => &[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            "nodes" => &["spec.unschedulable"],
            _ => &[],
        };
        k.categories = match k.plural {
            "services"
            | "deployments"
            | "replicasets"
            | "daemonsets"
            | "jobs"
            | "pods"
            | "horizontalpodautoscalers" => &["all"],
            _ => &[],
        };
    }
    kinds
}

/// Served resources, found by group, version and plural.
pub struct Registry {
    by_path: BTreeMap<(String, String, String), Arc<ResourceKind>>,
    /// Groups in the order discovery lists them, each with its versions (preferred first).
    groups: Vec<(String, Vec<String>)>,
}

impl Registry {
    pub fn new(kinds: Vec<ResourceKind>) -> Registry {
        let mut by_path = BTreeMap::new();
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for k in kinds {
            let (g, v) = (k.group.to_string(), k.version.to_string());
            match groups.iter_mut().find(|(name, _)| *name == g) {
                Some((_, versions)) if !versions.contains(&v) => versions.push(v.clone()),
                Some(_) => {}
                None => groups.push((g.clone(), vec![v.clone()])),
            }
            by_path.insert((g, v, k.plural.to_string()), Arc::new(k));
        }
        Registry { by_path, groups }
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<ResourceKind>> {
        self.by_path
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
    }

    /// Resources of one group/version.
    pub fn resources(&self, group: &str, version: &str) -> Vec<&Arc<ResourceKind>> {
        self.by_path
            .values()
            .filter(|k| k.group == group && k.version == version)
            .collect()
    }

    /// Every served resource.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceKind>> {
        self.by_path.values()
    }

    /// Named API groups (not the core group) with their versions, preferred first.
    pub fn groups(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.groups
            .iter()
            .filter(|(g, _)| !g.is_empty())
            .map(|(g, v)| (g.as_str(), v.as_slice()))
    }

    pub fn has_version(&self, group: &str, version: &str) -> bool {
        self.groups
            .iter()
            .any(|(g, vs)| g == group && vs.iter().any(|v| v == version))
    }
}
