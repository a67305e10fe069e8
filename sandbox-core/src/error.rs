//! The one error type of the library, by meaning rather than by provider.

use std::fmt;
use std::time::Duration;

use crate::backend::{BackendKind, Operation};

/// A boxed error kept as the `source` of a provider failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result<T, sandbox_core::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of thing an id names, for [`Error::NotFound`] and [`Error::AlreadyExists`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResourceKind {
    /// A sandbox.
    Sandbox,
    /// A snapshot.
    Snapshot,
    /// A container image.
    Image,
    /// A file or directory inside a sandbox.
    File,
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceKind::Sandbox => "sandbox",
            ResourceKind::Snapshot => "snapshot",
            ResourceKind::Image => "image",
            ResourceKind::File => "file",
        })
    }
}

/// Whether, and how, a failed call may be retried. See [`Error::retry_safety`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrySafety {
    /// The call had no effect (or its effect is idempotent): retry it as it was.
    Safe,
    /// The call may or may not have taken effect (a create whose reply was lost). Retry only
    /// with the same idempotency key (for `create`/`restore`: the same session id), which turns
    /// a duplicate into a lookup of the sandbox the first call made.
    SameIdempotencyKey,
    /// Retrying cannot help: the input, the configuration or the permissions are wrong.
    Never,
}

/// Every error the library returns.
///
/// Backends map their provider's errors into these kinds (one mapping function per backend) and
/// keep the provider's error as `source`. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A field of a spec or request broke a rule; nothing was created.
    #[error("invalid `{field}`: {reason}")]
    InvalidSpec {
        /// The field, as a path (`session.repo.branch`, `env[FOO]`, `exec.argv[0]`).
        field: String,
        /// The rule it broke.
        reason: String,
    },

    /// A configuration key is unknown, missing, or has a bad value.
    #[error("invalid config key `{key}`: {reason}")]
    InvalidConfig {
        /// The key (`docker.image`, `SANDBOX_DOCKER_IMAGE`, `backend`).
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The sandbox, snapshot or image does not exist (or no longer exists).
    #[error("{kind} `{id}` not found")]
    NotFound {
        /// What was looked for.
        kind: ResourceKind,
        /// Its id.
        id: String,
    },

    /// Something with this identity already exists and cannot be reused.
    #[error("{kind} `{id}` already exists: {reason}")]
    AlreadyExists {
        /// What exists.
        kind: ResourceKind,
        /// Its id.
        id: String,
        /// Why it cannot be reused (for example: it belongs to another spec).
        reason: String,
    },

    /// The operation conflicts with the resource's current state (e.g. exec in a sandbox that
    /// is being terminated).
    #[error("conflict: {message}")]
    Conflict {
        /// What conflicts.
        message: String,
    },

    /// The backend cannot do this; its [`Capabilities`](crate::Capabilities) say so too.
    #[error("`{operation}` is not supported by the {backend} backend: {reason}")]
    Unsupported {
        /// The operation (or feature of a spec) asked for.
        operation: Operation,
        /// The backend that lacks it.
        backend: BackendKind,
        /// Why, in a sentence.
        reason: String,
    },

    /// The operation did not finish within its deadline. For `create`/`restore` the outcome
    /// is unknown: see [`Error::retry_safety`].
    #[error("`{operation}` timed out after {after:?}")]
    Timeout {
        /// The operation that timed out.
        operation: Operation,
        /// The deadline that passed.
        after: Duration,
    },

    /// The provider could not be reached or said it is temporarily unable to serve; the call
    /// had no effect and may be retried.
    #[error("{backend} backend unavailable: {message}")]
    Unavailable {
        /// The backend.
        backend: BackendKind,
        /// What could not be reached, and how.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// The provider rejected the call for rate; retry after the given delay if any.
    #[error("rate limited by the {backend} backend")]
    RateLimited {
        /// The backend.
        backend: BackendKind,
        /// How long the provider asked to wait, when it said.
        retry_after: Option<Duration>,
    },

    /// The provider did not accept the credentials.
    #[error("unauthenticated by the {backend} backend: {message}")]
    Unauthenticated {
        /// The backend.
        backend: BackendKind,
        /// The provider's reason (never the credential).
        message: String,
    },

    /// The credentials are valid but do not allow this.
    #[error("permission denied by the {backend} backend: {message}")]
    PermissionDenied {
        /// The backend.
        backend: BackendKind,
        /// The provider's reason.
        message: String,
    },

    /// The operation may or may not have taken effect (a create whose reply was lost, an
    /// interrupted admission). Retry only with the same idempotency key.
    #[error("outcome of `{operation}` unknown on the {backend} backend: {message}")]
    OutcomeUnknown {
        /// The operation.
        operation: Operation,
        /// The backend.
        backend: BackendKind,
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// The provider failed in a way none of the other kinds describes.
    #[error("{backend} backend error{}: {message}", status.map(|s| format!(" (status {s})")).unwrap_or_default())]
    Backend {
        /// The backend.
        backend: BackendKind,
        /// The provider's status code, when it has one (HTTP status, Docker API status).
        status: Option<u16>,
        /// The provider's message.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// An event stream fell behind and events were dropped.
    #[error("event stream lagged: {missed} events dropped")]
    EventsLagged {
        /// How many events were dropped.
        missed: u64,
    },
}

impl Error {
    /// An [`Error::InvalidSpec`].
    pub fn invalid_spec(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidSpec {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::InvalidConfig`].
    pub fn invalid_config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::NotFound`] for a sandbox.
    pub fn sandbox_not_found(id: impl fmt::Display) -> Self {
        Error::NotFound {
            kind: ResourceKind::Sandbox,
            id: id.to_string(),
        }
    }

    /// An [`Error::Unsupported`].
    pub fn unsupported(
        operation: Operation,
        backend: BackendKind,
        reason: impl Into<String>,
    ) -> Self {
        Error::Unsupported {
            operation,
            backend,
            reason: reason.into(),
        }
    }

    /// An [`Error::Backend`] without status or source.
    pub fn backend(backend: BackendKind, message: impl Into<String>) -> Self {
        Error::Backend {
            backend,
            status: None,
            message: message.into(),
            source: None,
        }
    }

    /// An [`Error::Backend`] keeping `source`.
    pub fn backend_with_source(
        backend: BackendKind,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            backend,
            status: None,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// How this failure may be retried.
    ///
    /// - `Unavailable`, `RateLimited`: [`RetrySafety::Safe`] (the call had no effect).
    /// - `OutcomeUnknown`: [`RetrySafety::SameIdempotencyKey`].
    /// - `Timeout`: `Safe` for idempotent operations (status, list, terminate, ...),
    ///   `SameIdempotencyKey` for create/restore, `Never` for snapshot/exec (running them again
    ///   is a second, different action).
    /// - everything else: [`RetrySafety::Never`].
    pub fn retry_safety(&self) -> RetrySafety {
        match self {
            Error::Unavailable { .. } | Error::RateLimited { .. } => RetrySafety::Safe,
            Error::OutcomeUnknown { .. } => RetrySafety::SameIdempotencyKey,
            Error::Timeout { operation, .. } => operation.retry_safety(),
            _ => RetrySafety::Never,
        }
    }

    /// True when the call may be retried as it was: the failure was transient and the call had
    /// no effect ([`RetrySafety::Safe`]). A create whose outcome is unknown is *not* retryable
    /// in this sense; see [`Error::is_outcome_unknown`].
    pub fn is_retryable(&self) -> bool {
        self.retry_safety() == RetrySafety::Safe
    }

    /// True when the operation may have taken effect although it failed.
    pub fn is_outcome_unknown(&self) -> bool {
        self.retry_safety() == RetrySafety::SameIdempotencyKey
    }

    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True for [`Error::Unsupported`].
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Error::Unsupported { .. })
    }

    /// The field or key named by an [`Error::InvalidSpec`] or [`Error::InvalidConfig`].
    pub fn invalid_field(&self) -> Option<&str> {
        match self {
            Error::InvalidSpec { field, .. } => Some(field),
            Error::InvalidConfig { key, .. } => Some(key),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_are_retryable_unknown_outcomes_are_not() {
        let unavailable = Error::Unavailable {
            backend: BackendKind::Docker,
            message: "connection refused".into(),
            source: None,
        };
        assert!(unavailable.is_retryable());
        assert!(!unavailable.is_outcome_unknown());
        let limited = Error::RateLimited {
            backend: BackendKind::Modal,
            retry_after: None,
        };
        assert!(limited.is_retryable());

        let unknown = Error::OutcomeUnknown {
            operation: Operation::Create,
            backend: BackendKind::Modal,
            message: "reply lost".into(),
            source: None,
        };
        assert!(!unknown.is_retryable());
        assert!(unknown.is_outcome_unknown());
        assert_eq!(unknown.retry_safety(), RetrySafety::SameIdempotencyKey);

        let create_timeout = Error::Timeout {
            operation: Operation::Create,
            after: Duration::from_secs(1),
        };
        assert!(!create_timeout.is_retryable());
        assert!(create_timeout.is_outcome_unknown());
        let status_timeout = Error::Timeout {
            operation: Operation::Status,
            after: Duration::from_secs(1),
        };
        assert!(status_timeout.is_retryable());
        let exec_timeout = Error::Timeout {
            operation: Operation::Exec,
            after: Duration::from_secs(1),
        };
        assert_eq!(exec_timeout.retry_safety(), RetrySafety::Never);

        assert!(!Error::invalid_spec("session_id", "bad").is_retryable());
        assert!(!Error::sandbox_not_found("x").is_retryable());
    }

    #[test]
    fn messages_name_the_field_and_rule() {
        let e = Error::invalid_spec("session.repo.branch", "must not contain `..`");
        assert_eq!(
            e.to_string(),
            "invalid `session.repo.branch`: must not contain `..`"
        );
        assert_eq!(e.invalid_field(), Some("session.repo.branch"));
        let e = Error::Backend {
            backend: BackendKind::Docker,
            status: Some(500),
            message: "boom".into(),
            source: None,
        };
        assert_eq!(e.to_string(), "docker backend error (status 500): boom");
        let e = Error::unsupported(Operation::Snapshot, BackendKind::Cloudflare, "no API");
        assert_eq!(
            e.to_string(),
            "`snapshot` is not supported by the cloudflare backend: no API"
        );
        assert!(e.is_unsupported());
    }

    #[test]
    fn error_is_send_sync_static() {
        fn assert_bounds<T: Send + Sync + 'static + std::error::Error>() {}
        assert_bounds::<Error>();
    }
}
