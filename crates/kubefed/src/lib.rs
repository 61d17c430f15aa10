//! `kubefed`: the federation's command line. `join` registers a member cluster with the
//! federation (its namespace, service account, RBAC, credentials in the host cluster, the
//! Cluster object, the kube-dns `federations` entry: spec §3.1); `unjoin` undoes it (§3.2);
//! `local up` runs a whole federation on this machine and `local down` stops it.

pub mod contexts;
pub mod join;
pub mod local;
pub mod unjoin;

/// Annotation keys of spec §3 and §12.
pub const FEDERATION_NAME: &str = "federation.alpha.kubernetes.io/federation-name";
pub const CLUSTER_NAME: &str = "federation.alpha.kubernetes.io/cluster-name";
/// The original's key, typo and all.
pub const SERVICE_ACCOUNT_NAME: &str = "federation.kubernetes.io/servive-account-name";
pub const CLUSTER_ROLE_NAME: &str = "federation.kubernetes.io/cluster-role-name";
