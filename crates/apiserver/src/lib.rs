//! A Kubernetes-compatible API server over the Fellowship store: table-driven resources
//! (`registry`), the generic REST verbs (`rest`, `watch`), discovery, authentication and TLS.
//! It serves the federation API, and the API of the local member clusters.

pub mod admission;
pub mod auth;
pub mod conversion;
pub mod discovery;
pub mod metrics;
pub mod namespaces;
pub mod objects;
pub mod openapi;
pub mod openapi_proto;
pub mod options;
pub mod registry;
pub mod reply;
pub mod rest;
pub mod schemas;
pub mod server;
pub mod tls;
pub mod validate;
pub mod watch;

pub use options::Options;
pub use server::App;
