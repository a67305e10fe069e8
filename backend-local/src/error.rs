//! Local failures and their mapping into [`sandbox_core::Error`].

use std::path::{Path, PathBuf};

use sandbox_core::{BackendKind, Error, ResourceKind};

pub(crate) const KIND: BackendKind = BackendKind::Local;

/// Failures of this backend, kept as the `source` of a [`sandbox_core::Error::Backend`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum LocalError {
    /// A filesystem operation on the backend's state failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A state file of this backend cannot be read.
    #[error("state file {} is unreadable: {source}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A command could not be started.
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A snapshot archive does not hold what was written into it.
    #[error("snapshot archive {} failed verification: {detail}", path.display())]
    SnapshotVerify { path: PathBuf, detail: String },
}

impl From<LocalError> for Error {
    fn from(e: LocalError) -> Self {
        Error::backend_with_source(KIND, e.to_string(), e)
    }
}

/// An I/O failure on `path` during `op`, as a library error. The one place where filesystem
/// errors become library errors: a missing sandbox directory is `NotFound`, anything else is a
/// backend failure keeping the I/O error as its source.
pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    LocalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
    .into()
}

/// `NotFound` for a sandbox.
pub(crate) fn sandbox_not_found(id: &str) -> Error {
    Error::NotFound {
        kind: ResourceKind::Sandbox,
        id: id.to_string(),
    }
}

/// `NotFound` for a snapshot.
pub(crate) fn snapshot_not_found(id: &str) -> Error {
    Error::NotFound {
        kind: ResourceKind::Snapshot,
        id: id.to_string(),
    }
}

/// `NotFound` for a file in a sandbox.
pub(crate) fn file_not_found(path: &str) -> Error {
    Error::NotFound {
        kind: ResourceKind::File,
        id: path.to_string(),
    }
}
