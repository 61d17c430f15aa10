//! Kubernetes API machinery shared by the federation API server and the local member
//! clusters: `Status` errors, object metadata, validation, selectors and resource
//! descriptions.

pub mod duration;
pub mod logging;
pub mod managed;
pub mod meta;
pub mod patch;
pub mod process;
pub mod profiling;
pub mod protobuf;
pub mod resource;
pub mod selector;
pub mod status;
pub mod validation;

pub use resource::{ResourceKind, Scope};
pub use status::{ApiError, Cause, GroupResource};
