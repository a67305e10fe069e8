//! The metadata every backend writes on what it creates, so that `list`, `status`, the reaper
//! and orphan cleanup can find it again from the provider alone, with no state held in memory.
//!
//! Keys use the reserved prefix [`PREFIX`]; a user label with that prefix is rejected. Where a
//! provider's labels cannot hold a value (Kubernetes label values are at most 63 characters of
//! `[A-Za-z0-9._-]`), the backend stores it as an annotation under the same key.

/// The reserved prefix of the library's own labels.
pub const PREFIX: &str = "sandbox.rs/";
/// Marks a resource as made by this library. Value: [`MANAGED_BY_VALUE`].
pub const MANAGED_BY: &str = "sandbox.rs/managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "sandbox";
/// The sandbox id.
pub const SANDBOX_ID: &str = "sandbox.rs/sandbox-id";
/// The session id (absent on an unclaimed warm-pool sandbox).
pub const SESSION_ID: &str = "sandbox.rs/session-id";
/// The warm-pool template key.
pub const TEMPLATE: &str = "sandbox.rs/template";
/// `"true"` on a sandbox waiting in a warm pool, unclaimed.
pub const POOL: &str = "sandbox.rs/pool";
/// When the resource expires, in Unix seconds. The reaper removes it after that.
pub const EXPIRES_AT: &str = "sandbox.rs/expires-at";
/// When the resource was created, in Unix seconds.
pub const CREATED_AT: &str = "sandbox.rs/created-at";
/// The snapshot a sandbox was restored from, or the id of a snapshot.
pub const SNAPSHOT_ID: &str = "sandbox.rs/snapshot-id";
/// Repository owner (on snapshots and sandboxes).
pub const REPO_OWNER: &str = "sandbox.rs/repo-owner";
/// Repository name.
pub const REPO_NAME: &str = "sandbox.rs/repo-name";
/// Branch.
pub const REPO_BRANCH: &str = "sandbox.rs/repo-branch";
/// Commit the snapshot was taken at.
pub const REPO_SHA: &str = "sandbox.rs/repo-sha";
/// Why a snapshot was taken.
pub const SNAPSHOT_REASON: &str = "sandbox.rs/snapshot-reason";
/// Prefix under which user labels are stored where the provider shares one label namespace
/// with other tools (e.g. Docker): `sandbox.rs/label.<key>`.
pub const USER_LABEL_PREFIX: &str = "sandbox.rs/label.";

/// True when `key` is in the reserved namespace.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(PREFIX)
}
