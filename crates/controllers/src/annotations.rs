//! The annotations and finalizers the controllers read and write on federated objects and
//! on their member copies (spec §12, and Fellowship's own).

use kube::api::ObjectMeta;

/// On every member copy: what Fellowship created and may change or delete.
pub const MANAGED: &str = "federation.fellowship.io/managed";
/// On every federated object: its state in each cluster, as JSON (`{"gondor": "Synced"}`).
pub const PROPAGATION: &str = "federation.fellowship.io/propagation";
/// On federated objects whose replicas are spread: each cluster's share and what it runs,
/// as JSON (`{"gondor": {"planned": 3, "ready": 3}}`).
pub const REPLICAS: &str = "federation.fellowship.io/replicas";
/// Set to `"true"` on a federated object to take over same-named objects in the members
/// that Fellowship did not create (they are left alone otherwise).
pub const ADOPT: &str = "federation.fellowship.io/adopt";
/// On a federated ReplicaSet or Deployment that a federated HPA scales: the clusters its
/// member HPAs are in (`{"Names": ["gondor"]}`, spec §4.4, §4.6).
pub const HPA_TARGET_CLUSTERS: &str = "federation.kubernetes.io/hpa-target-cluster-list";
/// The finalizer of §6: the copies go with the federated object, unless orphaned.
pub const DELETE_FROM_CLUSTERS: &str = "federation.kubernetes.io/delete-from-underlying-clusters";
pub const ORPHAN: &str = "orphan";
/// Each member's deployment controller writes its own revision here.
pub const DEPLOYMENT_REVISION: &str = "deployment.kubernetes.io/revision";

/// Whether an object carries Fellowship's marker (`kubefed unjoin` reads it too).
pub fn is_managed(metadata: &ObjectMeta) -> bool {
    metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MANAGED))
        .is_some_and(|v| v == "true")
}
