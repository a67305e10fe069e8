//! The local backend of the `sandbox` library: the embedded default, which needs nothing
//! installed.
//!
//! A sandbox is a private workspace directory plus its environment. Commands run isolated with
//! [bubblewrap](https://github.com/containers/bubblewrap) when it works on the host (new user,
//! pid, network, ipc, uts and cgroup namespaces; the workspace and a private `/tmp` bound
//! read-write; the host's programs and libraries read-only; the rest of the host absent; all
//! capabilities dropped). Without bubblewrap the backend warns once and runs commands as plain
//! processes (isolation is then process-level only, and `NetworkPolicy::None` cannot be
//! enforced, so its capabilities say so); `local.isolation = "required"` fails instead.
//!
//! Snapshots are tar archives of the workspace; warm pools are prepared workspaces; expiry
//! and idle timeouts are enforced by a reaper task and by every operation that touches an
//! expired sandbox. See [`LocalBackend`].

mod backend;
mod config;
mod error;
mod exec;
mod files;
mod isolation;
mod snapshot;
mod store;

pub use backend::LocalBackend;
pub use config::{DEFAULT_POOL_LIFETIME, PEER_CREATE_WAIT, READ_ONLY_HOST_PATHS, SANDBOX_PATH};
pub use files::FILE_MODE;
pub use isolation::IsolationKind;
pub use sandbox_core::config::{IsolationMode, LocalConfig};
