//! The [`SandboxBackend`] trait every provider implements, and [`SandboxBackendExt`].

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::capabilities::Capabilities;
use crate::error::{Result, RetrySafety};
use crate::event::EventStream;
use crate::exec::{ExecOutput, ExecRequest, ExecStream};
use crate::id::{SandboxId, SnapshotId};
use crate::sandbox::{Sandbox, SandboxStatus, Snapshot, SnapshotRef, WarmStatus};
use crate::spec::{ListFilter, SandboxSpec, SnapshotFilter, SnapshotOptions, WarmSpec};

/// Which provider a backend talks to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackendKind {
    /// Embedded: a workspace directory per sandbox, bubblewrap isolation when available.
    #[default]
    Local,
    /// The local Docker daemon.
    Docker,
    /// Kubernetes with the agent-sandbox controller.
    Kubernetes,
    /// Modal, through the seeds' web API.
    Modal,
    /// Cloudflare Containers, through the sandbox gateway Worker.
    Cloudflare,
}

impl BackendKind {
    /// Every kind, in declaration order.
    pub const ALL: [BackendKind; 5] = [
        BackendKind::Local,
        BackendKind::Docker,
        BackendKind::Kubernetes,
        BackendKind::Modal,
        BackendKind::Cloudflare,
    ];

    /// The config name (`local`, `docker`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Docker => "docker",
            BackendKind::Kubernetes => "kubernetes",
            BackendKind::Modal => "modal",
            BackendKind::Cloudflare => "cloudflare",
        }
    }

    /// Parses a config name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operations of [`SandboxBackend`], for errors, spans and capability checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum Operation {
    Create,
    Warm,
    Snapshot,
    Restore,
    Terminate,
    Status,
    Exec,
    ReadFile,
    WriteFile,
    List,
    ListSnapshots,
    DeleteSnapshot,
    ReapExpired,
}

impl Operation {
    /// The name (`create`, `read_file`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Warm => "warm",
            Operation::Snapshot => "snapshot",
            Operation::Restore => "restore",
            Operation::Terminate => "terminate",
            Operation::Status => "status",
            Operation::Exec => "exec",
            Operation::ReadFile => "read_file",
            Operation::WriteFile => "write_file",
            Operation::List => "list",
            Operation::ListSnapshots => "list_snapshots",
            Operation::DeleteSnapshot => "delete_snapshot",
            Operation::ReapExpired => "reap_expired",
        }
    }

    /// Whether running this operation twice is the same as running it once.
    /// `create`/`restore` are idempotent by session id only; `snapshot` and `exec` are not.
    pub fn retry_safety(&self) -> RetrySafety {
        match self {
            Operation::Create | Operation::Restore => RetrySafety::SameIdempotencyKey,
            Operation::Snapshot | Operation::Exec => RetrySafety::Never,
            _ => RetrySafety::Safe,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One sandbox provider. Object safe: use it as `Box<dyn SandboxBackend>` /
/// [`DynSandboxBackend`], chosen at runtime from config.
///
/// The semantics every implementation honours (the conformance suite, module `conformance`
/// behind the feature of that name, checks each):
/// - `create` rejects what the backend cannot do ([`Capabilities::check_spec`]) before any side
///   effect; it returns when the sandbox is ready for exec, or fails and leaves nothing
///   behind. Creating again for a session id that has a live sandbox returns that sandbox
///   (the session id is the idempotency key), so a caller may retry a create whose outcome is
///   unknown.
/// - `warm` keeps a pool of ready sandboxes per template key; a `create` whose template key
///   and template match takes one (no cold start) and gets its session settings applied.
/// - `snapshot` captures the filesystem; `restore` starts a new sandbox whose filesystem
///   equals it. A backend without them says so in [`Capabilities`] and returns
///   [`Error::Unsupported`](crate::Error::Unsupported).
/// - `exec` takes argv; the stream yields output as it comes and ends with a typed
///   [`ExitStatus`](crate::ExitStatus); a timeout kills the command.
/// - `terminate` is idempotent: terminating an unknown or gone sandbox is `Ok`. Afterwards
///   `status` says `Terminated` or `NotFound`.
/// - `status` and `list` answer from the provider (labels on its resources), not from memory,
///   so a restarted control plane sees the same answer.
/// - a sandbox past its timeout is terminated by the provider or by `reap_expired`.
#[async_trait]
pub trait SandboxBackend: fmt::Debug + Send + Sync + 'static {
    /// Which provider this is.
    fn kind(&self) -> BackendKind;

    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Creates a sandbox for a session, or returns the session's live one.
    async fn create(&self, spec: SandboxSpec) -> Result<Sandbox>;

    /// Keeps `spec.size()` ready sandboxes of a template waiting (0 empties the pool) and
    /// returns when that many are ready. Sandboxes taken by `create` are replaced in the
    /// background.
    async fn warm(&self, spec: WarmSpec) -> Result<WarmStatus>;

    /// Captures a sandbox's filesystem.
    async fn snapshot(&self, id: &SandboxId, options: SnapshotOptions) -> Result<Snapshot>;

    /// Starts a new sandbox from a snapshot, for the session of `spec` (idempotent by session
    /// id like `create`).
    async fn restore(&self, snapshot: &SnapshotRef, spec: SandboxSpec) -> Result<Sandbox>;

    /// Terminates a sandbox and frees everything it holds. Idempotent.
    async fn terminate(&self, id: &SandboxId) -> Result<()>;

    /// The sandbox's state, from the provider.
    async fn status(&self, id: &SandboxId) -> Result<SandboxStatus>;

    /// Starts a command; its output streams as it comes.
    async fn exec(&self, id: &SandboxId, request: ExecRequest) -> Result<ExecStream>;

    /// Reads a file. `path` is absolute, or relative to the sandbox's workdir; either way it is
    /// checked with [`validate::sandbox_path`](crate::validate::sandbox_path) first. A backend
    /// may confine file operations to the workdir tree and reject other paths with
    /// [`Error::InvalidSpec`](crate::Error::InvalidSpec). A missing file is `NotFound`.
    async fn read_file(&self, id: &SandboxId, path: &str) -> Result<Bytes>;

    /// Writes a file (same path rules as `read_file`), creating parent directories, replacing
    /// an existing file; returns only when the whole content is written.
    async fn write_file(&self, id: &SandboxId, path: &str, contents: Bytes) -> Result<()>;

    /// Live sandboxes matching the filter, from the provider.
    async fn list(&self, filter: ListFilter) -> Result<Vec<Sandbox>>;

    /// Snapshots matching the filter, newest first.
    async fn list_snapshots(&self, filter: SnapshotFilter) -> Result<Vec<Snapshot>>;

    /// Deletes a snapshot. Idempotent.
    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<()>;

    /// Terminates every sandbox of this library past its timeout (or idle timeout) and
    /// returns their ids. Backends whose provider enforces timeouts itself may return none.
    async fn reap_expired(&self) -> Result<Vec<SandboxId>>;

    /// Lifecycle events from now on.
    fn events(&self) -> EventStream;
}

/// A backend as a trait object.
pub type DynSandboxBackend = dyn SandboxBackend;

macro_rules! delegate_backend {
    ($ty:ty) => {
        #[async_trait]
        impl<T: SandboxBackend + ?Sized> SandboxBackend for $ty {
            fn kind(&self) -> BackendKind {
                (**self).kind()
            }
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            async fn create(&self, spec: SandboxSpec) -> Result<Sandbox> {
                (**self).create(spec).await
            }
            async fn warm(&self, spec: WarmSpec) -> Result<WarmStatus> {
                (**self).warm(spec).await
            }
            async fn snapshot(&self, id: &SandboxId, options: SnapshotOptions) -> Result<Snapshot> {
                (**self).snapshot(id, options).await
            }
            async fn restore(&self, snapshot: &SnapshotRef, spec: SandboxSpec) -> Result<Sandbox> {
                (**self).restore(snapshot, spec).await
            }
            async fn terminate(&self, id: &SandboxId) -> Result<()> {
                (**self).terminate(id).await
            }
            async fn status(&self, id: &SandboxId) -> Result<SandboxStatus> {
                (**self).status(id).await
            }
            async fn exec(&self, id: &SandboxId, request: ExecRequest) -> Result<ExecStream> {
                (**self).exec(id, request).await
            }
            async fn read_file(&self, id: &SandboxId, path: &str) -> Result<Bytes> {
                (**self).read_file(id, path).await
            }
            async fn write_file(&self, id: &SandboxId, path: &str, contents: Bytes) -> Result<()> {
                (**self).write_file(id, path, contents).await
            }
            async fn list(&self, filter: ListFilter) -> Result<Vec<Sandbox>> {
                (**self).list(filter).await
            }
            async fn list_snapshots(&self, filter: SnapshotFilter) -> Result<Vec<Snapshot>> {
                (**self).list_snapshots(filter).await
            }
            async fn delete_snapshot(&self, id: &SnapshotId) -> Result<()> {
                (**self).delete_snapshot(id).await
            }
            async fn reap_expired(&self) -> Result<Vec<SandboxId>> {
                (**self).reap_expired().await
            }
            fn events(&self) -> EventStream {
                (**self).events()
            }
        }
    };
}

delegate_backend!(Box<T>);
delegate_backend!(Arc<T>);

/// Helpers on every backend.
#[async_trait]
pub trait SandboxBackendExt: SandboxBackend {
    /// Runs a command and buffers its output.
    ///
    /// ```no_run
    /// # async fn f(backend: &sandbox_core::DynSandboxBackend, id: &sandbox_core::SandboxId) -> sandbox_core::Result<()> {
    /// use sandbox_core::{ExecRequest, SandboxBackendExt};
    /// let out = backend.exec_output(id, ExecRequest::new(["echo", "hi"])?).await?;
    /// assert_eq!(out.stdout_str(), "hi\n");
    /// # Ok(()) }
    /// ```
    async fn exec_output(&self, id: &SandboxId, request: ExecRequest) -> Result<ExecOutput> {
        self.exec(id, request).await?.output().await
    }

    /// The newest snapshot of a repository (any branch), if any.
    async fn latest_snapshot(&self, owner: &str, name: &str) -> Result<Option<Snapshot>> {
        let all = self
            .list_snapshots(SnapshotFilter::repo(owner, name))
            .await?;
        Ok(all.into_iter().max_by_key(|s| s.created_at))
    }
}

impl<T: SandboxBackend + ?Sized> SandboxBackendExt for T {}
