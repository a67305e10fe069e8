//! Docker failures and their mapping into [`sandbox_core::Error`].
//!
//! Every daemon call goes through [`Api::call`], which puts the configured deadline on it and
//! maps its failure with [`map_api_error`], the one place that turns Docker status codes into
//! the library's error kinds.

use std::future::Future;
use std::time::Duration;

use sandbox_core::{BackendKind, Error, Operation, ResourceKind};

const KIND: BackendKind = BackendKind::Docker;

/// Failures of this backend that are not a status code from the daemon. They become the
/// `source` of a [`sandbox_core::Error::Backend`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum DockerError {
    /// A resource of this library carries a label this version cannot read.
    #[error("label `{key}` of {resource} has an unreadable value {value:?}")]
    BadLabel {
        resource: String,
        key: &'static str,
        value: String,
    },
    /// A tar archive from or for the daemon could not be read or written.
    #[error("tar archive of `{path}`: {source}")]
    Tar {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The exec's final state could not be read.
    #[error("exec {exec_id} ended but the daemon reports no exit code")]
    NoExitCode { exec_id: String },
    /// A warm container did not confirm that it stored the session settings.
    #[error("warm container {container} did not acknowledge its claim: {detail}")]
    ClaimNotAcknowledged { container: String, detail: String },
    /// The session file of a claimed warm sandbox is missing or malformed.
    #[error("session settings of sandbox {sandbox} cannot be read: {detail}")]
    SessionFile { sandbox: String, detail: String },
}

impl DockerError {
    /// This failure as a library error.
    pub(crate) fn into_error(self) -> Error {
        let message = self.to_string();
        Error::backend_with_source(KIND, message, self)
    }
}

/// What a failing call was about, so that a 404 names the right kind of thing.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// A sandbox (container), by sandbox id.
    Sandbox(&'a str),
    /// An image reference.
    Image(&'a str),
    /// A snapshot, by snapshot id.
    Snapshot(&'a str),
    /// A path inside a sandbox.
    File(&'a str),
    /// The daemon itself, or something without an identity of its own (a list).
    Daemon,
}

/// Maps a bollard error into the library's error: by the daemon's status code when there is
/// one, otherwise by what failed (connection, timeout, decoding).
pub(crate) fn map_api_error(
    operation: Operation,
    target: Target<'_>,
    host: &str,
    err: bollard::errors::Error,
) -> Error {
    use bollard::errors::Error as B;
    match err {
        B::DockerResponseServerError {
            status_code,
            message,
        } => map_status(
            operation,
            target,
            status_code,
            message,
            err_source(status_code),
        ),
        B::RequestTimeoutError => timeout_of(operation, None),
        B::SocketNotFoundError(path) => Error::Unavailable {
            backend: KIND,
            message: format!("no Docker daemon socket at {path} (docker host {host})"),
            source: None,
        },
        e @ (B::HyperResponseError { .. }
        | B::HyperLegacyError { .. }
        | B::IOError { .. }
        | B::HttpClientError { .. }) => {
            // A request that reached the daemon and then broke may have taken effect.
            let message = format!("cannot talk to the Docker daemon at {host}: {e}");
            if matches!(operation, Operation::Create | Operation::Restore) && !is_connect(&e) {
                Error::OutcomeUnknown {
                    operation,
                    backend: KIND,
                    message,
                    source: Some(Box::new(e)),
                }
            } else {
                Error::Unavailable {
                    backend: KIND,
                    message,
                    source: Some(Box::new(e)),
                }
            }
        }
        other => Error::backend_with_source(KIND, format!("`{operation}` failed: {other}"), other),
    }
}

/// The daemon's own error, kept as the `source` of mapped errors.
#[derive(Debug, thiserror::Error)]
#[error("Docker API status {0}")]
struct StatusSource(u16);

fn err_source(status: u16) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(StatusSource(status))
}

fn map_status(
    operation: Operation,
    target: Target<'_>,
    status: u16,
    message: String,
    source: Box<dyn std::error::Error + Send + Sync>,
) -> Error {
    match status {
        404 => match target {
            Target::Sandbox(id) => Error::NotFound {
                kind: ResourceKind::Sandbox,
                id: id.to_string(),
            },
            Target::Image(id) => Error::NotFound {
                kind: ResourceKind::Image,
                id: id.to_string(),
            },
            Target::Snapshot(id) => Error::NotFound {
                kind: ResourceKind::Snapshot,
                id: id.to_string(),
            },
            Target::File(path) => Error::NotFound {
                kind: ResourceKind::File,
                id: path.to_string(),
            },
            Target::Daemon => Error::Backend {
                backend: KIND,
                status: Some(status),
                message,
                source: Some(source),
            },
        },
        409 => Error::Conflict {
            message: format!("`{operation}`: {message}"),
        },
        401 => Error::Unauthenticated {
            backend: KIND,
            message,
        },
        403 => Error::PermissionDenied {
            backend: KIND,
            message,
        },
        429 => Error::RateLimited {
            backend: KIND,
            retry_after: None,
        },
        503 => Error::Unavailable {
            backend: KIND,
            message: format!("the Docker daemon is unavailable: {message}"),
            source: Some(source),
        },
        _ => Error::Backend {
            backend: KIND,
            status: Some(status),
            message: format!("`{operation}`: {message}"),
            source: Some(source),
        },
    }
}

fn is_connect(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as B;
    match e {
        B::HyperLegacyError { err } => err.is_connect(),
        B::IOError { err } => matches!(
            err.kind(),
            std::io::ErrorKind::NotFound
                | std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::PermissionDenied
        ),
        _ => false,
    }
}

fn timeout_of(operation: Operation, after: Option<Duration>) -> Error {
    Error::Timeout {
        operation,
        after: after.unwrap_or_default(),
    }
}

/// The daemon client with the deadline every call gets.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) docker: bollard::Docker,
    pub(crate) host: String,
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("host", &self.host)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Api {
    /// Runs one daemon call under the API deadline and maps its error.
    pub(crate) async fn call<T>(
        &self,
        operation: Operation,
        target: Target<'_>,
        fut: impl Future<Output = Result<T, bollard::errors::Error>>,
    ) -> sandbox_core::Result<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.map(operation, target, e)),
            Err(_) => Err(timeout_of(operation, Some(self.timeout))),
        }
    }

    /// Runs one daemon call under the API deadline; a deadline miss is mapped, the daemon's
    /// error is returned as is so the caller can react to its status code.
    pub(crate) async fn call_raw<T>(
        &self,
        operation: Operation,
        fut: impl Future<Output = Result<T, bollard::errors::Error>>,
    ) -> sandbox_core::Result<Result<T, bollard::errors::Error>> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| timeout_of(operation, Some(self.timeout)))
    }

    /// Maps an error of a call made without [`Api::call`] (streams).
    pub(crate) fn map(
        &self,
        operation: Operation,
        target: Target<'_>,
        err: bollard::errors::Error,
    ) -> Error {
        match map_api_error(operation, target, &self.host, err) {
            Error::Timeout { operation, after } if after.is_zero() => Error::Timeout {
                operation,
                after: self.timeout,
            },
            other => other,
        }
    }
}

/// The status code of a daemon error, if it is one.
pub(crate) fn status_of(err: &bollard::errors::Error) -> Option<u16> {
    match err {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::errors::Error as B;

    fn server(status: u16) -> B {
        B::DockerResponseServerError {
            status_code: status,
            message: format!("daemon says {status}"),
        }
    }

    #[test]
    fn status_codes_map_by_meaning() {
        let host = "unix:///var/run/docker.sock";
        let e = map_api_error(
            Operation::Status,
            Target::Sandbox("sbx-1"),
            host,
            server(404),
        );
        assert!(
            matches!(&e, Error::NotFound { kind: ResourceKind::Sandbox, id } if id == "sbx-1"),
            "{e:?}"
        );
        let e = map_api_error(Operation::Create, Target::Image("img:1"), host, server(404));
        assert!(
            matches!(&e, Error::NotFound { kind: ResourceKind::Image, id } if id == "img:1"),
            "{e:?}"
        );
        let e = map_api_error(
            Operation::Restore,
            Target::Snapshot("snap-1"),
            host,
            server(404),
        );
        assert!(
            matches!(
                &e,
                Error::NotFound {
                    kind: ResourceKind::Snapshot,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = map_api_error(Operation::ReadFile, Target::File("/a"), host, server(404));
        assert!(
            matches!(
                &e,
                Error::NotFound {
                    kind: ResourceKind::File,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = map_api_error(Operation::Create, Target::Daemon, host, server(409));
        assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
        let e = map_api_error(Operation::List, Target::Daemon, host, server(401));
        assert!(matches!(e, Error::Unauthenticated { .. }), "{e:?}");
        let e = map_api_error(Operation::List, Target::Daemon, host, server(403));
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
        let e = map_api_error(Operation::List, Target::Daemon, host, server(429));
        assert!(e.is_retryable(), "{e:?}");
        let e = map_api_error(Operation::List, Target::Daemon, host, server(500));
        assert!(
            matches!(&e, Error::Backend { status: Some(500), message, .. } if message.contains("daemon says 500")),
            "{e:?}"
        );
        let e = map_api_error(Operation::List, Target::Daemon, host, server(503));
        assert!(e.is_retryable(), "{e:?}");
    }

    #[test]
    fn connection_failures_are_unavailable_and_name_the_host() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = map_api_error(
            Operation::Status,
            Target::Daemon,
            "unix:///tmp/none.sock",
            B::IOError { err: io },
        );
        assert!(
            matches!(&e, Error::Unavailable { message, .. } if message.contains("unix:///tmp/none.sock")),
            "{e:?}"
        );
        assert!(e.is_retryable());
        let e = map_api_error(
            Operation::Status,
            Target::Daemon,
            "unix:///tmp/none.sock",
            B::SocketNotFoundError("/tmp/none.sock".into()),
        );
        assert!(e.to_string().contains("/tmp/none.sock"), "{e}");
    }

    #[test]
    fn a_broken_create_has_an_unknown_outcome_and_timeouts_are_typed() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "reset");
        let e = map_api_error(
            Operation::Create,
            Target::Daemon,
            "h",
            B::IOError { err: io },
        );
        assert!(e.is_outcome_unknown(), "{e:?}");
        let e = map_api_error(
            Operation::Create,
            Target::Daemon,
            "h",
            B::RequestTimeoutError,
        );
        assert!(
            matches!(
                e,
                Error::Timeout {
                    operation: Operation::Create,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.is_outcome_unknown());
    }
}
