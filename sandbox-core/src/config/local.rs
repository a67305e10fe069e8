//! Settings of the local backend (`[local]`, `SANDBOX_LOCAL_*`).

use std::path::PathBuf;

use serde::Deserialize;

use super::check;
use crate::error::Result;

/// Whether the local backend isolates commands with bubblewrap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationMode {
    /// Use bubblewrap when it works here; otherwise warn once and run commands as plain
    /// processes in the workspace.
    #[default]
    Auto,
    /// Fail (at connect) unless bubblewrap works here.
    Required,
    /// Never use bubblewrap (plain processes; for hosts where namespaces are unavailable).
    Disabled,
}

/// Settings of the local backend.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// Where workspaces and snapshots live (default: `<temp dir>/sandbox-local`).
    pub root_dir: Option<PathBuf>,
    /// Isolation with bubblewrap.
    pub isolation: IsolationMode,
    /// The `bwrap` binary (default: found on `PATH`).
    pub bwrap_path: Option<PathBuf>,
    /// How often the reaper looks for expired sandboxes, in milliseconds.
    pub reap_interval_ms: u64,
}

/// Default reaper period of the local backend.
pub const DEFAULT_LOCAL_REAP_INTERVAL_MS: u64 = 500;

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            root_dir: None,
            isolation: IsolationMode::Auto,
            bwrap_path: None,
            reap_interval_ms: DEFAULT_LOCAL_REAP_INTERVAL_MS,
        }
    }
}

impl LocalConfig {
    /// Checks the values; errors name the key (`local.reap_interval_ms`).
    pub fn validate(&self) -> Result<()> {
        check(
            "local.reap_interval_ms",
            (10..=3_600_000).contains(&self.reap_interval_ms),
            "must be between 10 and 3600000 milliseconds",
        )?;
        if let Some(root) = &self.root_dir {
            check(
                "local.root_dir",
                root.is_absolute(),
                "must be an absolute path",
            )?;
        }
        Ok(())
    }
}
