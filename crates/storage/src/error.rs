use std::path::PathBuf;

use crate::{KeyValue, Revision};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Storage errors. The API server maps them to HTTP: `NotFound` 404, `AlreadyExists` and
/// `Conflict` 409, `TooOld` 410, `Unavailable` 503 (retry), `InvalidContinue` 400.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("key {key} not found")]
    NotFound { key: String },

    #[error("key {key} already exists")]
    AlreadyExists { key: String },

    /// The key changed since the caller read it; `current` is what it holds now.
    #[error("key {} was modified at revision {} (expected {expected})", current.key, current.mod_revision)]
    Conflict {
        expected: Revision,
        current: Box<KeyValue>,
    },

    /// The revision asked for is older than the retained history (or the watcher fell behind
    /// and was dropped): list again at the current revision. `compacted` is where the history
    /// starts now, or 0 where the backend does not say.
    #[error("revision {requested} is too old: its history has been compacted")]
    TooOld {
        requested: Revision,
        compacted: Revision,
    },

    #[error("revision {requested} is in the future: the current revision is {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },

    #[error("invalid continue token: {0}")]
    InvalidContinue(String),

    #[error("invalid key {0:?}: keys start with '/' and contain no NUL")]
    InvalidKey(String),

    /// A transient failure (etcd unreachable, a timeout): the same call may succeed later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),

    #[error("{}: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },

    #[error("{} is in use by another process", path.display())]
    Locked { path: PathBuf },

    #[error("storage error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the caller may retry the same call.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}
