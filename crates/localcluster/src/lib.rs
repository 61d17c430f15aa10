//! Local member clusters: what kind and kwok are to Kubernetes users, for the federation.
//! Each cluster is the same API server as the federation's (a member registry, an in-memory
//! store, its own HTTPS port) with simulated control loops that give the federation the
//! signals of a real cluster: nodes with zones, a scheduler, ReplicaSets, Deployments,
//! DaemonSets and Jobs that run Pods which become Ready, Services with cluster IPs,
//! load-balancer addresses and Endpoints, service-account tokens, HPA status.
//!
//! Many clusters run in one process (`fleet`); `local-clusters` is the command.

pub mod access;
pub mod addresses;
pub mod cluster;
pub mod config;
pub mod controllers;
pub mod fleet;
pub mod kubeconfig;
pub mod pki;
pub mod quantity;

pub use cluster::LocalCluster;
pub use config::{ClusterConfig, FleetConfig, Simulation};
pub use fleet::Fleet;
