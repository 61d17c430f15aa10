//! The federation controller manager. Today: the cluster controller (spec §1.1), which
//! probes every member cluster with the credentials the federation holds for it and writes
//! the Cluster's status (Ready / Offline, zones, region). Propagation of federated types
//! follows (issue 5).

pub mod cluster;
pub mod leader;
pub mod members;
pub mod metrics;
pub mod options;

pub use options::Options;
