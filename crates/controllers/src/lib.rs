//! The federation controller manager: the cluster controller (spec §1.1), which probes
//! every member cluster with the credentials the federation holds for it and writes the
//! Cluster's status, and the sync controller (§4.3, §5, §6), which propagates the federated
//! types to the Ready clusters their selectors choose, spreading the replicas of those that
//! have them (§4.4-§4.6) with the planner.

pub mod annotations;
pub mod cluster;
pub mod copies;
pub mod federatedtypes;
pub mod leader;
pub mod members;
pub mod metrics;
pub mod options;
pub mod planner;
pub mod ratelimit;
pub mod selector;
pub mod serving;
pub mod sync;

pub use options::Options;
