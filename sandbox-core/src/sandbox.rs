//! What backends return: [`Sandbox`], [`SandboxStatus`], [`Snapshot`], [`WarmStatus`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;
use crate::id::{SandboxId, SessionId, SnapshotId, TemplateKey};
use crate::spec::{RepoRef, SnapshotReason};

/// Why a sandbox ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TerminationReason {
    /// `terminate` was called.
    Requested,
    /// Its absolute timeout passed.
    Expired,
    /// Its idle timeout passed.
    Idle,
    /// It was stopped or removed outside this library.
    External,
    /// It failed (crashed, could not start).
    Failed,
}

impl fmt::Display for TerminationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TerminationReason::Requested => "requested",
            TerminationReason::Expired => "expired",
            TerminationReason::Idle => "idle",
            TerminationReason::External => "external",
            TerminationReason::Failed => "failed",
        })
    }
}

/// The state of a sandbox, as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SandboxStatus {
    /// Being created; not ready for exec yet.
    Starting,
    /// Ready: exec works.
    Running,
    /// Paused or suspended by the provider; resumes on use where the provider supports it.
    Paused,
    /// Being terminated.
    Stopping,
    /// Gone (a provider that forgets terminated sandboxes answers `NotFound` instead).
    Terminated {
        /// Why, when known.
        reason: Option<TerminationReason>,
    },
    /// Failed and not usable.
    Failed {
        /// What the provider said.
        message: String,
    },
}

impl SandboxStatus {
    /// True for `Starting`, `Running`, `Paused` (a sandbox that still holds resources).
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            SandboxStatus::Starting | SandboxStatus::Running | SandboxStatus::Paused
        )
    }

    /// True for `Terminated` and `Failed`.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            SandboxStatus::Terminated { .. } | SandboxStatus::Failed { .. }
        )
    }
}

/// Where a sandbox came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SandboxOrigin {
    /// Started for this request.
    Cold,
    /// Taken from a warm pool.
    WarmPool,
    /// Restored from a snapshot.
    Snapshot {
        /// The snapshot.
        snapshot_id: SnapshotId,
    },
}

/// A sandbox as the provider knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Sandbox {
    /// Its id.
    pub id: SandboxId,
    /// The backend that runs it.
    pub backend: BackendKind,
    /// The session it serves (`None` for an unclaimed warm-pool sandbox).
    pub session_id: Option<SessionId>,
    /// Its state.
    pub status: SandboxStatus,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// The warm-pool template it belongs or belonged to.
    pub template_key: Option<TemplateKey>,
    /// The image it runs, where the backend has images.
    pub image: Option<String>,
    /// Where it came from.
    pub origin: SandboxOrigin,
    /// When it was created.
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: SystemTime,
    /// When its absolute timeout ends it.
    #[serde(with = "crate::time::rfc3339::option")]
    pub expires_at: Option<SystemTime>,
    /// The provider's own id when it differs from [`Sandbox::id`] (a Docker container id, a
    /// Modal object id).
    pub provider_id: Option<String>,
}

impl Sandbox {
    /// A sandbox with the required fields; set the others on the returned value.
    pub fn new(
        id: SandboxId,
        backend: BackendKind,
        status: SandboxStatus,
        created_at: SystemTime,
    ) -> Self {
        Self {
            id,
            backend,
            session_id: None,
            status,
            labels: BTreeMap::new(),
            template_key: None,
            image: None,
            origin: SandboxOrigin::Cold,
            created_at,
            expires_at: None,
            provider_id: None,
        }
    }
}

/// A handle on a snapshot: what a control plane stores to restore later.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// The snapshot's id.
    pub id: SnapshotId,
}

impl From<&Snapshot> for SnapshotRef {
    fn from(s: &Snapshot) -> Self {
        SnapshotRef { id: s.id.clone() }
    }
}

impl From<SnapshotId> for SnapshotRef {
    fn from(id: SnapshotId) -> Self {
        SnapshotRef { id }
    }
}

/// A filesystem snapshot of a sandbox, with the labels to find it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// Its id.
    pub id: SnapshotId,
    /// The backend that holds it.
    pub backend: BackendKind,
    /// The sandbox it was taken of.
    pub source: Option<SandboxId>,
    /// The session that sandbox served.
    pub session_id: Option<SessionId>,
    /// Repository and branch.
    pub repo: Option<RepoRef>,
    /// Commit.
    pub sha: Option<String>,
    /// Why it was taken.
    pub reason: SnapshotReason,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// When it was taken.
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: SystemTime,
    /// Its size, when the provider says.
    pub size_bytes: Option<u64>,
}

impl Snapshot {
    /// A snapshot with the required fields; set the others on the returned value.
    pub fn new(id: SnapshotId, backend: BackendKind, created_at: SystemTime) -> Self {
        Self {
            id,
            backend,
            source: None,
            session_id: None,
            repo: None,
            sha: None,
            reason: SnapshotReason::Manual,
            labels: BTreeMap::new(),
            created_at,
            size_bytes: None,
        }
    }

    /// The handle to pass to `restore`.
    pub fn reference(&self) -> SnapshotRef {
        SnapshotRef::from(self)
    }
}

/// The state of a warm pool after `warm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WarmStatus {
    /// The pool.
    pub template_key: TemplateKey,
    /// The size asked for.
    pub target: u32,
    /// Sandboxes ready to be taken now.
    pub ready: u32,
    /// Sandboxes still starting.
    pub starting: u32,
}

impl WarmStatus {
    /// A status.
    pub fn new(template_key: TemplateKey, target: u32, ready: u32, starting: u32) -> Self {
        Self {
            template_key,
            target,
            ready,
            starting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sandbox_serializes_with_rfc3339_times() {
        let at = crate::time::from_unix_seconds(1_700_000_000);
        let mut sb = Sandbox::new(
            SandboxId::new("sbx-1").unwrap(),
            BackendKind::Local,
            SandboxStatus::Running,
            at,
        );
        sb.expires_at = Some(at + Duration::from_secs(60));
        let json = serde_json::to_value(&sb).unwrap();
        assert_eq!(json["created_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(json["expires_at"], "2023-11-14T22:14:20.000Z");
        assert_eq!(json["status"]["state"], "running");
        assert_eq!(json["backend"], "local");
        let back: Sandbox = serde_json::from_value(json).unwrap();
        assert_eq!(back, sb);
    }

    #[test]
    fn liveness() {
        assert!(SandboxStatus::Running.is_live());
        assert!(!SandboxStatus::Terminated { reason: None }.is_live());
        assert!(
            SandboxStatus::Failed {
                message: "x".into()
            }
            .is_terminal()
        );
    }
}
